"""Result assembly: per-image scores reduced to per-unit values (the same arithmetic for every path)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from autoprune.sensitivity.job import Scores
from autoprune.sensitivity.perturbation import Perturbation
from autoprune.sensitivity.result import Sensitivity, UnitSensitivity
from autoprune.sensitivity.units import Unit, bn_gamma_value


def assemble(
    header: dict,
    units: list[Unit],
    perturbation: Perturbation,
    scores: Scores,
    run: dict,
    start: float,
) -> Sensitivity:
    """The :class:`Sensitivity` of ``scores``; ``run`` holds ``images_available``, ``adaptive``
    and ``engine``, the JSON fields the run itself decides."""
    n_all = int(scores.seen0)
    return Sensitivity(
        **header,
        seeds=perturbation.seed_list(),
        sigmas=perturbation.sigma_list() if perturbation.method == "sbpf" else None,
        images=n_all,
        acc0=int(scores.correct0[:n_all].sum()) / n_all,
        loss0=float(scores.loss0[:n_all].astype(np.float64).sum()) / n_all,
        units=[_unit(i, u, scores, perturbation) for i, u in enumerate(units)],
        **run,
        seconds=time.perf_counter() - start,
    )


def _unit(i: int, u: Unit, scores: Scores, perturbation: Perturbation) -> UnitSensitivity:
    """Unit ``i``'s values over the images it used."""
    n = int(scores.seen[i])
    acc0 = int(scores.correct0[:n].sum()) / n
    loss0 = float(scores.loss0[:n].astype(np.float64).sum()) / n
    deltas, loss_deltas = [], []
    for vi in range(len(perturbation.variants())):
        deltas.append(acc0 - int(scores.correct[i, vi, :n].sum()) / n)
        loss_deltas.append(float(scores.loss[i, vi, :n].astype(np.float64).sum()) / n - loss0)
    per_seed, loss_per_seed, per_sigma = _by_seed(deltas, loss_deltas, perturbation)
    return _unit_result(
        u, per_seed, per_sigma, loss_delta=_mean(loss_per_seed), loss_per_seed=loss_per_seed, images=n
    )


def _unit_result(
    u: Unit, per_seed: list[float], per_sigma: dict[str, float] | None, **loss_fields: Any
) -> UnitSensitivity:
    """``u``'s value: the mean and spread of its per-seed values (``loss_fields``: loss and images)."""
    return UnitSensitivity(
        id=u.id,
        kind=u.kind,
        stage=u.stage,
        delta=_mean(per_seed),
        std=_std(per_seed),
        per_seed=per_seed,
        removable=u.removable,
        per_sigma=per_sigma,
        **loss_fields,
    )


def _by_seed(
    deltas: list[float], loss_deltas: list[float], perturbation: Perturbation
) -> tuple[list[float], list[float], dict[str, float] | None]:
    """Per-seed values (SBPF: the mean over sigmas of that seed's draws) and SBPF's per-sigma means."""
    if perturbation.method == "sr-init":
        return deltas, loss_deltas, None
    seeds, sigmas = perturbation.seed_list(), perturbation.sigma_list()
    k = len(sigmas)
    per_seed = [_mean(deltas[j * k : (j + 1) * k]) for j in range(len(seeds))]
    loss_per_seed = [_mean(loss_deltas[j * k : (j + 1) * k]) for j in range(len(seeds))]
    per_sigma = {
        repr(s): _mean([deltas[j * k + si] for j in range(len(seeds))]) for si, s in enumerate(sigmas)
    }
    return per_seed, loss_per_seed, per_sigma


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (0 for one value)."""
    if len(values) < 2:
        return 0.0
    m = _mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def assemble_bn_gamma(ref: nn.Module, units: list[Unit], header: dict, start: float) -> Sensitivity:
    """BN-gamma's :class:`Sensitivity`: mean |gamma| per unit, no data."""
    results = [_unit_result(u, [bn_gamma_value(ref, u)], None) for u in units]
    return Sensitivity(
        **header,
        seeds=[],
        images=0,
        acc0=None,
        loss0=None,
        units=results,
        engine={},
        seconds=time.perf_counter() - start,
    )


def assemble_scored(
    header: dict,
    units: list[Unit],
    perturbation: Perturbation,
    score0: float,
    drops: list[list[float]],
    engine: dict,
    start: float,
) -> Sensitivity:
    """The :class:`Sensitivity` of a user's ``score_fn``: ``drops[i][v]`` = score0 − score of unit
    ``i`` under variant ``v``; ``acc0`` holds score0, the loss fields and image counts are empty."""
    results = []
    for u, deltas in zip(units, drops, strict=True):
        per_seed, _, per_sigma = _by_seed(deltas, [0.0] * len(deltas), perturbation)
        results.append(_unit_result(u, per_seed, per_sigma))
    return Sensitivity(
        **header,
        seeds=perturbation.seed_list(),
        sigmas=perturbation.sigma_list() if perturbation.method == "sbpf" else None,
        images=0,
        acc0=score0,
        loss0=None,
        units=results,
        engine=engine,
        seconds=time.perf_counter() - start,
    )
