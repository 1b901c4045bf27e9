"""The pruning space of one model at one input size: channel groups, blocks, bounds.

A **group** is a set of (module, dim) places whose channels are removed together
(see :mod:`autoprune.graph` for how they are found). A plan says how many
channels each group keeps; :meth:`PruningSpace.plan` turns keep ratios into such
counts with the group's rounding rules:

* ``round_to``: counts are multiples of it (default 16 for groups of >= 32
  channels, else 1), except that a group may always keep all its channels;
* ``min_channels``: the smallest count (default 1);
* ``divisor``: grouped convs (ResNeXt, RegNet) keep the same number of channels
  in each conv group, so counts are multiples of the number of conv groups (and
  ``round_to`` does not apply: the conv groups set the granularity).

Groups are listed in graph order of their first producer (the id is that
producer's qualified name) and carry the index of their resolution ``stage``
(0 = highest resolution).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from autoprune.errors import AutopruneError
from autoprune.graph import Analysis, Layer, Layout, analyze
from autoprune.plan import Plan

DEFAULT_ROUND_TO = 16
ROUND_FROM_CHANNELS = 32


@dataclass(frozen=True)
class Group:
    """One channel group: ``channels`` indices shared by every (module, dim) in ``members``."""

    id: str
    channels: int
    members: tuple[tuple[str, str], ...]
    stage: int
    round_to: int = 1
    min_channels: int = 1
    divisor: int = 1

    @property
    def step(self) -> int:
        """Counts below ``channels`` are multiples of this: ``round_to``, or for grouped convs
        the number of conv groups (which already sets the granularity)."""
        return self.divisor if self.divisor > 1 else self.round_to

    @property
    def min_keep(self) -> int:
        """The smallest count a plan may give this group."""
        lo = max(self.min_channels, 1)
        lo = -(-lo // self.step) * self.step
        return min(lo, self.channels)

    def round(self, ratio: float) -> int:
        """Keep ratio -> channel count (nearest multiple of ``step``, clipped to the bounds)."""
        if ratio >= 1.0:
            return self.channels
        n = self.step * math.floor(ratio * self.channels / self.step + 0.5)
        return int(min(max(n, self.min_keep), self.channels))

    def check(self, n: int) -> str | None:
        """Why ``n`` is not a valid count for this group (None if it is)."""
        lo = max(self.min_channels, self.divisor)
        if not lo <= n <= self.channels:
            return f"{n} channels is out of range [{lo}, {self.channels}]"
        if n % self.divisor:
            return f"{n} channels is not a multiple of {self.divisor} (its grouped convs need equal groups)"
        return None


@dataclass(frozen=True)
class Block:
    """A module holding one residual branch and its sum (depth-pruning unit).

    ``removable``: its input and output shapes are equal, so a plan may replace it
    by identity (``Plan.removed_blocks``). That equals the original network with
    the branch output made zero (``branch_end``'s weights zeroed) as long as what
    follows the sum inside the block is idempotent on the block input (a ReLU
    after a ReLU, or nothing).
    """

    name: str
    stage: int
    removable: bool
    branch_end: str | None = None


@dataclass(frozen=True)
class ResolvedLayer:
    """A layer of the analysis with its dims as (group index or -1 for fixed, size, mult) segments."""

    layer: Layer
    out: tuple[tuple[int, int, int], ...] | None
    inp: tuple[tuple[int, int, int], ...] | None


@dataclass
class PruningSpace:
    """Channel groups and blocks of a model; see the module docstring. Build with :meth:`from_model`."""

    groups: list[Group]
    blocks: list[Block]
    frozen: dict[str, str]
    arch: str | None
    input_size: int | list[int] | None
    num_classes: int | None
    layers: dict[str, ResolvedLayer] = field(repr=False)
    param_info: list[tuple[str, str, str, tuple[int, ...]]] = field(repr=False)
    extra_macs: list[tuple[str, int]] = field(repr=False)
    input_shape: tuple[int, ...] = ()

    # -- construction ----------------------------------------------------------

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
        *,
        arch: str | None = None,
        num_classes: int | None = None,
        round_to: int | Mapping[str, int] | None = None,
        min_channels: int = 1,
    ) -> PruningSpace:
        """Trace ``model`` on ``example_inputs`` (a batch, e.g. ``torch.randn(1, 3, 32, 32)``).

        ``round_to``: None for the default rule, an int for every group, or a mapping
        group id -> int (missing ids use the default). ``arch``/``num_classes`` are
        recorded in plans (``num_classes`` defaults to the output width).
        """
        if min_channels < 1:
            raise AutopruneError(f"min_channels must be >= 1, got {min_channels}")
        analysis = analyze(model, example_inputs)
        return _build_space(analysis, model, arch, num_classes, round_to, min_channels)

    # -- groups ----------------------------------------------------------------

    @property
    def group_ids(self) -> list[str]:
        return [g.id for g in self.groups]

    def group(self, group_id: str) -> Group:
        try:
            return self.groups[self.group_index[group_id]]
        except KeyError:
            raise AutopruneError(f"no channel group {group_id!r} in this model") from None

    @property
    def group_index(self) -> dict[str, int]:
        idx = self.__dict__.get("_group_index")
        if idx is None:
            idx = self.__dict__["_group_index"] = {g.id: i for i, g in enumerate(self.groups)}
        return idx

    @property
    def max_counts(self) -> np.ndarray:
        """Full channel count per group (int64, group order)."""
        return np.array([g.channels for g in self.groups], dtype=np.int64)

    @property
    def min_counts(self) -> np.ndarray:
        """Smallest allowed count per group (int64, group order)."""
        return np.array([g.min_keep for g in self.groups], dtype=np.int64)

    @property
    def n_stages(self) -> int:
        return 1 + max((g.stage for g in self.groups), default=-1)

    @property
    def removable_blocks(self) -> list[Block]:
        return [b for b in self.blocks if b.removable]

    # -- plans -----------------------------------------------------------------

    def channels_from_ratios(self, ratios: np.ndarray) -> np.ndarray:
        """Vectorized :meth:`Group.round`: keep ratios (..., n_groups) -> counts (int64)."""
        r = np.asarray(ratios, dtype=np.float64)
        c = self.max_counts.astype(np.float64)
        step = np.array([g.step for g in self.groups], dtype=np.float64)
        n = step * np.floor(r * c / step + 0.5)
        n = np.clip(n, self.min_counts, c)
        n = np.where(r >= 1.0, c, n)
        return n.astype(np.int64)

    def uniform(self, keep: float, *, removed_blocks: Sequence[str] = ()) -> Plan:
        """Every group keeps (about) ``keep`` of its channels."""
        return self.plan([float(keep)] * len(self.groups), removed_blocks=removed_blocks)

    def plan(
        self, ratios: Mapping[str, float] | Sequence[float], *, removed_blocks: Sequence[str] = ()
    ) -> Plan:
        """Keep ratios per group (a mapping by id, missing ids keep 1.0, or a sequence in group order)."""
        if isinstance(ratios, Mapping):
            unknown = sorted(set(ratios) - set(self.group_index))
            if unknown:
                raise AutopruneError(f"unknown channel groups {_few(unknown)}; valid ids: space.group_ids")
            values = [float(ratios.get(g.id, 1.0)) for g in self.groups]
        else:
            values = [float(r) for r in ratios]
            if len(values) != len(self.groups):
                raise AutopruneError(
                    f"expected {len(self.groups)} keep ratios (one per group), got {len(values)}"
                )
        bad = [v for v in values if not 0.0 < v <= 1.0 or math.isnan(v)]
        if bad:
            raise AutopruneError(f"keep ratios must be in (0, 1], got {bad[0]}")
        counts = self.channels_from_ratios(np.array(values))
        return self.plan_from_channels(counts, ratios=values, removed_blocks=removed_blocks)

    def plan_from_channels(
        self,
        counts: Sequence[int] | np.ndarray,
        *,
        ratios: Sequence[float] | None = None,
        removed_blocks: Sequence[str] = (),
    ) -> Plan:
        """A plan from counts in group order (e.g. a row of a search's channel array)."""
        plan = Plan(
            channels={g.id: int(n) for g, n in zip(self.groups, counts, strict=True)},
            ratios=None
            if ratios is None
            else {g.id: float(r) for g, r in zip(self.groups, ratios, strict=False)},
            arch=self.arch,
            input_size=self.input_size,
            num_classes=self.num_classes,
            removed_blocks=list(removed_blocks),
        )
        self.check_plan(plan)
        return plan

    def check_plan(self, plan: Plan) -> None:
        """Raise AutopruneError unless ``plan`` fits this space (arch, input size, groups, counts)."""
        self._check_plan_model(plan)
        unknown = sorted(set(plan.channels) - set(self.group_index))
        if unknown:
            raise AutopruneError(
                f"the plan names channel groups this model does not have: {_few(unknown)} "
                f"(was it made for another architecture? this model has {len(self.groups)} groups)"
            )
        for gid, n in plan.channels.items():
            why = self.group(gid).check(n)
            if why:
                raise AutopruneError(f"group {gid!r}: {why}")
        names = {b.name: b for b in self.blocks}
        for b in plan.removed_blocks:
            if b not in names:
                raise AutopruneError(f"removed block {b!r} is not a residual block of this model")
            if not names[b].removable:
                raise AutopruneError(f"block {b!r} changes the tensor shape and cannot be removed")

    def _check_plan_model(self, plan: Plan) -> None:
        """The plan's arch, input size and classes (where both sides know them) match this space."""
        if plan.arch is not None and self.arch is not None and plan.arch != self.arch:
            raise AutopruneError(f"the plan is for {plan.arch!r}, but the model is {self.arch!r}")
        if plan.input_size is not None and self.input_size is not None and plan.input_size != self.input_size:
            raise AutopruneError(
                f"the plan was made for input size {plan.input_size}, the model is traced at "
                f"{self.input_size}; FLOPs and stages depend on it, so search again at this size"
            )
        if (
            plan.num_classes is not None
            and self.num_classes is not None
            and plan.num_classes != self.num_classes
        ):
            raise AutopruneError(
                f"the plan is for {plan.num_classes} classes, the model has {self.num_classes}"
            )

    def channels_vector(self, plan: Plan) -> np.ndarray:
        """The plan's counts in group order (groups it omits keep all channels)."""
        return np.array([plan.channels.get(g.id, g.channels) for g in self.groups], dtype=np.int64)

    def removed_vector(self, plan: Plan) -> np.ndarray:
        """Boolean mask over ``space.blocks`` of the plan's removed blocks."""
        removed = set(plan.removed_blocks)
        return np.array([b.name in removed for b in self.blocks], dtype=bool)

    def describe(self) -> str:
        """A short multi-line summary (groups, frozen modules) for humans."""
        lines = [f"{len(self.groups)} channel groups, {len(self.blocks)} residual blocks"]
        for g in self.groups:
            lines.append(f"  {g.id}: {g.channels} ch, stage {g.stage}, {len(g.members)} members")
        for name, why in self.frozen.items():
            lines.append(f"  frozen {name}: {why}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------- build


def _few(items: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def _infer_input_size(shape: tuple[int, ...]) -> int | list[int] | None:
    spatial = list(shape[2:])
    if not spatial:
        return None
    if len(spatial) == 2 and spatial[0] == spatial[1]:
        return int(spatial[0])
    return [int(s) for s in spatial]


def _infer_num_classes(model: nn.Module, analysis: Analysis) -> int | None:
    last = [r for r in analysis.layers.values() if r.kind in ("linear", "conv")]
    if not last:
        return None
    layer = max(last, key=lambda r: r.order)
    mod = model.get_submodule(layer.name)
    return int(getattr(mod, "out_features", getattr(mod, "out_channels", 0))) or None


def _stage_of(ctx: int, stage_ctx: list[int]) -> int:
    return sum(1 for c in stage_ctx if c > ctx)


def _round_to_for(gid: str, channels: int, round_to: int | Mapping[str, int] | None) -> int:
    if isinstance(round_to, Mapping) and gid in round_to:
        return int(round_to[gid])
    if isinstance(round_to, int):
        return int(round_to)
    return DEFAULT_ROUND_TO if channels >= ROUND_FROM_CHANNELS else 1


def _build_space(
    analysis: Analysis,
    model: nn.Module,
    arch: str | None,
    num_classes: int | None,
    round_to: int | Mapping[str, int] | None,
    min_channels: int,
) -> PruningSpace:
    spaces = analysis.spaces
    layers = sorted(analysis.layers.values(), key=lambda r: r.order)
    producers = _first_producers(analysis, layers)
    stage_ctx = sorted({analysis.node_ctx.get(p.node, 0) for _, p in producers}, reverse=True)
    groups, root_index, too_small = _groups(analysis, producers, stage_ctx, round_to, min_channels)

    def resolve(layout: Layout | None) -> tuple[tuple[int, int, int], ...] | None:
        if layout is None:
            return None
        return tuple((root_index.get(spaces.find(s.space), -1), s.size, s.mult) for s in layout)

    members, frozen = _members_and_frozen(analysis, layers, root_index, too_small)
    groups = [
        Group(g.id, g.channels, tuple(m), g.stage, g.round_to, g.min_channels, g.divisor)
        for g, m in zip(groups, members, strict=True)
    ]
    blocks = [
        Block(b.name, _stage_of(b.ctx, stage_ctx), b.removable, b.branch_end)
        for b in analysis.blocks  # graph order of their sums
    ]
    params = []
    for pname, p in model.named_parameters():
        owner, _, attr = pname.rpartition(".")
        params.append((pname, owner, attr, tuple(p.shape)))
    return PruningSpace(
        groups=groups,
        blocks=blocks,
        frozen=frozen,
        arch=arch,
        input_size=_infer_input_size(analysis.input_shape),
        num_classes=num_classes if num_classes is not None else _infer_num_classes(model, analysis),
        layers={r.name: ResolvedLayer(r, resolve(r.out), resolve(r.inp)) for r in layers},
        param_info=params,
        extra_macs=analysis.extra_macs,
        input_shape=analysis.input_shape,
    )


def _first_producers(analysis: Analysis, layers: list[Layer]) -> list[tuple[int, Layer]]:
    """(root, its first producer in graph order) for every unfrozen channel space."""
    spaces = analysis.spaces
    producer_of: dict[int, Layer] = {}
    for layer in layers:
        if layer.kind in ("conv", "linear") and not layer.depthwise and layer.out:
            root = spaces.find(layer.out[0].space)
            if root not in spaces.reason:
                producer_of.setdefault(root, layer)
    return sorted(producer_of.items(), key=lambda kv: kv[1].order)


def _groups(
    analysis: Analysis,
    producers: list[tuple[int, Layer]],
    stage_ctx: list[int],
    round_to: int | Mapping[str, int] | None,
    min_channels: int,
) -> tuple[list[Group], dict[int, int], dict[int, str]]:
    """The groups (members filled in later), root -> group index, and roots too small to prune."""
    spaces = analysis.spaces
    groups: list[Group] = []
    root_index: dict[int, int] = {}
    too_small: dict[int, str] = {}
    for root, prod in producers:
        size = spaces.size[root]
        g = Group(
            id=prod.name,
            channels=size,
            members=(),
            stage=_stage_of(analysis.node_ctx.get(prod.node, 0), stage_ctx),
            round_to=max(1, _round_to_for(prod.name, size, round_to)),
            min_channels=min_channels,
            divisor=spaces.blocks.get(root, 1),
        )
        if g.min_keep >= g.channels:
            too_small[root] = f"only {size} channel(s), nothing to prune"
            continue
        root_index[root] = len(groups)
        groups.append(g)
    return groups, root_index, too_small


def _members_and_frozen(
    analysis: Analysis, layers: list[Layer], root_index: dict[int, int], too_small: dict[int, str]
) -> tuple[list[list[tuple[str, str]]], dict[str, str]]:
    """Each group's (layer, dim) members, and every layer touching a frozen space with its reasons."""
    spaces = analysis.spaces
    members: list[list[tuple[str, str]]] = [[] for _ in root_index]
    frozen: dict[str, str] = {}
    for r in layers:
        reasons = []
        for dim, layout in (("out", r.out), ("in", r.inp)):
            for s in layout or ():
                root = spaces.find(s.space)
                gi = root_index.get(root, -1)
                if gi >= 0:
                    if (r.name, dim) not in members[gi]:
                        members[gi].append((r.name, dim))
                else:
                    why = spaces.reason.get(root) or too_small.get(root)
                    if why and f"{dim}: {why}" not in reasons:
                        reasons.append(f"{dim}: {why}")
        if reasons:
            frozen[r.name] = "; ".join(reasons)
    for name, why in analysis.frozen_modules.items():
        frozen[name] = why if name not in frozen else f"{why}; {frozen[name]}"
    return members, frozen
