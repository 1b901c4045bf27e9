"""Rules for leaf module calls: convs and linears open spaces, norms and activations pass them on.

:data:`MODULE_RULES` maps module families to rules, in order (first match wins);
:func:`visit_module` checks the call and dispatches. A module no rule covers is
recorded in ``frozen_modules`` and handled by :func:`~autoprune.graph.opaque.unknown`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils import parametrize

from autoprune.errors import AutopruneError
from autoprune.fx.ops import (
    CHANNEL_NORM_MODULES,
    CONSTANT_PAD_MODULES,
    CONV_MODULES,
    CONV_TRANSPOSE_MODULES,
    NONZERO_AT_ZERO_MODULES,
    SOFTMAX_MODULES,
    SPATIAL_MODULES,
    ZERO_PRESERVING_MODULES,
)
from autoprune.graph.model import Seg, TInfo
from autoprune.graph.opaque import unknown
from autoprune.graph.shape_rules import reshape
from autoprune.graph.state import ModuleRule, State, mark_live, pass_through, with_live


def visit_module(st: State, node: fx.Node, value: Any) -> Any:
    """The descriptor of a ``call_module`` node."""
    name = str(node.target)
    mod = st.gm.get_submodule(name)
    x = st.info(node.args[0]) if node.args else None
    kind = type(mod).__name__
    if not isinstance(value, torch.Tensor) or not isinstance(x, TInfo) or len(node.args) != 1 or node.kwargs:
        st.frozen_modules.setdefault(name, f"unsupported call signature of {kind}")
        return unknown(st, node, value, f"module {name} ({kind})")
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in mod.parameters(recurse=False)):
        raise AutopruneError(f"module {name} has uninitialized (lazy) parameters: run one forward first")
    out = TInfo(tuple(value.shape), None, None, st.ctx_of(node, [x]))
    if parametrize.is_parametrized(mod):
        st.frozen_modules.setdefault(name, "parametrized weights (e.g. weight norm) are not pruned")
        return unknown(st, node, value, f"module {name} with parametrized weights")
    rule = rule_for(type(mod))
    if rule is None:
        st.frozen_modules.setdefault(name, f"unsupported module type {kind}")
        return unknown(st, node, value, f"module {name} ({kind})")
    return rule(st, node, name, mod, x, out)


# -- layers with weights ------------------------------------------------------------


def conv(st: State, node: fx.Node, name: str, mod: nn.Conv2d, x: TInfo, out: TInfo) -> TInfo:
    inp = st.layout_on(x, 1, mod.in_channels, name)
    groups = mod.groups
    depthwise = groups > 1 and groups == mod.in_channels
    if not depthwise:  # depthwise: a removed input is a removed output
        st.check_zero(inp, name)
    layer = st.layer(name, "conv", node, kernel=math.prod(mod.kernel_size))
    layer.positions.append(math.prod(out.shape[2:]))
    out.axis = 1
    if depthwise:  # possibly with a channel multiplier
        layer.depthwise = True
        k = mod.out_channels // mod.in_channels
        inp = st.join_dim(layer, "inp", inp)
        out.layout = st.join_dim(layer, "out", tuple(Seg(s.space, s.size, s.mult * k) for s in inp))
        return out
    if groups > 1:
        layer.conv_groups = groups
        if len(inp) == 1 and inp[0].mult == 1:
            st.spaces.require_blocks(inp[0].space, groups)
        else:
            st.freeze(inp, f"grouped conv {name} reads concatenated or repeated channels")
    st.join_dim(layer, "inp", inp)
    if layer.out is None:
        layer.out = st.fresh(mod.out_channels, producer=name)
        if groups > 1:
            st.spaces.require_blocks(layer.out[0].space, groups)
    out.layout = layer.out
    return out


def conv_transpose(st: State, node: fx.Node, name: str, mod: nn.Module, x: TInfo, out: TInfo) -> Any:
    if mod.groups != 1:
        st.frozen_modules.setdefault(name, "grouped transposed conv is not supported")
        return unknown(st, node, st.values[node], f"module {name} (grouped ConvTranspose)")
    inp = st.layout_on(x, 1, mod.in_channels, name)
    st.check_zero(inp, name)
    layer = st.layer(name, "conv", node, kernel=math.prod(mod.kernel_size), transposed=True)
    # FlopCounterMode counts a transposed conv by its input positions.
    layer.positions.append(math.prod(x.shape[2:]))
    st.join_dim(layer, "inp", inp)
    if layer.out is None:
        layer.out = st.fresh(mod.out_channels, producer=name)
    out.axis, out.layout = 1, layer.out
    return out


def linear(st: State, node: fx.Node, name: str, mod: nn.Linear, x: TInfo, out: TInfo) -> TInfo:
    inp = st.layout_on(x, len(x.shape) - 1, mod.in_features, name)
    st.check_zero(inp, name)
    layer = st.layer(name, "linear", node)
    layer.positions.append(math.prod(out.shape[:-1]) // max(st.batch, 1))
    st.join_dim(layer, "inp", inp)
    if layer.out is None:
        layer.out = st.fresh(mod.out_features, producer=name)
    out.axis, out.layout = len(out.shape) - 1, layer.out
    return out


def prelu(st: State, node: fx.Node, name: str, mod: nn.PReLU, x: TInfo, out: TInfo) -> TInfo:
    if mod.num_parameters == 1:
        return pass_through(x, out)
    layout = st.layout_on(x, 1, mod.num_parameters, name)
    st.join_dim(st.layer(name, "scale", node), "out", layout)
    out.axis, out.layout = 1, layout
    return out


# -- norms ------------------------------------------------------------------------


def channel_norm(st: State, node: fx.Node, name: str, mod: nn.Module, x: TInfo, out: TInfo) -> TInfo:
    """BatchNorm, InstanceNorm, and GroupNorm with one channel per group."""
    if isinstance(mod, nn.GroupNorm) and mod.num_groups != mod.num_channels:
        st.freeze(x, f"GroupNorm {name} normalizes across channels")
        st.frozen_modules.setdefault(name, "GroupNorm with several channels per group")
        return pass_through(x, out, live="GroupNorm")
    width = mod.num_channels if isinstance(mod, nn.GroupNorm) else mod.num_features
    layout = st.layout_on(x, 1, width, name)
    affine = bool(getattr(mod, "affine", False))
    stats = bool(getattr(mod, "track_running_stats", False))
    if affine or stats:
        layout = st.join_dim(st.layer(name, "norm", node), "out", layout)
    live = None
    if not affine and stats:
        live = f"{type(mod).__name__} without affine shifts zeros by its running mean"
    out.axis = 1
    out.layout = with_live(layout, live) if affine else mark_live(layout, live) if live else layout
    return out


def layer_norm(st: State, node: fx.Node, name: str, mod: nn.LayerNorm, x: TInfo, out: TInfo) -> TInfo:
    n = len(mod.normalized_shape)
    if x.axis is not None and x.axis >= len(x.shape) - n:
        st.freeze(x, f"LayerNorm {name} normalizes across channels")
        return pass_through(x, out, live="LayerNorm")
    return pass_through(x, out, live="LayerNorm shifts zeros")


def softmax(st: State, node: fx.Node, name: str, mod: nn.Module, x: TInfo, out: TInfo) -> TInfo:
    dim = mod.dim if mod.dim is not None else 1
    if x.axis is not None and dim % len(x.shape) == x.axis:
        st.freeze(x, f"{type(mod).__name__} {name} normalizes across channels")
        return out
    return pass_through(x, out, live=f"{type(mod).__name__} of 0 is not 0")


# -- channel-preserving modules -------------------------------------------------------


def zero_preserving(st: State, node: fx.Node, name: str, mod: nn.Module, x: TInfo, out: TInfo) -> TInfo:
    return pass_through(x, out)


def nonzero_at_zero(st: State, node: fx.Node, name: str, mod: nn.Module, x: TInfo, out: TInfo) -> TInfo:
    return pass_through(x, out, live=f"{type(mod).__name__} of 0 is not 0")


def hardtanh(st: State, node: fx.Node, name: str, mod: nn.Hardtanh, x: TInfo, out: TInfo) -> TInfo:
    ok = mod.min_val <= 0 <= mod.max_val
    return pass_through(x, out, None if ok else f"{type(mod).__name__} of 0 is not 0")


def spatial(st: State, node: fx.Node, name: str, mod: nn.Module, x: TInfo, out: TInfo) -> Any:
    if x.axis != 1 or len(x.shape) != len(out.shape) or x.shape[1] != out.shape[1]:
        st.frozen_modules.setdefault(name, f"{type(mod).__name__} changes the channel axis")
        return unknown(st, node, st.values[node], f"module {name}")
    live = None
    if isinstance(mod, CONSTANT_PAD_MODULES) and mod.value != 0:
        live = "padding with a non-zero constant"
    return pass_through(x, out, live)


def flatten(st: State, node: fx.Node, name: str, mod: nn.Module, x: TInfo, out: TInfo) -> TInfo:
    return reshape(st, node, x, out, dynamic=True)


MODULE_RULES: tuple[tuple[tuple[type[nn.Module], ...], ModuleRule], ...] = (
    (CONV_MODULES, conv),
    (CONV_TRANSPOSE_MODULES, conv_transpose),
    ((nn.Linear,), linear),
    (CHANNEL_NORM_MODULES, channel_norm),
    ((nn.LayerNorm,), layer_norm),
    ((nn.PReLU,), prelu),
    ((nn.Hardtanh,), hardtanh),  # ReLU6 included
    (ZERO_PRESERVING_MODULES, zero_preserving),
    (NONZERO_AT_ZERO_MODULES, nonzero_at_zero),
    (SPATIAL_MODULES, spatial),
    (CONSTANT_PAD_MODULES, spatial),
    ((nn.Flatten,), flatten),
    (SOFTMAX_MODULES, softmax),
)
"""Module families and their rules; the first family a module belongs to decides."""


@functools.cache
def rule_for(cls: type[nn.Module]) -> ModuleRule | None:
    """The rule for modules of class ``cls`` (subclasses included), or None."""
    return next((rule for family, rule in MODULE_RULES if issubclass(cls, family)), None)
