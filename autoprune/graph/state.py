"""What the channel walk knows so far, and the operations every op rule uses.

A rule reads its inputs' :class:`TInfo` (:meth:`State.info`, :meth:`State.src`),
makes its output's TInfo (:meth:`State.out_info`) and gives it a layout: passed
through (:func:`pass_through`), fresh (a conv's output), or coupled with another
(:meth:`State.unify`). Whatever a rule cannot map exactly it freezes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from autoprune.graph.model import Layer, Layout, Seg, Spaces, TInfo, layout_width

FunctionRule = Callable[["State", fx.Node], Any]
"""A rule for a call_function / call_method node: returns the node's descriptor."""
ModuleRule = Callable[["State", fx.Node, str, nn.Module, TInfo, TInfo], Any]
"""A rule for a call_module node: (state, node, qualified name, module, input, blank output)."""


class State:
    """The traced graph, every node's value and descriptor so far, and the results being built."""

    def __init__(
        self, gm: fx.GraphModule, values: dict[fx.Node, Any], calls: dict[str, int], device: torch.device
    ) -> None:
        self.device = device
        self.gm = gm
        self.values = values
        self.calls = calls
        self.spaces = Spaces()
        self.layers: dict[str, Layer] = {}
        self.frozen_modules: dict[str, str] = {}
        self.desc: dict[fx.Node, Any] = {}
        self.extra_macs: list[tuple[str, int]] = []
        self.batch = 1
        self.input_shape: tuple[int, ...] = ()

    # -- layouts ---------------------------------------------------------------

    def fresh(self, size: int, reason: str | None = None, producer: str | None = None) -> Layout:
        return (Seg(self.spaces.new(size, producer, reason), size),)

    def freeze(self, obj: Any, reason: str) -> None:
        """Freeze every space in a layout, TInfo or nested structure of them."""
        if isinstance(obj, tuple) and obj and isinstance(obj[0], Seg):
            for s in obj:
                self.spaces.freeze(s.space, reason)
        elif isinstance(obj, TInfo):
            if obj.layout is not None:
                self.freeze(obj.layout, reason)
        elif isinstance(obj, (tuple, list)):
            for o in obj:
                self.freeze(o, reason)
        elif isinstance(obj, dict):
            for o in obj.values():
                self.freeze(o, reason)

    def unify(self, a: Layout, b: Layout, where: str) -> Layout:
        """Couple two layouts elementwise (channel i of one is channel i of the other)."""
        if len(a) == len(b) and all(
            x.size == y.size and x.mult == y.mult for x, y in zip(a, b, strict=False)
        ):
            for x, y in zip(a, b, strict=False):
                self.spaces.union(x.space, y.space)
            return a
        self.freeze(a, f"{where} combines channels laid out differently")
        self.freeze(b, f"{where} combines channels laid out differently")
        return a

    def check_zero(self, layout: Layout, consumer: str) -> None:
        """A consumer that would see removed channels as non-zero freezes them."""
        for s in layout:
            if s.live is not None:
                self.spaces.freeze(s.space, f"removed channels would reach {consumer} as non-zero ({s.live})")

    def layout_on(self, t: Any, axis: int, width: int, consumer: str) -> Layout:
        """``t``'s layout on ``axis`` (which must hold ``width`` features), or a frozen one."""
        if isinstance(t, TInfo) and t.layout is not None:
            if t.axis == axis % len(t.shape) and layout_width(t.layout) == width:
                return t.layout
            self.freeze(t.layout, f"channels reach {consumer} on an unexpected axis")
        return self.fresh(width, f"{consumer} reads channels of unknown origin")

    # -- layers ----------------------------------------------------------------

    def layer(self, name: str, kind: str, node: fx.Node, **kw: Any) -> Layer:
        if name not in self.layers:
            self.layers[name] = Layer(name, kind, len(self.layers), node=node.name, **kw)
        return self.layers[name]

    def join_dim(self, layer: Layer, dim: str, layout: Layout) -> Layout:
        """Record ``layout`` for a layer dim; a repeated call (shared module) unifies."""
        old = getattr(layer, dim)
        if old is None:
            setattr(layer, dim, with_live(layout, None))
            return layout
        self.unify(old, layout, f"shared module {layer.name}")
        return old

    # -- node values -----------------------------------------------------------

    def info(self, arg: Any) -> Any:
        """The analysis value of a node argument (TInfo, Attr, tuple, or a python value)."""
        if isinstance(arg, fx.Node):
            return self.desc.get(arg)
        return arg

    def src(self, node: fx.Node) -> TInfo | None:
        """The descriptor of an op's first (``input``) argument when it is a tensor."""
        x = self.info(node.args[0]) if node.args else self.info(node.kwargs.get("input"))
        return x if isinstance(x, TInfo) else None

    def shape_of(self, node: fx.Node) -> tuple[int, ...] | None:
        v = self.values.get(node)
        return tuple(v.shape) if isinstance(v, torch.Tensor) else None

    def ctx_of(self, node: fx.Node, inputs: Iterable[Any]) -> int:
        shape = self.shape_of(node)
        if shape is not None and len(shape) >= 3 and math.prod(shape[2:]) > 1:
            return math.prod(shape[2:])
        ctxs = [i.ctx for i in inputs if isinstance(i, TInfo) and i.ctx]
        return min(ctxs) if ctxs else 0

    def out_info(self, node: fx.Node, inputs: Iterable[Any]) -> TInfo:
        """The node's output descriptor, without a layout yet."""
        return TInfo(self.shape_of(node) or (), None, None, self.ctx_of(node, list(inputs)))

    def input_infos(self, node: fx.Node) -> list[TInfo]:
        out = []
        for a in flatten_args((node.args, node.kwargs)):
            v = self.info(a)
            for x in flatten_args(v) if isinstance(v, (tuple, list)) else (v,):
                if isinstance(x, TInfo):
                    out.append(x)
        return out


def with_live(layout: Layout, live: str | None) -> Layout:
    return tuple(Seg(s.space, s.size, s.mult, live) for s in layout)


def mark_live(layout: Layout, live: str) -> Layout:
    """Removed channels of ``layout`` would be non-zero from here on (first reason kept)."""
    return tuple(Seg(s.space, s.size, s.mult, s.live or live) for s in layout)


def pass_through(x: TInfo, out: TInfo, live: str | None = None) -> TInfo:
    """``out`` keeps ``x``'s channels on the same axis (optionally made non-zero by ``live``)."""
    if x.layout is not None and x.axis is not None and len(x.shape) == len(out.shape):
        out.axis = x.axis
        out.layout = x.layout if live is None else mark_live(x.layout, live)
    return out


def unknown_value(value: Any, ctx: int) -> Any:
    """A descriptor without channel knowledge, mirroring the structure of ``value``."""
    if isinstance(value, torch.Tensor):
        return TInfo(tuple(value.shape), None, None, ctx)
    if isinstance(value, (tuple, list)):
        return tuple(unknown_value(v, ctx) for v in value)
    return None


def arg(node: fx.Node, i: int, key: str, default: Any = None) -> Any:
    """Argument ``i`` of a call, given positionally or as ``key``."""
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(key, default)


def op_name(node: fx.Node) -> str:
    t = node.target
    if node.op == "call_method":
        return f"Tensor.{t}"
    return getattr(t, "__name__", str(t))


def flatten_args(obj: Any) -> Iterable[Any]:
    if isinstance(obj, (tuple, list)):
        for o in obj:
            yield from flatten_args(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from flatten_args(o)
    else:
        yield obj
