"""Rules for elementwise ops: unary ops pass channels on, binary ops couple them.

A binary op between two tensors carrying channels on the same axis (a residual
sum, an SE gate multiply) unifies their spaces: channel i of one is channel i of
the other. The op kind says what happens to a removed (zero) channel: ``add``
keeps the other operand's value, ``mul`` gives zero, ``div`` must never divide
by a removed channel.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F

from autoprune.fx.ops import (
    ADD_FUNCS,
    BINARY_METHODS,
    DIV_FUNCS,
    ELEMENTWISE_MAX_FUNCS,
    MUL_FUNCS,
    NONZERO_AT_ZERO_FUNCS,
    NONZERO_AT_ZERO_METHODS,
    ZERO_PRESERVING_FUNCS,
    ZERO_PRESERVING_METHODS,
)
from autoprune.graph.model import Attr, Layout, Seg, TInfo, layout_width
from autoprune.graph.opaque import unknown
from autoprune.graph.state import FunctionRule, State, arg, mark_live, op_name, pass_through

# -- unary --------------------------------------------------------------------------


def unary(st: State, node: fx.Node, live: str | None = None) -> Any:
    """A zero-preserving elementwise op (``live``: the reason it is not)."""
    x = st.src(node)
    if x is None:
        return unknown(st, node, st.values[node], op_name(node))
    return pass_through(x, st.out_info(node, [x]), live)


def nonzero_at_zero(st: State, node: fx.Node) -> Any:
    return unary(st, node, live=f"{op_name(node)} of 0 is not 0")


def clamp(st: State, node: fx.Node) -> Any:
    lo, hi = arg(node, 1, "min"), arg(node, 2, "max")
    if node.target is F.hardtanh:
        lo, hi = arg(node, 1, "min_val", -1.0), arg(node, 2, "max_val", 1.0)
    if isinstance(lo, fx.Node) or isinstance(hi, fx.Node):
        return unknown(st, node, st.values[node], f"{op_name(node)} with tensor bounds")
    ok = (lo is None or lo <= 0) and (hi is None or hi >= 0)
    return unary(st, node, None if ok else f"{op_name(node)} moves 0")


def stochastic_depth(st: State, node: fx.Node) -> Any:
    if arg(node, 3, "training", True) is False:
        return unary(st, node)
    return unknown(st, node, st.values[node], "stochastic depth in training mode")


# -- binary -------------------------------------------------------------------------


def binary(st: State, node: fx.Node, kind: str) -> Any:
    """``input <op> other`` where ``kind`` is ``add``, ``mul`` or ``div``."""
    a = st.info(arg(node, 0, "input"))
    b = st.info(arg(node, 1, "other"))
    out = st.out_info(node, [a, b])
    nd = len(out.shape)
    carriers = [t for t in (a, b) if isinstance(t, TInfo) and t.layout is not None and t.axis is not None]
    if not carriers:
        for t in (a, b):
            if isinstance(t, TInfo) and t.layout is not None:
                st.freeze(t, f"{op_name(node)} with channels on no known axis")
        return out
    main = carriers[0]
    other, other_is_rhs = (b, True) if main is a else (a, False)
    axis = main.axis + nd - len(main.shape)
    out.axis, out.layout = axis, combine(st, node, kind, main.layout, axis, nd, other, other_is_rhs)
    return out


def combine(
    st: State, node: fx.Node, kind: str, layout: Layout, axis: int, nd: int, other: Any, other_is_rhs: bool
) -> Layout:
    """Fold one more operand into an elementwise op's output layout."""
    where = f"{op_name(node)} ({node.name})"
    if other is None or isinstance(other, (int, float, bool)):  # python scalar
        if kind == "add" and other not in (0, 0.0, None):
            return mark_live(layout, f"{where} adds a constant")
        if kind == "div" and not other_is_rhs:
            return mark_live(layout, f"{where} divides a constant by channels")
        return layout
    if isinstance(other, Attr):
        return _with_attr(st, node, kind, layout, axis, nd, other, other_is_rhs)
    if not isinstance(other, TInfo):
        st.freeze(layout, f"{where} with an operand of unknown kind")
        return layout
    return _with_tensor(st, node, kind, layout, axis, nd, other, other_is_rhs)


def _operand_axis(node: fx.Node, axis: int, nd: int, shape: tuple[int, ...]) -> tuple[str, int, int]:
    """(where, k, size): the node for messages, the other operand's dim ``k`` that broadcasts
    against channel ``axis`` of the ``nd``-dim result, and its size there (1 when it has none)."""
    k = axis - (nd - len(shape))
    return f"{op_name(node)} ({node.name})", k, shape[k] if 0 <= k < len(shape) else 1


def _with_attr(
    st: State, node: fx.Node, kind: str, layout: Layout, axis: int, nd: int, other: Attr, other_is_rhs: bool
) -> Layout:
    """An operand that is a parameter or buffer: per channel, it is sliced with the channels."""
    where, k, size = _operand_axis(node, axis, nd, other.shape)
    if size == 1:
        return mark_live(layout, f"{where} adds a tensor") if kind == "add" else layout
    if size != layout_width(layout) or kind == "div" and other_is_rhs:
        st.freeze(layout, f"{where} with tensor {other.name} of unexpected shape")
        return layout
    st.join_dim(st.layer(other.name, "tensor", node, axis=k), "out", layout)
    return layout


def _with_tensor(
    st: State, node: fx.Node, kind: str, layout: Layout, axis: int, nd: int, other: TInfo, other_is_rhs: bool
) -> Layout:
    """An operand computed by the graph: broadcast over the channels, or coupled with them."""
    where, k, size = _operand_axis(node, axis, nd, other.shape)
    o_axis = None if other.axis is None else other.axis + nd - len(other.shape)
    if size == 1:
        if other.layout is not None and o_axis != axis:
            st.freeze(other, f"{where} broadcasts those channels over another tensor")
        return mark_live(layout, f"{where} adds a tensor") if kind == "add" else layout
    if other.layout is None or o_axis != axis or layout_width(other.layout) != layout_width(layout):
        st.freeze(layout, f"{where} combines them with a tensor of unknown channel order")
        if other.layout is not None:
            st.freeze(other, f"{where} combines channels on different axes")
        return layout
    merged = st.unify(layout, other.layout, where)
    lives = _combined_lives(st, kind, layout, other.layout, other_is_rhs, where)
    if len(lives) != len(merged):
        return merged
    return tuple(Seg(s.space, s.size, s.mult, lv) for s, lv in zip(merged, lives, strict=False))


def _combined_lives(
    st: State, kind: str, layout: Layout, other: Layout, other_is_rhs: bool, where: str
) -> list[str | None]:
    """Per segment: why removed channels would be non-zero after the op (None: they are zero)."""
    lives = []
    for x, y in zip(layout, other, strict=False):
        if kind == "add":
            lives.append(x.live or y.live)
        elif kind == "mul":
            lives.append(None if x.live is None or y.live is None else x.live)
        else:  # div: numerator keeps zeros; a zero divisor would give inf/nan
            num, den = (x, y) if other_is_rhs else (y, x)
            if den.live is None:
                st.spaces.freeze(den.space, f"{where} divides by channels that would be removed")
            lives.append(num.live)
    return lives


# -- registration ---------------------------------------------------------------------

_ADD = functools.partial(binary, kind="add")
_MUL = functools.partial(binary, kind="mul")
_DIV = functools.partial(binary, kind="div")
_BY_KIND = {"add": _ADD, "mul": _MUL, "div": _DIV}

FUNCTIONS: dict[Any, FunctionRule] = {
    **dict.fromkeys(ZERO_PRESERVING_FUNCS, unary),
    **dict.fromkeys(NONZERO_AT_ZERO_FUNCS, nonzero_at_zero),
    **dict.fromkeys(ADD_FUNCS | ELEMENTWISE_MAX_FUNCS, _ADD),
    **dict.fromkeys(MUL_FUNCS, _MUL),
    **dict.fromkeys(DIV_FUNCS, _DIV),
    **dict.fromkeys((torch.clamp, torch.clip, F.hardtanh), clamp),
}
METHODS: dict[str, FunctionRule] = {
    **dict.fromkeys(ZERO_PRESERVING_METHODS, unary),
    **dict.fromkeys(NONZERO_AT_ZERO_METHODS, nonzero_at_zero),
    **{m: _BY_KIND[kind] for m, kind in BINARY_METHODS.items()},
    **dict.fromkeys(("clamp", "clamp_", "clip"), clamp),
}
NAMED_FUNCTIONS: dict[str, FunctionRule] = {"stochastic_depth": stochastic_depth}
"""Rules for functions matched by ``__name__`` (torchvision's ``stochastic_depth`` is fx-wrapped)."""
