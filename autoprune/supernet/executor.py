"""One set of weights for every plan of a space: channels reordered so first-k = top-k.

:meth:`SupernetExecutor.from_dense` scores the channels of each group as
:func:`~autoprune.surgery.group_scores` does and permutes every member of the group
consistently (conv rows and columns, depthwise in = out, norms, per-channel tensors,
concat offsets and flatten repeats through the space's resolved segments), so the
reordered network computes exactly what the dense one does and a plan keeping ``k``
channels of a group keeps its first ``k`` (grouped convs: the first ``k/G`` of each
conv group), the same channels :func:`~autoprune.surgery.select_channels` picks.

A plan runs by slicing: :meth:`SupernetExecutor.sliced_state` gives every pruned
tensor restricted to the plan's channels (views or gathers of the shared weights,
so gradients reach them), and :meth:`SupernetExecutor.forward` runs the shared
modules on those through ``torch.func.functional_call`` (depthwise ``groups``
patched for the call). :meth:`SupernetExecutor.materialize` builds the plan's
physically smaller model (what :func:`~autoprune.surgery.apply_plan` would give).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from autoprune.errors import AutopruneError
from autoprune.fx.ops import BATCH_NORM_MODULES, CONV_MODULES, CONV_TRANSPOSE_MODULES, INSTANCE_NORM_MODULES
from autoprune.plan import Plan
from autoprune.space import PruningSpace, ResolvedLayer
from autoprune.surgery import PruneResult, build_pruned, group_scores, layer_kept

Segs = Sequence[tuple[int, int, int]]
Dims = dict[str, np.ndarray]  # "out" / "in" / "dim<k>" -> indices into the tensor's dim


def importance_order(space: PruningSpace, scores: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per group, its channels from most to least important (grouped convs: within each conv group).

    Ties keep the lower index first, as :func:`~autoprune.surgery.select_channels` does, so the
    first ``k`` of the order are the channels it keeps.
    """
    order = []
    for g, s in zip(space.groups, scores, strict=True):
        size = g.channels // g.divisor
        parts = [
            np.argsort(-s[b * size : (b + 1) * size], kind="stable") + b * size for b in range(g.divisor)
        ]
        order.append(np.concatenate(parts).astype(np.int64))
    return order


def first_k(space: PruningSpace, counts: Sequence[int] | np.ndarray) -> list[np.ndarray]:
    """Positions a plan keeps in the reordered network: the first ``n`` of each group (per conv group)."""
    kept = []
    for g, n in zip(space.groups, counts, strict=True):
        n, size = int(n), g.channels // g.divisor
        per = n // g.divisor
        kept.append(np.concatenate([np.arange(per) + b * size for b in range(g.divisor)]).astype(np.int64))
    return kept


def dim_indices(segs: Segs | None, kept: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """Feature indices of one tensor dim for per-group channel choices (None: the dim is untouched).

    ``kept[g]``: the chosen channels of group ``g`` (any order; None keeps it whole); fixed
    segments (group -1) keep everything. Mirrors the surgery's mapping through concat offsets
    (segments) and flatten repeats (``mult``).
    """
    if not segs:
        return None
    parts, off, changed = [], 0, False
    for gi, size, mult in segs:
        idx = kept[gi] if gi >= 0 else None
        if idx is None or (len(idx) == size and np.array_equal(idx, np.arange(size))):
            parts.append(np.arange(off, off + size * mult))
        else:
            changed = True
            parts.append((off + np.asarray(idx)[:, None] * mult + np.arange(mult)[None, :]).reshape(-1))
        off += size * mult
    return np.concatenate(parts).astype(np.int64) if changed else None


def _why_not_permutable(mod: nn.Module | None, r: ResolvedLayer) -> str | None:
    """Why this layer's channels cannot be permuted exactly (None when they can)."""
    if r.layer.kind == "tensor":
        return None
    if mod is None:
        return f"{r.layer.name} is not a module"
    if isinstance(mod, (*CONV_MODULES, *CONV_TRANSPOSE_MODULES, nn.Linear, *BATCH_NORM_MODULES)):
        if isinstance(mod, CONV_TRANSPOSE_MODULES) and mod.groups > 1:
            return f"{r.layer.name} is a grouped transposed conv"
        return None
    if isinstance(mod, INSTANCE_NORM_MODULES):
        return None
    if isinstance(mod, nn.GroupNorm):
        return (
            None if mod.num_groups in (1, mod.num_channels) else f"{r.layer.name} normalizes channel groups"
        )
    if isinstance(mod, nn.PReLU):
        return None
    return f"{r.layer.name} is a {type(mod).__name__}"


def _take(t: torch.Tensor, dim: int, idx: np.ndarray | None, cache: dict) -> torch.Tensor:
    """``t`` restricted to ``idx`` along ``dim``: a view for a leading range, else a gather (keeps grad)."""
    if idx is None:
        return t
    key = (id(idx), t.device)
    hit = cache.get(key)
    if hit is None:
        prefix = bool(len(idx)) and idx[0] == 0 and np.array_equal(idx, np.arange(len(idx)))
        hit = cache[key] = (prefix, None if prefix else torch.as_tensor(idx, device=t.device))
    prefix, index = hit
    return t.narrow(dim, 0, len(idx)) if prefix else t.index_select(dim, index)


def _conv_weight(
    mod: nn.Module, w: torch.Tensor, out: np.ndarray | None, inp: np.ndarray | None, cache
) -> torch.Tensor:
    if isinstance(mod, CONV_TRANSPOSE_MODULES):  # (in, out, ...)
        return _take(_take(w, 1, out, cache), 0, inp, cache)
    groups = mod.groups
    if groups == 1:
        return _take(_take(w, 0, out, cache), 1, inp, cache)
    if groups == mod.in_channels:  # depthwise: one input per row, in == out
        return _take(w, 0, out, cache)
    # grouped: row j (conv group j // out_per) keeps its conv group's chosen inputs, in their order
    rows = _take(w, 0, out, cache)
    if inp is None:
        return rows
    out_per, in_per = mod.out_channels // groups, mod.in_channels // groups
    ins = torch.as_tensor(inp)
    cols = torch.stack([ins[(ins // in_per) == b] - b * in_per for b in range(groups)])
    outs = torch.as_tensor(out) if out is not None else torch.arange(mod.out_channels)
    sel = cols[outs // out_per].to(w.device)
    sel = sel.reshape(*sel.shape, *([1] * (w.ndim - 2))).expand(-1, -1, *w.shape[2:])
    return rows.gather(1, sel)


class SupernetExecutor:
    """Runs any plan of ``space`` on ``model``, whose channels are already in importance order.

    ``order[g]``: the original channel index at each position of group ``g`` (what
    :meth:`from_dense` applied), kept to map positions back to the dense network.
    Build one from a dense model with :meth:`from_dense`; a trained supernet stores
    the reordered weights and the order, and is rebuilt with this constructor.
    """

    def __init__(self, model: nn.Module, space: PruningSpace, order: Sequence[np.ndarray]) -> None:
        if len(order) != len(space.groups):
            raise AutopruneError(
                f"an importance order for {len(order)} groups, the space has {len(space.groups)}"
            )
        for g, o in zip(space.groups, order, strict=True):
            if sorted(np.asarray(o).tolist()) != list(range(g.channels)):
                raise AutopruneError(
                    f"the importance order of group {g.id!r} is not a permutation of its channels"
                )
        self.model = model
        self.space = space
        self.order = [np.asarray(o, dtype=np.int64) for o in order]
        self._modules = dict(model.named_modules())
        self._plans: dict[tuple[int, ...], dict[str, Dims]] = {}
        self._index_cache: dict = {}

    # -- construction ----------------------------------------------------------

    @classmethod
    def from_dense(cls, model: nn.Module, space: PruningSpace, criterion: str = "l1") -> SupernetExecutor:
        """Reorder a copy of the dense ``model`` by ``criterion`` (``model`` is not modified).

        A group with a member whose channels cannot be permuted exactly (e.g. a GroupNorm over
        several channels) keeps its order when that order already is by importance, else it is
        refused with the reason.
        """
        scores = group_scores(space, model, criterion)
        order = importance_order(space, scores)
        modules = dict(model.named_modules())
        for gi, g in enumerate(space.groups):
            if np.array_equal(order[gi], np.arange(g.channels)):
                continue
            for name, _dim in g.members:
                why = _why_not_permutable(modules.get(name), space.layers[name])
                if why:
                    raise AutopruneError(
                        f"group {g.id!r} cannot be reordered by importance ({why}) and its first "
                        "channels are not its most important, so first-k would not be top-k"
                    )
        reordered = copy.deepcopy(model)
        executor = cls(reordered, space, order)
        with torch.no_grad():
            for key, value in executor.sliced_state(executor._dims(order)).items():
                executor._tensor(key).copy_(value.detach().clone())
        executor._index_cache.clear()  # keyed by the ids of index arrays that are gone now
        return executor

    # -- plans -----------------------------------------------------------------

    def counts(self, plan: Plan) -> np.ndarray:
        self.space.check_plan(plan)
        return self.space.channels_vector(plan)

    def kept(self, plan: Plan) -> list[np.ndarray]:
        """Positions the plan keeps in each group of the reordered network."""
        return first_k(self.space, self.counts(plan))

    def original_kept(self, plan: Plan) -> list[np.ndarray]:
        """The dense network's channels the plan keeps, sorted (equal to the surgery's choice)."""
        return [np.sort(o[k]) for o, k in zip(self.order, self.kept(plan), strict=True)]

    def layer_kept(self, plan: Plan):
        """Surgery's per-layer kept indices of the plan, in the reordered network."""
        return layer_kept(self.space, self.kept(plan), plan.removed_blocks)

    def plan_dims(self, plan: Plan | np.ndarray) -> dict[str, Dims]:
        """Per changed layer, the indices each tensor dim keeps (cached per channel counts)."""
        counts = self.counts(plan) if isinstance(plan, Plan) else np.asarray(plan)
        key = tuple(int(c) for c in counts)
        dims = self._plans.get(key)
        if dims is None:
            if len(self._plans) > 64:
                self._plans.clear()
                self._index_cache.clear()
            dims = self._plans[key] = self._dims(first_k(self.space, counts))
        return dims

    def _dims(self, kept: Sequence[np.ndarray | None]) -> dict[str, Dims]:
        out: dict[str, Dims] = {}
        for name, r in self.space.layers.items():
            o, i = dim_indices(r.out, kept), dim_indices(r.inp, kept)
            if o is None and i is None:
                continue
            if r.layer.kind == "tensor":
                out[name] = {f"dim{r.layer.axis}": o}
            else:
                out[name] = {"out": o, "in": i}
        return out

    def _tensor(self, key: str) -> torch.Tensor:
        owner, _, attr = key.rpartition(".")
        return getattr(self._modules[owner], attr)

    def sliced_state(self, dims: Mapping[str, Dims]) -> dict[str, torch.Tensor]:
        """Every tensor the plan changes, by state-dict key: views or gathers of the shared ones."""
        state: dict[str, torch.Tensor] = {}
        cache = self._index_cache
        for name, d in dims.items():
            mod = self._modules.get(name)
            if mod is None:  # a tensor attribute used directly by the forward
                ((dim_key, idx),) = d.items()
                state[name] = _take(self._tensor(name), int(dim_key[3:]), idx, cache)
                continue
            out, inp = d.get("out"), d.get("in")
            prefix = f"{name}." if name else ""
            if isinstance(mod, (*CONV_MODULES, *CONV_TRANSPOSE_MODULES)):
                state[prefix + "weight"] = _conv_weight(mod, mod.weight, out, inp, cache)
                if mod.bias is not None:
                    state[prefix + "bias"] = _take(mod.bias, 0, out, cache)
            elif isinstance(mod, nn.Linear):
                state[prefix + "weight"] = _take(_take(mod.weight, 0, out, cache), 1, inp, cache)
                if mod.bias is not None:
                    state[prefix + "bias"] = _take(mod.bias, 0, out, cache)
            else:
                for key in ("weight", "bias", "running_mean", "running_var"):
                    t = getattr(mod, key, None)
                    if isinstance(t, torch.Tensor) and not (isinstance(mod, nn.PReLU) and t.numel() == 1):
                        state[prefix + key] = _take(t, 0, out, cache)
        return state

    @contextlib.contextmanager
    def widths(self, dims: Mapping[str, Dims]) -> Iterator[None]:
        """Module attributes the forward reads (depthwise ``groups``, GroupNorm sizes) set for the plan."""
        saved: list[tuple[nn.Module, str, object]] = []
        try:
            for name, d in dims.items():
                mod = self._modules.get(name)
                out = d.get("out")
                if out is None or mod is None:
                    continue
                if isinstance(mod, CONV_MODULES) and mod.groups > 1 and mod.groups == mod.in_channels:
                    saved.append((mod, "groups", mod.groups))
                    mod.groups = len(out)
                elif isinstance(mod, nn.GroupNorm):
                    saved += [(mod, "num_groups", mod.num_groups), (mod, "num_channels", mod.num_channels)]
                    mod.num_channels = len(out)
                    mod.num_groups = 1 if mod.num_groups == 1 else len(out)
            yield
        finally:
            for mod, attr, value in reversed(saved):
                setattr(mod, attr, value)

    # -- running -----------------------------------------------------------------

    def forward(self, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        """Logits of ``plan`` on ``x`` through the shared weights (autograd flows into them)."""
        dims = self.plan_dims(plan)
        hooks = []
        for block in plan.removed_blocks:
            hooks.append(self._modules[block].register_forward_hook(lambda _m, args, _out: args[0]))
        try:
            state = self.sliced_state(dims)  # before the widths change what a depthwise conv looks like
            with self.widths(dims):
                return functional_call(self.model, state, (x,), strict=False)
        finally:
            for h in hooks:
                h.remove()

    __call__ = forward

    def materialize(self, plan: Plan) -> nn.Module:
        """The plan's physically smaller model, built from the shared weights (an independent copy)."""
        return build_pruned(self.model, self.layer_kept(plan), plan.removed_blocks)

    def prune_result(self, plan: Plan) -> PruneResult:
        """The plan as a :class:`~autoprune.surgery.PruneResult` of the reordered network (not built)."""
        return PruneResult(self.model, self.layer_kept(plan), plan, "supernet", None, self.space)
