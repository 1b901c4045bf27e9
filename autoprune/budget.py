"""Project preferences onto a FLOPs / params / latency budget: every candidate is feasible by construction.

Given per-group preferences p (see :mod:`autoprune.prior`), the keep ratios
r(α) grow monotonically with the global scale α, and so does the cost of the
rounded plan. Bisection (at most ``max_steps``) finds the largest α whose plan
is at or under every budget; the bisection stops once the plans at both ends
differ in a single group, the resolution of the rounding. If that group is
coarse, keeping it at its larger count and bisecting the others below it is
tried as well (repeatedly, up to ``MAX_FIXED`` groups). Rounding still leaves a gap (a step of 8 channels in a
wide group can be several percent of the FLOPs), which two moves close:

* fill: add one rounding step to the group the next α would grow first, while
  the plan stays under budget;
* neighbours: when no single step fits and the plan is still more than
  ``TOLERANCE`` (0.5 %) under the binding budget, move to the best fitting plan a
  few steps away (every "one up in i, k down in j" pair, plus seeded random
  three-group moves), then fill again.

Both are vectorized over all candidate moves with the cost model, and seeded, so
the same preferences always give the same plan.

A latency budget works the same way: the latency a :class:`autoprune.latency.LatencyModel`
predicts from a latency table is monotone in every width (the table is monotone by
construction), so the bisection, fill and neighbour moves apply unchanged, and every
projected plan's predicted latency is at or under ``latency`` × the dense model's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from autoprune.cost import CostModel
from autoprune.errors import AutopruneError
from autoprune.latency import LatencyModel
from autoprune.plan import Plan
from autoprune.prior import R_MIN, keep_ratios
from autoprune.space import PruningSpace

MAX_STEPS = 40
TOLERANCE = 0.005
MAX_TRIPLE_MOVES = 20_000
PATIENCE = 3
MAX_ROUNDS = 6
MAX_FIXED = 4


@dataclass(frozen=True)
class Budget:
    """Budgets as fractions of the dense model (0 < x <= 1); ``None`` means unconstrained."""

    flops: float | None = None
    params: float | None = None
    latency: float | None = None
    """Of the dense model's latency measured on the target device (a latency table's)."""

    def __post_init__(self) -> None:
        if self.flops is None and self.params is None and self.latency is None:
            raise AutopruneError(
                "give a budget: --flops, --params and/or --latency as a fraction of the dense model"
            )
        for name, value in (("flops", self.flops), ("params", self.params), ("latency", self.latency)):
            if value is not None and not (isinstance(value, (int, float)) and 0 < value <= 1):
                raise AutopruneError(
                    f"--{name} must be a fraction of the dense model in (0, 1], got {value!r}"
                )

    def to_dict(self) -> dict[str, float | None]:
        out = {"flops": self.flops, "params": self.params}
        if self.latency is not None:  # older studies stored two keys; keep their budgets equal
            out["latency"] = self.latency
        return out


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
    latency_ms: float | None = None
    latency_ratio: float | None = None

    @property
    def channels(self) -> dict[str, int]:
        return self.plan.channels


def plan_cost(space: PruningSpace, plan: Plan, cost_model: CostModel | None = None) -> tuple[int, int]:
    """(FLOPs, params) of the pruned model ``plan`` describes, its removed blocks included."""
    space.check_plan(plan)
    cost = cost_model or CostModel(space)
    removed = space.removed_vector(plan) if plan.removed_blocks else None
    flops, params = cost.cost(space.channels_vector(plan), removed)
    return int(flops[0]), int(params[0])


def project_to_budget(
    space: PruningSpace,
    preferences: np.ndarray,
    *,
    flops: float | None = None,
    params: float | None = None,
    r_min: float = R_MIN,
    cost_model: CostModel | None = None,
    max_steps: int = MAX_STEPS,
    latency: float | None = None,
    latency_model: LatencyModel | None = None,
) -> Projection:
    """The largest rounded plan along r(α) at or under every budget, with its rounding gap closed.

    ``latency`` (a fraction of the dense model's) needs ``latency_model``, the space's
    :class:`~autoprune.latency.LatencyModel`; its predicted latency is then also recorded.
    """
    budget = Budget(flops, params, latency)
    if latency is not None and latency_model is None:
        raise AutopruneError("a latency budget needs a latency table (autoprune latency-table)")
    cost = cost_model or CostModel(space)
    cost.latency_model = latency_model
    prefs = _preferences(space, preferences)
    limits = _Limits.of(budget, cost)

    def channels_at(alpha: float, fixed: dict[int, int] | None = None) -> np.ndarray:
        channels = space.channels_from_ratios(keep_ratios(alpha, prefs, r_min)[None, :])[0]
        for g, n in (fixed or {}).items():
            channels[g] = n
        return channels

    smallest = channels_at(0.0)
    if not limits.fits(smallest[None, :])[0]:
        raise AutopruneError(_too_small_message(budget, cost, smallest, r_min))
    top = 1.0 / prefs.min()
    if limits.fits(channels_at(top)[None, :])[0]:
        return _projection(space, cost, channels_at(top), keep_ratios(top, prefs, r_min), top, 0)
    fixed: dict[int, int] = {}

    def at(alpha: float) -> np.ndarray:
        return channels_at(alpha, fixed)

    lo, hi, steps = _bisect(at, limits, 0.0, top, max_steps)
    alpha, target = lo, keep_ratios(hi, prefs, r_min)
    candidates = [_fill(space, limits, at(lo), target)]
    # The last step of α may move one coarse group by a lot (a residual stream): also try keeping
    # that group at its larger count and bisecting the others below it, a few levels deep.
    for _ in range(MAX_FIXED):
        jump = np.flatnonzero(at(lo) != at(hi))
        if len(jump) != 1 or steps >= max_steps:
            break
        fixed[int(jump[0])] = int(at(hi)[jump[0]])
        if not limits.fits(at(0.0)[None, :])[0]:
            break
        lo, hi, used = _bisect(at, limits, 0.0, hi, max_steps - steps)
        steps += used
        candidates.append(_fill(space, limits, at(lo), target))
    closeness = [limits.binding_fraction(c[None, :])[0] for c in candidates]
    channels = _close_gap(space, limits, candidates[int(np.argmax(closeness))], target)
    return _projection(space, cost, channels, keep_ratios(alpha, prefs, r_min), alpha, steps)


def _preferences(space: PruningSpace, preferences: np.ndarray) -> np.ndarray:
    prefs = np.asarray(preferences, dtype=np.float64)
    if prefs.shape != (len(space.groups),) or not np.all(np.isfinite(prefs)) or np.any(prefs <= 0):
        raise ValueError(f"preferences must be {len(space.groups)} positive finite numbers")
    return prefs


def _bisect(
    channels_at: Callable[[float], np.ndarray], limits: _Limits, lo: float, hi: float, max_steps: int
) -> tuple[float, float, int]:
    """Shrink [lo, hi] (lo fits, hi does not) until the two plans differ in one group at most."""
    steps = 0
    while steps < max_steps and np.count_nonzero(channels_at(lo) != channels_at(hi)) > 1:
        steps += 1
        mid = 0.5 * (lo + hi)
        if limits.fits(channels_at(mid)[None, :])[0]:
            lo = mid
        else:
            hi = mid
    return lo, hi, steps


def _projection(
    space: PruningSpace, cost: CostModel, channels: np.ndarray, ratios: np.ndarray, alpha: float, steps: int
) -> Projection:
    plan = space.plan_from_channels(channels, ratios=ratios)
    f, p = int(cost.flops(channels[None, :])[0]), int(cost.params(channels[None, :])[0])
    lat = getattr(cost, "latency_model", None)
    ms = None if lat is None else float(lat.latency_ms(channels[None, :])[0])
    return Projection(
        plan,
        alpha,
        f,
        p,
        f / cost.dense_flops,
        p / cost.dense_params,
        steps,
        ms,
        None if lat is None else ms / lat.dense_ms,
    )


@dataclass(frozen=True)
class _Limits:
    """A budget in absolute units: MACs, params, predicted ms (inf when unconstrained), and the
    cost model that measures plans against it."""

    cost: CostModel
    flops: float
    params: float
    latency: float

    @classmethod
    def of(cls, budget: Budget, cost: CostModel) -> _Limits:
        flops = math.inf if budget.flops is None else budget.flops * cost.dense_flops
        params = math.inf if budget.params is None else budget.params * cost.dense_params
        lat = getattr(cost, "latency_model", None)
        latency = math.inf if budget.latency is None or lat is None else budget.latency * lat.dense_ms
        return cls(cost, flops, params, latency)

    def fits(self, channels: np.ndarray) -> np.ndarray:
        """Which plans (rows of ``channels``) are at or under every limit."""
        ok = self.cost.flops(channels) <= self.flops
        if math.isfinite(self.params):
            ok &= self.cost.params(channels) <= self.params
        if math.isfinite(self.latency):
            ok &= self.cost.latency_model.latency_ms(channels) <= self.latency
        return ok

    def binding_fraction(self, channels: np.ndarray) -> np.ndarray:
        """How close each plan is to its tightest budget (1.0 = exactly on it)."""
        fractions = [self.cost.flops(channels) / self.flops] if math.isfinite(self.flops) else []
        if math.isfinite(self.params):
            fractions.append(self.cost.params(channels) / self.params)
        if math.isfinite(self.latency):
            fractions.append(self.cost.latency_model.latency_ms(channels) / self.latency)
        return np.max(fractions, axis=0)


def _fill(
    space: PruningSpace, limits: _Limits, channels: np.ndarray, target_ratios: np.ndarray
) -> np.ndarray:
    """Add one rounding step at a time to the group furthest below its next-α ratio, while it fits."""
    dense = space.max_counts
    steps = np.diag(np.array([g.step for g in space.groups], dtype=np.int64))
    while True:
        grown = np.minimum(channels[None, :] + steps, dense[None, :])
        ok = (grown.diagonal() > channels) & limits.fits(grown)
        if not ok.any():
            return channels
        deficit = target_ratios - channels / dense
        channels = grown[int(np.argmax(np.where(ok, deficit, -np.inf)))]


def _neighbours(space: PruningSpace, channels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Plans a few rounding steps away: "one step up in i, k <= 8 down in j" and "k up in i, one
    down in j" for every pair, and
    moves of up to ±4 steps in three groups at once (all of them for small spaces, a seeded
    sample otherwise): the cost lattice of a small net often needs three groups to move together
    to land close to a budget."""
    n = len(channels)
    step = np.array([g.step for g in space.groups], dtype=np.int64)
    i, j = np.nonzero(~np.eye(n, dtype=bool))
    k = np.array([1, 2, 4, 8])
    pair_i, pair_j, pair_k = np.repeat(i, len(k)), np.repeat(j, len(k)), np.tile(k, len(i))
    rows = np.arange(len(pair_i))
    few_up_many_down = np.zeros((len(pair_i), n), dtype=np.int64)
    few_up_many_down[rows, pair_i] = 1
    few_up_many_down[rows, pair_j] = -pair_k
    many_up_few_down = np.zeros((len(pair_i), n), dtype=np.int64)
    many_up_few_down[rows, pair_i] = pair_k
    many_up_few_down[rows, pair_j] = -1
    pairs = np.concatenate([few_up_many_down, many_up_few_down])
    deltas = np.concatenate([pairs, _triple_moves(n, rng)])
    grid_top = -(-channels // step) * step  # a full width off the step grid counts as on it
    base = np.where(deltas < 0, grid_top, channels)
    return np.clip(base + deltas * step, space.min_counts, space.max_counts)


def _triple_moves(n: int, rng: np.random.Generator) -> np.ndarray:
    """Step deltas in [-4, 4] for three groups: every combination when few, else a sample."""
    values = np.arange(-4, 5)
    if n < 3:
        return np.zeros((0, n), dtype=np.int64)
    triples = np.array(list(itertools.combinations(range(n), 3)))
    combos = np.array(list(itertools.product(values, repeat=3)))
    if len(triples) * len(combos) > MAX_TRIPLE_MOVES:
        triples = triples[rng.integers(0, len(triples), MAX_TRIPLE_MOVES)]
        chosen = combos[rng.integers(0, len(combos), MAX_TRIPLE_MOVES)]
    else:
        triples, chosen = np.repeat(triples, len(combos), axis=0), np.tile(combos, (len(triples), 1))
    moves = np.zeros((len(triples), n), dtype=np.int64)
    np.put_along_axis(moves, triples, chosen, axis=1)
    return moves


def _close_gap(
    space: PruningSpace, limits: _Limits, channels: np.ndarray, target_ratios: np.ndarray
) -> np.ndarray:
    """Move to the best fitting neighbour and refill until within ``TOLERANCE``
    of the binding budget, until ``PATIENCE`` rounds bring nothing better, or ``MAX_ROUNDS``."""
    rng = np.random.default_rng(0)  # deterministic: the same preferences give the same plan
    current = limits.binding_fraction(channels[None, :])[0]
    idle = rounds = 0
    while current < 1.0 - TOLERANCE and idle < PATIENCE and rounds < MAX_ROUNDS:
        rounds += 1
        moves = _neighbours(space, channels, rng)
        ok = limits.fits(moves)
        score = np.where(ok, limits.binding_fraction(moves), -np.inf)
        best = int(np.argmax(score))
        if score[best] <= current:
            idle += 1
            continue
        channels = _fill(space, limits, moves[best], target_ratios)
        current, idle = limits.binding_fraction(channels[None, :])[0], 0
    return channels


def _too_small_message(budget: Budget, cost: CostModel, smallest: np.ndarray, r_min: float) -> str:
    f = cost.flops(smallest[None, :])[0] / cost.dense_flops
    p = cost.params(smallest[None, :])[0] / cost.dense_params
    parts = []
    if budget.flops is not None and f > budget.flops:
        parts.append(f"--flops {budget.flops:g} is below the smallest achievable {f:.4f}")
    if budget.params is not None and p > budget.params:
        parts.append(f"--params {budget.params:g} is below the smallest achievable {p:.4f}")
    lat = getattr(cost, "latency_model", None)
    if budget.latency is not None and lat is not None:
        t = lat.ratio(smallest[None, :])[0]
        if t > budget.latency:
            parts.append(f"--latency {budget.latency:g} is below the smallest achievable {t:.4f} (predicted)")
    return "; ".join(parts) + f" (every group at keep ratio {r_min:g}); raise the budget"
