"""Rules for ops that move, merge or reduce axes: where do the channels go?

``torch.cat`` along channels appends layouts (offsets); a reshape that merges the
channel axis with the dims after it (flatten before a classifier) repeats each
channel ``mult`` times; permutes, squeezes, indexing and reductions over other
axes move the channel axis. Ops that split, reorder, slice or reduce over the
channels freeze them.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F

from autoprune.fx.ops import REDUCE_FUNCS, REDUCE_METHODS, SOFTMAX_FUNCS, SOFTMAX_METHODS, SPATIAL_FUNCS
from autoprune.graph.elementwise import binary
from autoprune.graph.model import Attr, Seg, TInfo
from autoprune.graph.opaque import unknown
from autoprune.graph.state import FunctionRule, State, arg, op_name, pass_through, unknown_value

# -- concatenation and indexing -------------------------------------------------------


def cat(st: State, node: fx.Node) -> Any:
    infos = [st.info(t) for t in arg(node, 0, "tensors")]
    out = st.out_info(node, infos)
    if not all(isinstance(i, (TInfo, Attr)) for i in infos):
        return unknown(st, node, st.values[node], "torch.cat of unknown values")
    dim = arg(node, 1, "dim", 0) % len(out.shape)
    carriers = [i for i in infos if isinstance(i, TInfo) and i.layout is not None]
    if not carriers:
        return out
    if all(i.axis == dim for i in carriers):  # concatenation along channels: offsets
        segs: list[Seg] = []
        for i in infos:
            if isinstance(i, TInfo) and i.layout is not None:
                segs.extend(i.layout)
            else:
                segs.extend(st.fresh(i.shape[dim], "concatenated with a tensor of unknown channels"))
        out.axis, out.layout = dim, tuple(segs)
        return out
    axis = carriers[0].axis
    if all(isinstance(i, TInfo) and i.layout is not None and i.axis == axis for i in infos):
        layout = carriers[0].layout
        for i in infos[1:]:  # along another axis: the inputs' channels are the same channels
            layout = st.unify(layout, i.layout, f"torch.cat ({node.name})")
            layout = tuple(
                Seg(s.space, s.size, s.mult, s.live or t.live) for s, t in zip(layout, i.layout, strict=False)
            )
        out.axis, out.layout = axis, layout
        return out
    st.freeze(infos, f"torch.cat ({node.name}) mixes channel axes")
    return out


def getitem(st: State, node: fx.Node) -> Any:
    src, idx = st.info(node.args[0]), node.args[1]
    if isinstance(src, (tuple, list)):
        return src[idx] if isinstance(idx, (int, slice)) else None
    if not isinstance(src, TInfo):
        return unknown(st, node, st.values[node], "indexing")
    out = st.out_info(node, [src])
    if src.layout is None:
        return out
    items = idx if isinstance(idx, tuple) else (idx,)
    if any(isinstance(i, (fx.Node, list)) or hasattr(i, "shape") for i in items):
        st.freeze(src, f"indexing with tensors ({node.name})")
        return out
    new_axis, reason = _indexed_axis(src, items)
    if reason is not None:
        st.freeze(src, f"{reason} ({node.name})")
        return out
    out.axis, out.layout = new_axis, src.layout
    return out


def _indexed_axis(src: TInfo, items: tuple[Any, ...]) -> tuple[int | None, str | None]:
    """Where ``src[items]`` (ints, slices, None, Ellipsis) puts the channel axis, or why it
    cannot keep the channels whole."""
    n_consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
    in_dim, out_dim, new_axis = 0, 0, None
    for i in items:
        if i is Ellipsis:
            skip = len(src.shape) - n_consumed
            if in_dim <= src.axis < in_dim + skip:
                new_axis = out_dim + src.axis - in_dim
            in_dim, out_dim = in_dim + skip, out_dim + skip
        elif i is None:
            out_dim += 1
        elif isinstance(i, int):
            if in_dim == src.axis:
                return None, "indexing selects single channels"
            in_dim += 1
        elif isinstance(i, slice):
            if in_dim == src.axis:
                if i != slice(None) and (i.start, i.stop, i.step) != (None, None, None):
                    return None, "slicing the channel axis"
                new_axis = out_dim
            in_dim, out_dim = in_dim + 1, out_dim + 1
    if new_axis is None and src.axis >= in_dim:
        new_axis = out_dim + src.axis - in_dim
    return new_axis, None


# -- reshapes and axis moves ----------------------------------------------------------


def reshape(st: State, node: fx.Node, x: TInfo | None, out: TInfo, dynamic: bool) -> TInfo:
    """A reshape that merges the channel axis with the dims after it keeps channels intact."""
    if x is None or x.layout is None or x.axis is None:
        return out
    found = merged_channel_axis(x.shape, out.shape, x.axis)
    if found is None:
        st.freeze(x, f"reshape ({node.name}) splits or reorders the channel axis (e.g. channel shuffle)")
        return out
    if not dynamic:
        st.freeze(x, f"reshape ({node.name}) hard-codes the channel count")
        return out
    k, factor = found
    out.axis = k
    out.layout = tuple(Seg(g.space, g.size, g.mult * factor, g.live) for g in x.layout)
    return out


def reshape_call(st: State, node: fx.Node) -> Any:
    """``flatten``, ``view``, ``reshape`` as functions or methods."""
    x = st.src(node)
    out = st.out_info(node, [x])
    target = node.target
    dynamic = True
    if target in ("view", "reshape") or target is torch.reshape:
        sizes = list(node.args[1:]) if target != torch.reshape else [node.args[1]]
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = list(sizes[0])
        dynamic = _size_arg_is_dynamic(x, out, sizes)
    return reshape(st, node, x, out, dynamic)


def _size_arg_is_dynamic(x: TInfo | None, out: TInfo, sizes: list[Any]) -> bool:
    """The output size holding the channels must be -1 or computed, never a literal."""
    if x is None or x.axis is None or len(sizes) != len(out.shape):
        return True
    found = merged_channel_axis(x.shape, out.shape, x.axis)
    if found is None:
        return True
    k = found[0]
    return not (isinstance(sizes[k], int) and sizes[k] != -1)


def merged_channel_axis(s: tuple[int, ...], t: tuple[int, ...], a: int) -> tuple[int, int] | None:
    """For a reshape ``s -> t`` that keeps the dims before channel axis ``a`` and merges the
    channels with the dims right after it: (output axis, features per channel); else None."""
    c, lead = s[a], math.prod(s[:a])
    acc = 1
    for k in range(len(t)):
        if acc == lead and t[k] % c == 0:
            factor, j, merged = t[k] // c, a + 1, 1
            while j < len(s) and merged < factor:
                merged *= s[j]
                j += 1
            if merged == factor and math.prod(t[k + 1 :]) == math.prod(s[j:]):
                return k, factor
        acc *= t[k]
        if acc > lead:
            break
    return None


def _moves_channel_axis(where: Callable[[State, fx.Node, TInfo, TInfo], int | None]) -> FunctionRule:
    """The rule of an op that moves its one input's channel axis: ``where(st, node, x, out)`` is
    the output's channel axis, or None when the output carries no channels (frozen, squeezed)."""

    def rule(st: State, node: fx.Node) -> Any:
        x = st.src(node)
        out = st.out_info(node, [x])
        if x is None or x.layout is None:
            return out
        axis = where(st, node, x, out)
        if axis is not None:
            out.axis, out.layout = axis, x.layout
        return out

    return rule


@_moves_channel_axis
def permute(st: State, node: fx.Node, x: TInfo, out: TInfo) -> int | None:
    dims = list(node.args[1:]) if node.op == "call_method" else [node.args[1]]
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = list(dims[0])
    dims = [d % len(x.shape) for d in dims]
    return dims.index(x.axis)


@_moves_channel_axis
def transpose(st: State, node: fx.Node, x: TInfo, out: TInfo) -> int | None:
    d0, d1 = (arg(node, 1, "dim0") % len(x.shape)), (arg(node, 2, "dim1") % len(x.shape))
    return d1 if x.axis == d0 else d0 if x.axis == d1 else x.axis


@_moves_channel_axis
def squeeze(st: State, node: fx.Node, x: TInfo, out: TInfo) -> int | None:
    """``squeeze`` and ``unsqueeze``."""
    s, t = x.shape, out.shape
    if len(t) > len(s):  # unsqueeze(d)
        d = arg(node, 1, "dim") % len(t)
        return x.axis + (1 if d <= x.axis else 0)
    if s[x.axis] == 1:
        return None
    dims = arg(node, 1, "dim")
    if dims is None:
        dims = [i for i, n in enumerate(s) if n == 1]
    dims = [d % len(s) for d in (dims if isinstance(dims, (tuple, list)) else [dims]) if s[d] == 1]
    return x.axis - sum(1 for d in dims if d < x.axis)


@_moves_channel_axis
def expand(st: State, node: fx.Node, x: TInfo, out: TInfo) -> int | None:
    axis = x.axis + len(out.shape) - len(x.shape)
    if out.shape[axis] != x.shape[x.axis]:
        st.freeze(x, f"expand ({node.name}) broadcasts channels")
        return None
    return axis


# -- ops along other axes: pools, padding, softmax, reductions ------------------------


def spatial(st: State, node: fx.Node) -> Any:
    """Pools and resampling: channel i in, channel i out."""
    x = st.src(node)
    out = st.out_info(node, [x])
    value = st.values[node]
    if isinstance(value, (tuple, list)):  # pools with return_indices
        return unknown(st, node, value, f"{op_name(node)} returning indices")
    if x is None or x.axis != 1 or len(out.shape) != len(x.shape) or out.shape[1] != x.shape[1]:
        return unknown(st, node, value, f"{op_name(node)} on an unexpected layout")
    return pass_through(x, out)


def pad(st: State, node: fx.Node) -> Any:
    x = st.src(node)
    widths = arg(node, 1, "pad")
    mode = arg(node, 2, "mode", "constant")
    value = arg(node, 3, "value", None)
    if x is None or not isinstance(widths, (tuple, list)):
        return unknown(st, node, st.values[node], "F.pad")
    out = st.out_info(node, [x])
    if x.axis is not None and len(widths) // 2 > len(x.shape) - 1 - x.axis:
        st.freeze(x, "F.pad pads the channel axis")
        return out
    live = "padding with a non-zero constant" if mode == "constant" and value not in (None, 0, 0.0) else None
    return pass_through(x, out, live)


def softmax(st: State, node: fx.Node) -> Any:
    x = st.src(node)
    dim = arg(node, 1, "dim")
    if x is None:
        return unknown(st, node, st.values[node], op_name(node))
    out = st.out_info(node, [x])
    if dim is None or (x.axis is not None and dim % len(x.shape) == x.axis):
        st.freeze(x, f"{op_name(node)} normalizes across channels")
        return out
    return pass_through(x, out, f"{op_name(node)} of 0 is not 0")


@_moves_channel_axis
def reduce(st: State, node: fx.Node, x: TInfo, out: TInfo) -> int | None:
    """``mean``, ``sum``, ... over dims other than the channels."""
    dims = arg(node, 1, "dim")
    keep = arg(node, 2, "keepdim", False)
    if dims is None:
        st.freeze(x, f"{op_name(node)} reduces over channels")
        return None
    dims = [d % len(x.shape) for d in (dims if isinstance(dims, (tuple, list)) else [dims])]
    if x.axis in dims:
        st.freeze(x, f"{op_name(node)} reduces over channels")
        return None
    return x.axis if keep else x.axis - sum(1 for d in dims if d < x.axis)


def max_min(st: State, node: fx.Node) -> Any:
    """``max``/``min``: elementwise with a tensor, or over one dim (values, indices)."""
    second = arg(node, 1, "dim", arg(node, 1, "other"))
    if isinstance(second, fx.Node):
        return binary(st, node, "add")
    if second is None:
        return unknown(st, node, st.values[node], f"{op_name(node)} over all elements")
    x = st.src(node)
    value = st.values[node]
    if x is None or x.layout is None:
        return unknown_value(value, x.ctx if x else 0)
    d = second % len(x.shape)
    if d == x.axis:
        return unknown(st, node, value, f"{op_name(node)} over channels")
    keep = arg(node, 2, "keepdim", False)
    axis = x.axis if keep else x.axis - (1 if d < x.axis else 0)
    vals = TInfo(tuple(value[0].shape), axis, x.layout, x.ctx)
    idx = TInfo(tuple(value[1].shape), None, None, x.ctx)
    return (vals, idx)


# -- registration ---------------------------------------------------------------------

FUNCTIONS: dict[Any, FunctionRule] = {
    **dict.fromkeys((torch.cat, torch.concat, torch.concatenate), cat),
    **dict.fromkeys((torch.flatten, torch.reshape), reshape_call),
    operator.getitem: getitem,
    torch.permute: permute,
    torch.transpose: transpose,
    **dict.fromkeys((torch.unsqueeze, torch.squeeze), squeeze),
    **dict.fromkeys(SPATIAL_FUNCS, spatial),
    F.pad: pad,
    **dict.fromkeys(SOFTMAX_FUNCS, softmax),
    **dict.fromkeys(REDUCE_FUNCS, reduce),
    **dict.fromkeys((torch.max, torch.min), max_min),
}
METHODS: dict[str, FunctionRule] = {
    **dict.fromkeys(("flatten", "view", "reshape"), reshape_call),
    "permute": permute,
    "transpose": transpose,
    **dict.fromkeys(("unsqueeze", "squeeze"), squeeze),
    **dict.fromkeys(("expand", "expand_as"), expand),
    **dict.fromkeys(SOFTMAX_METHODS, softmax),
    **dict.fromkeys(REDUCE_METHODS, reduce),
    **dict.fromkeys(("max", "min"), max_min),
}
