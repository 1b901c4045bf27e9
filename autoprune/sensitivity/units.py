"""Sensitivity units and the perturbations applied to them.

A **unit** is what one sensitivity value is measured for:

* ``block``: a module holding a residual sum (``space.blocks``). Its tensors are
  every parameter and buffer inside that module.
* ``group``: a channel group (``space.groups``). Its tensors are the *producer
  side* of the group: every member ``(module, "out")`` -- conv and linear weight
  rows (and bias entries) at the group's channel indices, depthwise convs
  included, and the per-channel entries of the norms on those channels. Members
  with dim ``"in"`` consume the channels and are left untouched.

A perturbation returns **overrides**: ``{state_dict key: new tensor}`` for the
tensors it changes; the model itself is never modified.

* SR-init (:func:`sr_init_overrides`): the unit's conv/linear layers are redrawn
  by the architecture's own initializer (applied to a copy of the layer or
  block, on the CPU, with the global RNG seeded from
  ``(unit id, seed, module name)`` inside :func:`torch.random.fork_rng`), and its
  norms are reset (gamma = 1, beta = 0, running mean 0, running var 1). For a
  group, only the group's rows and norm entries are taken from the redraw.
* SBPF (:func:`sbpf_overrides`): every conv/linear weight tensor of the unit
  (for a group: the group's rows of each producer) gets ``W + eps`` with
  ``eps ~ N(0, (sigma * std W)^2)``, ``std W`` over the damaged entries; noise
  from a CPU ``torch.Generator`` seeded from ``(unit id, seed, sigma, module)``.
  Biases and norms are untouched, so a unit whose weights are all zero is not
  damaged at all.
* BN-gamma (:func:`bn_gamma_value`): the mean ``|gamma|`` over the unit's norm
  channels (no perturbation, no data).

Seeds are derived from the unit *id*, not its position, so adding or reordering
units never changes another unit's draws.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from autoprune.errors import AutopruneError
from autoprune.evaluation import device_of
from autoprune.registry import SENSITIVITY_UNITS as UNIT_KINDS

if TYPE_CHECKING:
    from autoprune.space import PruningSpace

Overrides = dict[str, torch.Tensor]
Initializer = Callable[[nn.Module], None]

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
_CHANNEL_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm)  # per-channel tensors on axis 0
_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class Member:
    """One producer-side place of a group unit: ``module``'s out dim at ``channels``."""

    module: str
    kind: str  # "weighted" (conv/linear) or "norm"
    channels: tuple[int, ...]  # indices along the module's output-channel axis


@dataclass(frozen=True)
class Unit:
    """One sensitivity unit (see the module docstring)."""

    id: str
    kind: str  # "block" | "group"
    stage: int
    removable: bool | None = None  # blocks only: input and output shapes are equal
    members: tuple[Member, ...] = ()  # groups only


def plain_forward(model: nn.Module, x: torch.Tensor, overrides: Overrides | None = None) -> torch.Tensor:
    """``model`` on ``x``, with ``overrides`` in place of its tensors."""
    from torch.func import functional_call

    return model(x) if not overrides else functional_call(model, overrides, (x,), strict=False)


def units_from_space(space: PruningSpace, kind: str, model: nn.Module) -> list[Unit]:
    """The units of ``space`` (a :class:`autoprune.PruningSpace`) in network order."""
    if kind not in UNIT_KINDS:
        raise AutopruneError(f"unknown unit {kind!r}; valid: {', '.join(UNIT_KINDS)}")
    if kind == "block":
        if not space.blocks:
            name = space.arch or type(model).__name__
            raise AutopruneError(f"{name} has no residual blocks; use --unit group")
        return [Unit(b.name, "block", int(b.stage), bool(b.removable)) for b in space.blocks]
    modules = dict(model.named_modules())
    units = []
    for gi, group in enumerate(space.groups):
        members = []
        for name, dim in group.members:
            mod = modules.get(name)
            if dim != "out" or mod is None:
                continue
            if isinstance(mod, _WEIGHTED):
                kind_ = "weighted"
            elif isinstance(mod, _CHANNEL_NORMS):
                kind_ = "norm"
            else:  # PReLU slopes, raw tensors: not part of SR-init / SBPF
                continue
            members.append(Member(name, kind_, _group_indices(space.layers[name].out, gi)))
        units.append(Unit(group.id, "group", int(group.stage), None, tuple(members)))
    return units


def _group_indices(segments: Sequence[tuple[int, int, int]], gi: int) -> tuple[int, ...]:
    """Positions along a dim laid out as ``(group index, size, mult)`` segments that belong to ``gi``."""
    out, offset = [], 0
    for g, size, mult in segments:
        width = size * mult
        if g == gi:
            out.extend(range(offset, offset + width))
        offset += width
    return tuple(out)


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from a tuple of names and numbers (stable across runs and platforms)."""
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


# ------------------------------------------------------------------ SR-init


def sr_init_overrides(model: nn.Module, unit: Unit, seed: int, initializer: Initializer) -> Overrides:
    """The unit redrawn by ``initializer`` with norms reset (SR-init); see the module docstring."""
    if unit.kind == "block":
        block = model.get_submodule(unit.id)
        fresh = _redrawn(block, initializer, derive_seed("sr-init", unit.id, seed))
        state = fresh.state_dict()
        device = device_of(block)
        return {
            f"{unit.id}.{k}": v.to(device)
            for k, v in state.items()
            if v.is_floating_point()  # num_batches_tracked is not a parameter of the function
        }
    out: Overrides = {}
    for m in unit.members:
        mod = model.get_submodule(m.module)
        fresh = _redrawn(mod, initializer, derive_seed("sr-init", unit.id, seed, m.module))
        idx = torch.tensor(m.channels, dtype=torch.long)
        for key, new in fresh.state_dict().items():
            if not new.is_floating_point() or new.dim() == 0:
                continue
            old = mod.state_dict()[key]
            axis = _out_axis(mod, key)
            merged = old.detach().cpu().clone()
            merged.index_copy_(axis, idx, new.index_select(axis, idx))
            out[f"{m.module}.{key}"] = merged.to(old.device)
    return out


def _redrawn(module: nn.Module, initializer: Initializer, seed: int) -> nn.Module:
    """A CPU copy of ``module``, re-initialized from ``seed``, with its norms reset."""
    fresh = copy.deepcopy(module).cpu()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        initializer(fresh)
        for m in fresh.modules():
            _reset_norm(m)
    return fresh


def _reset_norm(m: nn.Module) -> None:
    """gamma = 1, beta = 0, running mean 0, running var 1 (what SR-init prescribes)."""
    if not isinstance(m, _NORMS):
        return
    if getattr(m, "weight", None) is not None:
        nn.init.ones_(m.weight)
    if getattr(m, "bias", None) is not None:
        nn.init.zeros_(m.bias)
    if getattr(m, "running_mean", None) is not None:
        m.running_mean.zero_()
    if getattr(m, "running_var", None) is not None:
        m.running_var.fill_(1.0)


def _out_axis(mod: nn.Module, key: str) -> int:
    """The output-channel axis of ``mod``'s tensor ``key`` (1 for transposed conv weights)."""
    if key == "weight" and isinstance(mod, nn.modules.conv._ConvTransposeNd):
        return 1
    return 0


# ------------------------------------------------------------------- SBPF


def sbpf_overrides(model: nn.Module, unit: Unit, seed: int, sigma: float) -> Overrides:
    """The unit's weights with relative Gaussian damage (SBPF); see the module docstring."""
    out: Overrides = {}
    for name, mod, idx in _weighted_places(model, unit):
        w = mod.weight.detach()
        gen = torch.Generator().manual_seed(derive_seed("sbpf", unit.id, seed, repr(float(sigma)), name))
        axis = _out_axis(mod, "weight")
        rows = w.cpu() if idx is None else w.cpu().index_select(axis, idx)
        noise = torch.randn(rows.shape, generator=gen, dtype=rows.dtype)
        damaged = rows + noise * (float(sigma) * _std(rows))
        if idx is None:
            new = damaged
        else:
            new = w.cpu().clone()
            new.index_copy_(axis, idx, damaged)
        out[f"{name}.weight"] = new.to(w.device)
    return out


def _std(t: torch.Tensor) -> float:
    return float(t.float().std()) if t.numel() > 1 else 0.0


def _weighted_places(model: nn.Module, unit: Unit) -> list[tuple[str, nn.Module, torch.Tensor | None]]:
    """(name, conv/linear module, row indices or None for all) of the unit's weights."""
    if unit.kind == "block":
        block = model.get_submodule(unit.id)
        return [
            (f"{unit.id}.{n}", m, None)
            for n, m in block.named_modules()
            if isinstance(m, _WEIGHTED) and m.weight is not None and n
        ]
    return [
        (m.module, model.get_submodule(m.module), torch.tensor(m.channels, dtype=torch.long))
        for m in unit.members
        if m.kind == "weighted"
    ]


# ----------------------------------------------------------------- BN-gamma


def bn_gamma_value(model: nn.Module, unit: Unit) -> float:
    """Mean |gamma| over the unit's affine norm channels (NaN if it has none)."""
    parts: list[torch.Tensor] = []
    if unit.kind == "block":
        for m in model.get_submodule(unit.id).modules():
            if isinstance(m, _NORMS) and getattr(m, "weight", None) is not None:
                parts.append(m.weight.detach().abs().flatten().cpu())
    else:
        for mem in unit.members:
            mod = model.get_submodule(mem.module)
            if mem.kind == "norm" and getattr(mod, "weight", None) is not None:
                idx = torch.tensor(mem.channels, dtype=torch.long)
                parts.append(mod.weight.detach().cpu().index_select(0, idx).abs())
    if not parts:
        return float("nan")
    return float(torch.cat(parts).double().mean())
