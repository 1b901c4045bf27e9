"""Project preferences onto a FLOPs / params budget: every candidate is feasible by construction.

Given per-group preferences p (see :mod:`autoprune.prior`), the keep ratios
r(α) grow monotonically with the global scale α, and so does the cost of the
rounded plan. Bisection (at most ``max_steps``) finds the largest α whose plan
is at or under every budget. Rounding leaves a gap (a step of 8 channels in a
wide group can be several percent of the FLOPs), which two moves close:

* fill: add one rounding step to the group the next α would grow first, while
  the plan stays under budget;
* exchange: when no single step fits and the plan is still more than
  ``TOLERANCE`` (0.5 %) under the binding budget, take the best "one step up in
  group i, one step down in group j" that fits, then fill again.

Both are vectorized over all candidate moves with the cost model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from autoprune.cost import CostModel
from autoprune.errors import AutopruneError
from autoprune.plan import Plan
from autoprune.prior import R_MIN, keep_ratios
from autoprune.space import PruningSpace

MAX_STEPS = 40
TOLERANCE = 0.005


@dataclass(frozen=True)
class Budget:
    """Budgets as fractions of the dense model (0 < x <= 1); ``None`` means unconstrained."""

    flops: float | None = None
    params: float | None = None

    def __post_init__(self) -> None:
        if self.flops is None and self.params is None:
            raise AutopruneError("give a budget: --flops and/or --params as a fraction of the dense model")
        for name, value in (("flops", self.flops), ("params", self.params)):
            if value is not None and not (isinstance(value, (int, float)) and 0 < value <= 1):
                raise AutopruneError(
                    f"--{name} must be a fraction of the dense model in (0, 1], got {value!r}"
                )

    def to_dict(self) -> dict[str, float | None]:
        return {"flops": self.flops, "params": self.params}


@dataclass(frozen=True)
class Projection:
    """The projected plan and where it landed."""

    plan: Plan
    alpha: float
    flops: int
    params: int
    flops_ratio: float
    params_ratio: float
    steps: int

    @property
    def channels(self) -> dict[str, int]:
        return self.plan.channels


def project_to_budget(
    space: PruningSpace,
    preferences: np.ndarray,
    *,
    flops: float | None = None,
    params: float | None = None,
    r_min: float = R_MIN,
    cost_model: CostModel | None = None,
    max_steps: int = MAX_STEPS,
) -> Projection:
    """The largest rounded plan along r(α) (then greedily filled) at or under every budget."""
    budget = Budget(flops, params)
    cost = cost_model or CostModel(space)
    prefs = np.asarray(preferences, dtype=np.float64)
    if prefs.shape != (len(space.groups),) or not np.all(np.isfinite(prefs)) or np.any(prefs <= 0):
        raise ValueError(f"preferences must be {len(space.groups)} positive finite numbers")
    limits = _limits(budget, cost)

    def channels_at(alpha: float) -> np.ndarray:
        return space.channels_from_ratios(keep_ratios(alpha, prefs, r_min)[None, :])[0]

    def fits(ch: np.ndarray) -> np.ndarray:
        return _fits(cost, ch, limits)

    lo, hi = 0.0, 1.0 / prefs.min()
    smallest = channels_at(lo)
    if not fits(smallest[None, :])[0]:
        raise AutopruneError(_too_small_message(budget, cost, smallest, r_min))
    steps = 0
    if not fits(channels_at(hi)[None, :])[0]:
        while steps < max_steps:
            steps += 1
            mid = 0.5 * (lo + hi)
            if fits(channels_at(mid)[None, :])[0]:
                lo = mid
            else:
                hi = mid
        channels = _close_gap(space, cost, channels_at(lo), keep_ratios(hi, prefs, r_min), limits)
    else:
        lo = hi
        channels = channels_at(hi)
    ratios = keep_ratios(lo, prefs, r_min)
    plan = space.plan_from_channels(channels, ratios=ratios)
    f, p = int(cost.flops(channels[None, :])[0]), int(cost.params(channels[None, :])[0])
    return Projection(plan, lo, f, p, f / cost.dense_flops, p / cost.dense_params, steps)


def _limits(budget: Budget, cost: CostModel) -> tuple[float, float]:
    flops = math.inf if budget.flops is None else budget.flops * cost.dense_flops
    params = math.inf if budget.params is None else budget.params * cost.dense_params
    return flops, params


def _fits(cost: CostModel, channels: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    ok = cost.flops(channels) <= limits[0]
    if math.isfinite(limits[1]):
        ok &= cost.params(channels) <= limits[1]
    return ok


def _fill(
    space: PruningSpace,
    cost: CostModel,
    channels: np.ndarray,
    target_ratios: np.ndarray,
    limits: tuple[float, float],
) -> np.ndarray:
    """Add one rounding step at a time to the group furthest below its next-α ratio, while it fits."""
    dense = space.max_counts
    steps = np.diag(np.array([g.step for g in space.groups], dtype=np.int64))
    while True:
        grown = np.minimum(channels[None, :] + steps, dense[None, :])
        ok = (grown.diagonal() > channels) & _fits(cost, grown, limits)
        if not ok.any():
            return channels
        deficit = target_ratios - channels / dense
        channels = grown[int(np.argmax(np.where(ok, deficit, -np.inf)))]


def _exchange(
    space: PruningSpace, cost: CostModel, channels: np.ndarray, limits: tuple[float, float]
) -> np.ndarray | None:
    """The fitting one-step-up/one-step-down move of highest cost, if it beats ``channels``."""
    n = len(channels)
    step = np.array([g.step for g in space.groups], dtype=np.int64)
    up = np.minimum(channels + step, space.max_counts)
    down = np.maximum(channels - step, space.min_counts)
    # a count may sit below a full width that is not a multiple of step: step down to the grid
    down = np.where(channels == space.max_counts, np.maximum(channels // step * step, space.min_counts), down)
    i, j = np.nonzero(~np.eye(n, dtype=bool))
    moves = np.repeat(channels[None, :], len(i), axis=0)
    moves[np.arange(len(i)), i] = up[i]
    moves[np.arange(len(i)), j] = down[j]
    changed = (up[i] != channels[i]) & (down[j] != channels[j])
    ok = changed & _fits(cost, moves, limits)
    if not ok.any():
        return None
    score = _binding_fraction(cost, moves, limits)
    best = int(np.argmax(np.where(ok, score, -np.inf)))
    current = _binding_fraction(cost, channels[None, :], limits)[0]
    return moves[best] if score[best] > current else None


def _binding_fraction(cost: CostModel, channels: np.ndarray, limits: tuple[float, float]) -> np.ndarray:
    """How close each plan is to its tightest budget (1.0 = exactly on it)."""
    fractions = [cost.flops(channels) / limits[0]] if math.isfinite(limits[0]) else []
    if math.isfinite(limits[1]):
        fractions.append(cost.params(channels) / limits[1])
    return np.max(fractions, axis=0)


def _close_gap(
    space: PruningSpace,
    cost: CostModel,
    channels: np.ndarray,
    target_ratios: np.ndarray,
    limits: tuple[float, float],
    max_exchanges: int = 20,
) -> np.ndarray:
    """Fill, then exchange and refill until within ``TOLERANCE`` of the binding budget (or stuck)."""
    channels = _fill(space, cost, channels, target_ratios, limits)
    for _ in range(max_exchanges):
        if _binding_fraction(cost, channels[None, :], limits)[0] >= 1.0 - TOLERANCE:
            break
        moved = _exchange(space, cost, channels, limits)
        if moved is None:
            break
        channels = _fill(space, cost, moved, target_ratios, limits)
    return channels


def _too_small_message(budget: Budget, cost: CostModel, smallest: np.ndarray, r_min: float) -> str:
    f = cost.flops(smallest[None, :])[0] / cost.dense_flops
    p = cost.params(smallest[None, :])[0] / cost.dense_params
    parts = []
    if budget.flops is not None and f > budget.flops:
        parts.append(f"--flops {budget.flops:g} is below the smallest achievable {f:.4f}")
    if budget.params is not None and p > budget.params:
        parts.append(f"--params {budget.params:g} is below the smallest achievable {p:.4f}")
    return "; ".join(parts) + f" (every group at keep ratio {r_min:g}); raise the budget"
