"""Fit a latency table to whole networks: a scale per layer kind and a remainder, from pruned
networks timed end to end.

Layers timed one at a time do not add up to the network they come from: in the network the
ops between layers (residual adds, pooling, layout changes) shrink with the widths too, caches
and the memory allocator behave differently (glibc returns large activation buffers to the OS,
and each call then page-faults them anew), and each kind of kernel is affected in its own way.
On mobilenetv2 at batch 32 the plain sum of isolated layers mispredicted random plans by ~20 %
(``benchmarks/RESULTS.md``, Latency).

:func:`fit_table` times the dense network and :data:`FIT_PLANS` pruned ones (uniform keep ratios
and seeded random ones, on the space's rounding) in turn, with the table's device, threads and
batch size, then solves

    measured_ms(plan) ≈ remainder + Σ_kind scale_kind · layers_kind(plan)

for non-negative ``remainder`` and ``scale`` (least squares, weakly anchored at the unfitted
table so that what the plans do not determine stays as measured per layer), where
``layers_kind`` is the table's interpolated time of the plan's layers of that kind.
Non-negative scales keep the prediction monotone in every width, which the budget projection
relies on. Kinds with under
:data:`MIN_SHARE` of the dense network's layer time keep the table's ``layer_scale`` (too
little signal to fit).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from autoprune.errors import AutopruneError
from autoprune.latency.measure import ROUNDS, Runner
from autoprune.latency.model import LatencyModel
from autoprune.latency.table import KINDS, LatencyFit, LatencyTable
from autoprune.space import PruningSpace
from autoprune.surgery import apply_plan

FIT_PLANS = 8
"""Pruned networks timed for the fit, besides the dense one: half uniform, half random."""
FIT_ROUNDS_FACTOR = 2
MIN_SHARE = 0.05
R_LOW = 0.25
ANCHOR = 1e-4
"""Weight of the unfitted table (scale ``layer_scale``, its remainder) in the fit, relative to
a column's squared norm over the plans."""


def nonnegative_least_squares(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin ||a x - b|| subject to x >= 0, exactly, by trying every set of free variables
    (a handful of columns here: at most 2^5 small least-squares solves)."""
    n = a.shape[1]
    best, best_res = np.zeros(n), float(np.sum(b**2))
    for k in range(1, n + 1):
        for cols in itertools.combinations(range(n), k):
            x_free, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
            if np.any(x_free < 0):
                continue
            res = float(np.sum((a[:, cols] @ x_free - b) ** 2))
            if res < best_res - 1e-12:
                best, best_res = np.zeros(n), res
                best[list(cols)] = x_free
    return best


def _anchored_fit(a: np.ndarray, b: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Non-negative least squares of ``a x = b``, pulled weakly (:data:`ANCHOR`, relative to each
    column's weight) towards ``prior``: a direction the plans do not determine (a kind whose
    time barely changes between them looks like the remainder) keeps the unfitted value."""
    weight = np.sqrt(ANCHOR * np.maximum(np.sum(a**2, axis=0), 1e-12))
    return nonnegative_least_squares(np.vstack([a, np.diag(weight)]), np.concatenate([b, weight * prior]))


def fit_plans(space: PruningSpace, plans: int = FIT_PLANS, seed: int = 0) -> np.ndarray:
    """Channel counts (n, n_groups) of the dense plan, ``plans // 2`` uniform keep ratios in
    [R_LOW, 1) and random per-group ratios for the rest (seeded); duplicates dropped."""
    g = len(space.groups)
    uniform = np.linspace(R_LOW, 1.0, plans // 2 + 1, endpoint=False)[1:, None] * np.ones((1, g))
    rng = np.random.default_rng(seed)
    ratios = np.vstack([np.ones((1, g)), uniform, rng.uniform(R_LOW, 1.0, (plans - plans // 2, g))])
    channels = space.channels_from_ratios(ratios)
    _, first = np.unique(channels, axis=0, return_index=True)
    return channels[np.sort(first)]


def fit_table(
    table: LatencyTable,
    model: nn.Module,
    space: PruningSpace,
    *,
    plans: int = FIT_PLANS,
    rounds: int = ROUNDS,
    seed: int = 0,
) -> LatencyTable:
    """``table`` with a whole-network fit (module docstring) measured on ``model`` pruned by plans
    of ``space`` (the space the search will use, with its rounding)."""
    if plans < 2:
        raise AutopruneError(f"a latency fit needs at least 2 plans, got {plans}")
    unfitted = replace(table, fit=None)
    channels = fit_plans(space, plans, seed)
    per_kind = LatencyModel(space, unfitted).kind_ms(channels)
    measured = _time_plans(table, model, space, channels, rounds)
    share = per_kind[0] / max(per_kind[0].sum(), 1e-12)
    free = [i for i, s in enumerate(share) if s >= MIN_SHARE]
    fixed = table.layer_scale * per_kind[:, [i for i in range(len(KINDS)) if i not in free]].sum(axis=1)
    a = np.hstack([per_kind[:, free], np.ones((len(channels), 1))])
    prior = np.array([table.layer_scale] * len(free) + [table.remainder_ms])
    coef = _anchored_fit(a, measured - fixed, prior)
    scale = {k: table.layer_scale for k in KINDS}
    scale.update({KINDS[i]: float(c) for i, c in zip(free, coef[:-1], strict=True)})
    trial = LatencyFit(scale, float(coef[-1]), len(channels))
    before = LatencyModel(space, unfitted).latency_ms(channels)
    after = LatencyModel(space, replace(table, fit=trial)).latency_ms(channels)
    fit = replace(
        trial,
        measured_ms=tuple(float(m) for m in measured),
        error_before=float(np.median(np.abs(before - measured) / measured)),
        error_after=float(np.median(np.abs(after - measured) / measured)),
    )
    return replace(table, fit=fit)


def _time_plans(
    table: LatencyTable, model: nn.Module, space: PruningSpace, channels: np.ndarray, rounds: int
) -> np.ndarray:
    """Whole-network ms of each plan, timed in turn with the table's device, threads, batch."""
    device = torch.device(table.device)
    runner = Runner(device, table.batch_size, rounds, table.runtime)
    dense = copy.deepcopy(model).cpu().eval()
    nets = [apply_plan(dense, space.plan_from_channels(c), space=space).model for c in channels]
    previous = torch.get_num_threads()
    torch.set_num_threads(table.threads)
    try:
        cases = [runner.whole(net, table.input_size) for net in nets]
        return np.array(runner.time(cases, FIT_ROUNDS_FACTOR))
    finally:
        torch.set_num_threads(previous)
