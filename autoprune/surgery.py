"""Physical pruning: build the smaller network a plan describes, save and load it.

Layers of the pipeline, each a small function:

1. **importance** (:func:`group_scores`): one score per channel of each group,
   the sum over the group's member layers (``l1``, ``l2``: norms of the weight
   slices a channel owns, each member normalized by its mean so layers of
   different scale weigh alike; ``bn_gamma``: |γ| of the group's norms, l1 for
   groups without a norm; ``random``: seeded);
2. **selection** (:func:`select_channels`): the top-n channels of each group
   (grouped convs: the top n/G of each conv group), in original order;
3. **per-layer indices** (:func:`layer_kept`): a group's choice mapped onto every
   layer dim through concat offsets and flatten repeats;
4. **building** (:func:`build_pruned`): a deep copy whose pruned tensors are
   sliced *before* copying (the copy never duplicates the big dense weights),
   with module attributes (``in_channels``, ``groups``, ...) updated and removed
   blocks replaced by ``nn.Identity``.

``criterion="auto"`` (AdaPruner's adaptive inheritance) builds one candidate per
criterion, recalibrates its BN statistics on a few batches of the loader and
keeps the most accurate.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoprune.checkpoint import check_model_kwargs, check_state_dict, load_torch_file, versions
from autoprune.errors import AutopruneError
from autoprune.evaluation import device_of, evaluate
from autoprune.fx.ops import BATCH_NORM_MODULES, CONV_MODULES, CONV_TRANSPOSE_MODULES, INSTANCE_NORM_MODULES
from autoprune.io import atomic_write
from autoprune.plan import Plan
from autoprune.recalibration import recalibrate_batchnorm
from autoprune.registry import AUTO_CANDIDATES, CHANNEL_CRITERIA, CRITERIA
from autoprune.space import PruningSpace

PRUNED_FORMAT = "autoprune.pruned/1"

Kept = dict[str, dict[str, list[int]]]


@dataclass
class PruneResult:
    """The pruned model, the kept original indices per pruned module and dim, and the plan.

    ``kept``: ``{module: {"out": [...], "in": [...]}}`` for conv/linear, ``{"out"}``
    for norms/PReLU, ``{"dim<k>": [...]}`` for parameters used directly by the
    forward code; only modules that changed are listed.
    """

    model: nn.Module
    kept: Kept
    plan: Plan
    criterion: str = "l1"
    scores: dict[str, float] | None = None  # criterion="auto": accuracy of each candidate
    space: PruningSpace | None = field(default=None, repr=False)


# ------------------------------------------------------------------ importance


def _pair_norms(w: torch.Tensor, p: int) -> torch.Tensor:
    """(dim0, dim1) matrix of sum |w| (p=1) or sum w^2 (p=2) over the remaining dims."""
    w = w.detach()
    k = (w.abs() if p == 1 else w * w).reshape(w.shape[0], w.shape[1], -1)
    return k[:, :, 0] if k.shape[2] == 1 else k.sum(2)


def _finish(v: torch.Tensor, p: int) -> np.ndarray:
    v = v.double()
    return (v if p == 1 else v.sqrt()).cpu().numpy()


def _out_in_norms(w: torch.Tensor, p: int, transposed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per output and per input index norms of a conv/linear weight (one pass over ``w``)."""
    m = _pair_norms(w, p)
    d0, d1 = _finish(m.sum(1), p), _finish(m.sum(0), p)
    return (d1, d0) if transposed else (d0, d1)


def _grouped_in_norms(w: torch.Tensor, groups: int, p: int) -> np.ndarray:
    """Input-index norms of a grouped conv weight (out, in/G, ...): conv group g owns rows g*out/G..."""
    m = _pair_norms(w, p)  # (out, in/G)
    return _finish(m.reshape(groups, w.shape[0] // groups, w.shape[1]).sum(1).reshape(-1), p)


def _member_vectors(space: PruningSpace, model: nn.Module, p: int) -> dict[tuple[str, str], np.ndarray]:
    """Per-feature weight norms of every conv/linear dim that touches a group."""
    out: dict[tuple[str, str], np.ndarray] = {}
    for name, r in space.layers.items():
        layer = r.layer
        if layer.kind not in ("conv", "linear"):
            continue
        want_out = any(gi >= 0 for gi, _, _ in r.out or ())
        want_in = not layer.depthwise and any(gi >= 0 for gi, _, _ in r.inp or ())  # depthwise: in == out
        if not (want_out or want_in):
            continue
        w = model.get_submodule(name).weight
        o, i = _out_in_norms(w, p, layer.transposed)
        if want_out:
            out[(name, "out")] = o
        if want_in:
            out[(name, "in")] = _grouped_in_norms(w, layer.conv_groups, p) if layer.conv_groups > 1 else i
    return out


def _accumulate(scores: list[np.ndarray], segs: Iterable[tuple[int, int, int]], vec: np.ndarray) -> None:
    """Add one member's per-feature vector to the scores of the groups its segments belong to."""
    off = 0
    for gi, size, mult in segs:
        width = size * mult
        if gi >= 0 and off + width <= len(vec):
            v = vec[off : off + width].reshape(size, mult).sum(1)
            mean = v.mean()
            scores[gi] += v / mean if mean > 0 else v
        off += width


def group_scores(space: PruningSpace, model: nn.Module, criterion: str, seed: int = 0) -> list[np.ndarray]:
    """One importance score per channel of every group (higher = keep), in group order."""
    CHANNEL_CRITERIA.check(criterion)
    scores = [np.zeros(g.channels) for g in space.groups]
    if criterion == "random":
        rng = np.random.default_rng(seed)
        return [rng.random(g.channels) for g in space.groups]
    if criterion == "bn_gamma":
        for name, r in space.layers.items():
            mod = model.get_submodule(name) if r.layer.kind == "norm" else None
            if mod is not None and getattr(mod, "weight", None) is not None:
                _accumulate(scores, r.out or (), mod.weight.detach().abs().double().cpu().numpy())
        missing = [i for i, s in enumerate(scores) if not s.any()]
        if not missing:
            return scores
        fallback = group_scores(space, model, "l1", seed)
        for i in missing:
            scores[i] = fallback[i]
        return scores
    p = 1 if criterion == "l1" else 2
    for (name, dim), vec in _member_vectors(space, model, p).items():
        r = space.layers[name]
        _accumulate(scores, (r.out if dim == "out" else r.inp) or (), vec)
    return scores


# ------------------------------------------------------------------- selection


def select_channels(
    space: PruningSpace, scores: Sequence[np.ndarray], counts: np.ndarray
) -> list[np.ndarray]:
    """Indices (sorted) of the channels each group keeps: its ``counts[g]`` best by score."""
    kept = []
    for g, s, n in zip(space.groups, scores, counts, strict=True):
        n = int(n)
        if n >= g.channels:
            kept.append(np.arange(g.channels))
            continue
        blocks = g.divisor
        size, per = g.channels // blocks, n // blocks
        parts = []
        for b in range(blocks):
            order = np.argsort(-s[b * size : (b + 1) * size], kind="stable")[:per]
            parts.append(np.sort(order) + b * size)
        kept.append(np.concatenate(parts))
    return kept


def _dim_indices(segs: Sequence[tuple[int, int, int]], kept: Sequence[np.ndarray]) -> tuple[np.ndarray, bool]:
    """Kept feature indices of one layer dim, and whether anything was removed."""
    parts, off, changed = [], 0, False
    for gi, size, mult in segs:
        idx = kept[gi] if gi >= 0 else None
        if idx is None or len(idx) == size:
            parts.append(np.arange(off, off + size * mult))
        else:
            changed = True
            parts.append((off + idx[:, None] * mult + np.arange(mult)[None, :]).reshape(-1))
        off += size * mult
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)), changed


def _inside(name: str, blocks: Iterable[str]) -> bool:
    return any(name == b or name.startswith(b + ".") for b in blocks)


def layer_kept(space: PruningSpace, kept: Sequence[np.ndarray], removed_blocks: Sequence[str] = ()) -> Kept:
    """Per changed layer, the original indices it keeps per dim (see :class:`PruneResult`)."""
    out: Kept = {}
    for name, r in space.layers.items():
        if _inside(name, removed_blocks):
            continue
        layer = r.layer
        o, o_changed = _dim_indices(r.out, kept) if r.out else (None, False)
        i, i_changed = _dim_indices(r.inp, kept) if r.inp else (None, False)
        if not (o_changed or i_changed):
            continue
        if layer.kind == "tensor":
            out[name] = {f"dim{layer.axis}": o.tolist()}
        elif layer.kind in ("conv", "linear"):
            out[name] = {"out": o.tolist(), "in": i.tolist()}
        else:
            out[name] = {"out": o.tolist()}
    return out


# -------------------------------------------------------------------- building


def _index(idx: list[int] | None, n: int, device: torch.device) -> torch.Tensor | None:
    """Index tensor, or None when ``idx`` keeps all ``n`` entries."""
    if idx is None or len(idx) == n:
        return None
    return torch.as_tensor(idx, dtype=torch.long, device=device)


def _take(t: torch.Tensor, dim: int, idx: list[int] | None) -> torch.Tensor:
    """``t`` restricted to ``idx`` along ``dim``: always a new tensor (never a view of ``t``)."""
    i = _index(idx, t.shape[dim], t.device)
    t = t.detach()
    return t.clone() if i is None else t.index_select(dim, i)


def _take2(t: torch.Tensor, idx0: list[int] | None, idx1: list[int] | None) -> torch.Tensor:
    """``t`` restricted along dims 0 and 1 with one copy."""
    i0, i1 = _index(idx0, t.shape[0], t.device), _index(idx1, t.shape[1], t.device)
    t = t.detach()
    if i0 is None:
        return _take(t, 1, idx1)
    if i1 is None:
        return t.index_select(0, i0)
    return t[i0[:, None], i1[None, :]]


def _new_conv_weight(mod: nn.Module, out_idx: list[int], in_idx: list[int]) -> torch.Tensor:
    w = mod.weight
    if isinstance(mod, CONV_TRANSPOSE_MODULES):
        return _take2(w, in_idx, out_idx)
    groups = mod.groups
    if groups == 1:
        return _take2(w, out_idx, in_idx)
    if groups == mod.in_channels:  # depthwise: rows only, one input per group
        return _take(w, 0, out_idx)
    # balanced grouped conv: row j (conv group j // out_per) keeps that group's kept inputs
    out_per, in_per = mod.out_channels // groups, mod.in_channels // groups
    ins = torch.as_tensor(in_idx, dtype=torch.long)
    cols = torch.stack([ins[(ins // in_per) == b] - b * in_per for b in range(groups)])  # (G, k_in/G)
    rows = _take(w, 0, out_idx)
    sel = cols[torch.as_tensor(out_idx, dtype=torch.long) // out_per].to(w.device)  # (k_out, k_in/G)
    sel = sel.reshape(*sel.shape, *([1] * (w.ndim - 2))).expand(-1, -1, *w.shape[2:])
    return rows.gather(1, sel)


def _module_tensors(mod: nn.Module, dims: Mapping[str, list[int]]) -> dict[str, torch.Tensor]:
    """New values of the module's own parameters/buffers for the kept indices."""
    out_idx, in_idx = dims.get("out"), dims.get("in")
    new: dict[str, torch.Tensor] = {}
    if isinstance(mod, (*CONV_MODULES, *CONV_TRANSPOSE_MODULES)):
        new["weight"] = _new_conv_weight(mod, out_idx, in_idx)
        if mod.bias is not None:
            new["bias"] = _take(mod.bias, 0, out_idx)
    elif isinstance(mod, nn.Linear):
        new["weight"] = _take2(mod.weight, out_idx, in_idx)
        if mod.bias is not None:
            new["bias"] = _take(mod.bias, 0, out_idx)
    elif isinstance(mod, (*BATCH_NORM_MODULES, *INSTANCE_NORM_MODULES, nn.GroupNorm, nn.PReLU)):
        for key in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(mod, key, None)
            if isinstance(t, torch.Tensor):
                new[key] = _take(t, 0, out_idx)
    else:
        raise AutopruneError(f"cannot prune a {type(mod).__name__}")
    return new


def _set_attributes(mod: nn.Module, dims: Mapping[str, list[int]]) -> None:
    """Update the shape attributes of an already resized copy."""
    out_idx, in_idx = dims.get("out"), dims.get("in")
    if isinstance(mod, (*CONV_MODULES, *CONV_TRANSPOSE_MODULES)):
        depthwise = mod.groups > 1 and mod.groups == mod.in_channels
        mod.in_channels, mod.out_channels = len(in_idx), len(out_idx)
        if depthwise:
            mod.groups = len(in_idx)
    elif isinstance(mod, nn.Linear):
        mod.in_features, mod.out_features = len(in_idx), len(out_idx)
    elif isinstance(mod, nn.GroupNorm):
        mod.num_groups = mod.num_channels = len(out_idx)
    elif isinstance(mod, (*BATCH_NORM_MODULES, *INSTANCE_NORM_MODULES)):
        mod.num_features = len(out_idx)
    elif isinstance(mod, nn.PReLU):
        mod.num_parameters = len(out_idx)


def _tensor_owner(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    owner, _, attr = path.rpartition(".")
    return model.get_submodule(owner), attr


def build_pruned(model: nn.Module, kept: Kept, removed_blocks: Sequence[str] = ()) -> nn.Module:
    """A new module: ``model`` with the ``kept`` indices only and ``removed_blocks`` as identity.

    Works from ``kept`` alone (no tracing), so it also rebuilds saved models.
    """
    memo: dict[int, Any] = {}
    modules = dict(model.named_modules())
    for name, dims in kept.items():
        mod = modules.get(name)
        if mod is not None:
            for key, value in _module_tensors(mod, dims).items():
                old = getattr(mod, key)
                memo[id(old)] = (
                    nn.Parameter(value, old.requires_grad) if isinstance(old, nn.Parameter) else value
                )
            continue
        ((dim_key, idx),) = dims.items()
        owner, attr = _tensor_owner(model, name)
        old = getattr(owner, attr)
        value = _take(old, int(dim_key[3:]), idx)
        memo[id(old)] = nn.Parameter(value, old.requires_grad) if isinstance(old, nn.Parameter) else value
    new = copy.deepcopy(model, memo)
    for name, dims in kept.items():
        if name in modules:
            _set_attributes(new.get_submodule(name), dims)
    for block in removed_blocks:
        parent, _, child = block.rpartition(".")
        setattr(new.get_submodule(parent) if parent else new, child, nn.Identity())
    return new


# ------------------------------------------------------------------------ apply


def _default_inputs(model: nn.Module, plan: Plan) -> torch.Tensor:
    size = plan.input_size
    if size is None:
        raise AutopruneError("pass example_inputs (or a space): the plan records no input size")
    first = next((m for m in model.modules() if isinstance(m, (*CONV_MODULES, nn.Linear))), None)
    channels = getattr(first, "in_channels", 3)
    spatial = [size, size] if isinstance(size, int) else list(size)
    p = next(model.parameters(), None)
    return torch.zeros(1, channels, *spatial, device=p.device if p is not None else "cpu")


def _kept_for(space: PruningSpace, model: nn.Module, plan: Plan, criterion: str, seed: int) -> Kept:
    scores = group_scores(space, model, criterion, seed)
    chosen = select_channels(space, scores, space.channels_vector(plan))
    return layer_kept(space, chosen, plan.removed_blocks)


def apply_plan(
    model: nn.Module,
    plan: Plan,
    criterion: str = "l1",
    *,
    space: PruningSpace | None = None,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
    loader: Iterable | None = None,
    seed: int = 0,
    recal_batches: int = 8,
    eval_batches: int = 4,
) -> PruneResult:
    """Build the physically smaller network ``plan`` describes; ``model`` is not modified.

    ``space`` defaults to one traced on ``example_inputs`` (default: zeros of the
    plan's input size). ``criterion``: l1, l2, bn_gamma, random (seeded) or auto
    (needs ``loader`` of (x, y) batches, e.g. the search split: each candidate's BN
    statistics are recalibrated on ``recal_batches`` batches and its top-1 is
    measured on the next ``eval_batches``).
    """
    if space is None:
        inputs = example_inputs if example_inputs is not None else _default_inputs(model, plan)
        space = PruningSpace.from_model(model, inputs, arch=plan.arch, num_classes=plan.num_classes)
    space.check_plan(plan)
    if CRITERIA.check(criterion) == "auto":
        return _apply_auto(model, plan, space, loader, seed, recal_batches, eval_batches)
    kept = _kept_for(space, model, plan, criterion, seed)
    pruned = build_pruned(model, kept, plan.removed_blocks)
    return PruneResult(pruned, kept, plan, criterion, None, space)


def _apply_auto(
    model: nn.Module,
    plan: Plan,
    space: PruningSpace,
    loader: Iterable | None,
    seed: int,
    recal_batches: int,
    eval_batches: int,
) -> PruneResult:
    if loader is None:
        raise AutopruneError(
            "criterion='auto' recalibrates candidates on data: pass loader= (the search split)"
        )
    batches = list(itertools.islice(iter(loader), recal_batches + eval_batches))
    if not batches:
        raise AutopruneError("criterion='auto' got an empty loader")
    recal, held = batches[:recal_batches], batches[recal_batches:] or batches
    best: PruneResult | None = None
    accuracies: dict[str, float] = {}
    for crit in AUTO_CANDIDATES:
        kept = _kept_for(space, model, plan, crit, seed)
        cand = build_pruned(model, kept, plan.removed_blocks)
        recalibrate_batchnorm(
            cand, [b[0] if isinstance(b, (tuple, list)) else b for b in recal], device_of(cand)
        )
        accuracies[crit] = evaluate(cand, held, device=device_of(cand)).accuracy
        if best is None or accuracies[crit] > accuracies[best.criterion]:
            best = PruneResult(cand, kept, plan, crit, None, space)
    assert best is not None
    best.scores = accuracies
    return best


# ------------------------------------------------------------- dead channels


def _zero_complement(t: torch.Tensor, dim: int, keep: list[int]) -> None:
    mask = torch.ones(t.shape[dim], dtype=torch.bool, device=t.device)
    mask[torch.as_tensor(keep, dtype=torch.long, device=t.device)] = False
    shape = [1] * t.ndim
    shape[dim] = -1
    t.data.masked_fill_(mask.view(shape), 0)


@torch.no_grad()
def dead_channel_model(model: nn.Module, result: PruneResult) -> nn.Module:
    """A copy of the dense ``model`` in which every removed channel is dead.

    Producer rows and biases, norm γ and β (and directly used per-channel tensors)
    are zeroed at removed output indices; a removed block gets its branch's last
    norm/conv zeroed. For an exact pruning its outputs equal ``result.model``'s.
    """
    dead = copy.deepcopy(model)
    modules = dict(dead.named_modules())
    for name, dims in result.kept.items():
        mod = modules.get(name)
        if mod is None:
            ((dim_key, idx),) = dims.items()
            owner, attr = _tensor_owner(dead, name)
            _zero_complement(getattr(owner, attr), int(dim_key[3:]), idx)
            continue
        out_dim = 1 if isinstance(mod, CONV_TRANSPOSE_MODULES) else 0
        for key in ("weight", "bias"):
            t = getattr(mod, key, None)
            if isinstance(t, torch.Tensor) and not isinstance(mod, nn.PReLU):
                _zero_complement(t, out_dim if key == "weight" else 0, dims["out"])
    if result.plan.removed_blocks:
        ends = {b.name: b.branch_end for b in (result.space.blocks if result.space else [])}
        for block in result.plan.removed_blocks:
            end = ends.get(block)
            if end is None:
                raise AutopruneError(f"block {block!r}: its residual branch has no norm/conv to zero")
            for t in modules[end].parameters(recurse=False):
                t.zero_()
    return dead


def module_out_masks(
    model_or_space: nn.Module | PruningSpace, result: PruneResult
) -> dict[str, torch.Tensor]:
    """Which original output channels of each conv/linear/norm are kept (bool per channel).

    Modules inside a removed block are all-False.
    """
    sizes: dict[str, int] = {}
    if isinstance(model_or_space, PruningSpace):
        for name, r in model_or_space.layers.items():
            if r.layer.kind != "tensor" and r.out:
                sizes[name] = sum(size * mult for _, size, mult in r.out)
    else:
        for name, mod in model_or_space.named_modules():
            n = _out_size(mod)
            if n is not None:
                sizes[name] = n
    masks = {}
    for name, n in sizes.items():
        mask = torch.ones(n, dtype=torch.bool)
        if _inside(name, result.plan.removed_blocks):
            mask[:] = False
        elif name in result.kept and "out" in result.kept[name]:
            mask[:] = False
            mask[torch.as_tensor(result.kept[name]["out"], dtype=torch.long)] = True
        masks[name] = mask
    return masks


def _out_size(mod: nn.Module) -> int | None:
    if isinstance(mod, (*CONV_MODULES, *CONV_TRANSPOSE_MODULES)):
        return mod.out_channels
    if isinstance(mod, nn.Linear):
        return mod.out_features
    if isinstance(mod, (*BATCH_NORM_MODULES, *INSTANCE_NORM_MODULES)):
        return mod.num_features
    if isinstance(mod, nn.GroupNorm):
        return mod.num_channels
    return None


# ------------------------------------------------------------------ save / load


def save_pruned(
    path: str | os.PathLike, result: PruneResult, *, model_kwargs: Mapping[str, Any] | None = None
) -> Path:
    """Write plan + kept indices + state_dict (no pickled code) to ``path``, atomically.

    ``model_kwargs`` are the extra :func:`autoprune.create_model` arguments the dense
    architecture needs (e.g. ``width_mult``); :func:`load_pruned` passes them back.
    """
    payload = {
        "format": PRUNED_FORMAT,
        "plan": result.plan.to_dict(),
        "kept": result.kept,
        "criterion": result.criterion,
        "model_kwargs": dict(model_kwargs or {}),
        "versions": versions(),
        "state_dict": {k: v.detach().cpu() for k, v in result.model.state_dict().items()},
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_pruned(
    path: str | os.PathLike, model: nn.Module | None = None, *, trust_code: bool = False
) -> PruneResult:
    """Rebuild a model saved by :func:`save_pruned` (weights loaded with ``weights_only=True``).

    The dense architecture comes from the plan's ``arch`` via
    :func:`autoprune.create_model`, or from ``model`` (a dense instance of it, not
    modified) for architectures that are not in the zoo. A ``module:callable`` arch
    read from the file is built only with ``trust_code=True``; stored ``model_kwargs``
    must be plain values (see :func:`autoprune.checkpoint.check_model_kwargs`).
    """
    payload = load_torch_file(path, "pruned model")
    if not isinstance(payload, dict) or payload.get("format") != PRUNED_FORMAT:
        raise AutopruneError(
            f"{str(path)!r} is not a pruned model saved by autoprune (expected format {PRUNED_FORMAT})"
        )
    try:
        missing = [k for k in ("plan", "kept", "state_dict") if k not in payload]
        if missing:
            raise AutopruneError(f"it lacks {', '.join(missing)} (a damaged file?)")
        plan = Plan.from_dict(payload["plan"])
        model_kwargs = check_model_kwargs(payload.get("model_kwargs"))
        state_dict = check_state_dict(payload["state_dict"])
        kept = payload["kept"]
        if not isinstance(kept, dict):
            raise AutopruneError(f"its kept channels are {type(kept).__name__}, not a mapping")
        if not isinstance(payload.get("criterion", "l1"), str):
            raise AutopruneError("its criterion is not a name")
    except AutopruneError as exc:
        raise AutopruneError(f"pruned model {str(path)!r}: {exc}") from None
    if model is None:
        if plan.arch is None:
            raise AutopruneError(f"{str(path)!r} records no architecture: pass model= (a dense instance)")
        from autoprune.models import create_model

        size = plan.input_size if isinstance(plan.input_size, int) else max(plan.input_size or [32])
        try:
            model = create_model(
                plan.arch, plan.num_classes or 10, size, trust_code=trust_code, **model_kwargs
            )
        except AutopruneError as exc:
            raise AutopruneError(f"pruned model {str(path)!r}: {exc}") from None
    try:
        pruned = build_pruned(model, kept, plan.removed_blocks)
        pruned.load_state_dict(state_dict)
    except (RuntimeError, AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise AutopruneError(
            f"{str(path)!r} does not fit {plan.arch or type(model).__name__}: {str(exc).splitlines()[0]}"
        ) from None
    return PruneResult(pruned.eval(), kept, plan, payload.get("criterion", "l1"))


# ----------------------------------------------------------------------- export


def export_torchscript(model: nn.Module, path: str | os.PathLike, example: torch.Tensor) -> Path:
    """Trace ``model`` (eval mode) on ``example`` and save a TorchScript file, atomically."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
    finally:
        model.train(was_training)
    return atomic_write(path, lambda tmp: traced.save(str(tmp)))


def export_onnx(model: nn.Module, path: str | os.PathLike, example: torch.Tensor, *, opset: int = 17) -> Path:
    """Export ``model`` (eval mode) to ONNX with a dynamic batch dimension, atomically."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it; say so before writing anything)
    except ImportError:
        raise AutopruneError("ONNX export needs the onnx package: pip install onnx") from None
    was_training = model.training
    model.eval()

    def write(tmp: Path) -> None:
        with torch.no_grad():
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )

    try:
        return atomic_write(Path(path), write)
    finally:
        model.train(was_training)


__all__ = [
    "CRITERIA",
    "PruneResult",
    "apply_plan",
    "build_pruned",
    "dead_channel_model",
    "export_onnx",
    "export_torchscript",
    "group_scores",
    "layer_kept",
    "load_pruned",
    "module_out_masks",
    "save_pruned",
    "select_channels",
]
