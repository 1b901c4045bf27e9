"""Channel-dependency analysis: which channels of a model must be removed together.

The model is traced with torch.fx (each leaf module call and tensor op becomes a
node) and the shapes of every node are propagated on the ``meta`` device (no
arithmetic, so it is fast even for big inputs). Then every node's *channel
layout* is derived in graph order:

* a conv/linear output opens a fresh **space** (its channels, indexed 0..C-1);
* a tensor's channel axis is a concatenation of spaces (``torch.cat`` appends,
  ``flatten`` repeats each channel H·W times: ``Seg.mult``);
* an elementwise op between two tensors (residual add, SE gate multiply, ...)
  unifies their spaces: channel i of one is channel i of the other.

Unified spaces (a union-find) are the channel **groups** of
:mod:`autoprune.space`. Anything this module does not understand *freezes* the
spaces that reach it, with the reason (fail closed: an unknown op can shrink the
search space, never produce a wrong model).

Exactness bookkeeping: a removed channel must be *exactly zero* wherever a
conv/linear consumes it (then deleting its weights changes nothing). Each segment
carries ``live``: None while the removed channels would be zero there (the
dead-channel model zeroes the producer's rows and the norms' γ and β), otherwise
the reason they would not be (``sigmoid``, ``x + 3``, BN without affine). A
consumer that sees a non-zero removed channel freezes its group.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrize

from autoprune.errors import AutopruneError
from autoprune.flops import counted_macs

# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Seg:
    """``size`` channels of one space, each repeated ``mult`` times along the axis."""

    space: int
    size: int
    mult: int = 1
    live: str | None = None

    @property
    def width(self) -> int:
        return self.size * self.mult


Layout = tuple[Seg, ...]


def layout_width(layout: Layout) -> int:
    return sum(s.width for s in layout)


@dataclass
class TInfo:
    """What the analysis knows about one tensor: its shape and channel layout."""

    shape: tuple[int, ...]
    axis: int | None = None
    layout: Layout | None = None
    ctx: int = 0  # spatial size of the resolution stage this tensor belongs to


@dataclass(frozen=True)
class Attr:
    """A parameter or buffer fetched directly by the forward code (``self.scale * x``)."""

    name: str
    shape: tuple[int, ...]
    is_param: bool


@dataclass
class Layer:
    """One module (or directly used tensor attribute) whose channel dims follow layouts.

    kind: ``conv`` / ``linear`` (weight rows = out, columns = in), ``norm``
    (per-channel affine and running stats), ``scale`` (PReLU weight) or
    ``tensor`` (an attribute sliced along ``axis``).
    """

    name: str
    kind: str
    order: int
    out: Layout | None = None
    inp: Layout | None = None
    depthwise: bool = False
    conv_groups: int = 1  # groups of a non-depthwise grouped conv (balanced pruning)
    transposed: bool = False
    kernel: int = 1
    positions: list[int] = field(default_factory=list)  # output positions per sample, per call
    axis: int = 0
    node: str = ""  # fx node name of the first call (its output tensor's ctx gives the stage)


@dataclass
class BlockInfo:
    """A module holding one residual sum ``branch(x) + shortcut(x)``."""

    name: str
    ctx: int
    removable: bool
    branch_end: str | None  # module whose zeroed weights make the branch output zero


class Spaces:
    """Union-find over channel spaces with frozen reasons and balanced-block constraints."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.producer: list[str | None] = []
        self.reason: dict[int, str] = {}
        self.blocks: dict[int, int] = {}

    def new(self, size: int, producer: str | None = None, frozen: str | None = None) -> int:
        i = len(self.parent)
        self.parent.append(i)
        self.size.append(size)
        self.producer.append(producer)
        if frozen is not None:
            self.reason[i] = frozen
        return i

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        if self.size[ra] != self.size[rb]:  # cannot happen for well-formed graphs; stay safe
            self.reason.setdefault(ra, "channel counts disagree between coupled layers")
        if rb in self.reason:
            self.reason.setdefault(ra, self.reason.pop(rb))
        if rb in self.blocks:
            self.require_blocks(ra, self.blocks.pop(rb))

    def freeze(self, i: int, reason: str) -> None:
        self.reason.setdefault(self.find(i), reason)

    def frozen(self, i: int) -> str | None:
        return self.reason.get(self.find(i))

    def require_blocks(self, i: int, n: int) -> None:
        """Channels must be kept in equal numbers from ``n`` equal contiguous blocks."""
        r = self.find(i)
        cur = self.blocks.get(r, 1)
        new = cur * n // math.gcd(cur, n)
        if self.size[r] % new:
            self.freeze(r, f"grouped convs need counts divisible by {new}, impossible for {self.size[r]}")
            return
        self.blocks[r] = new


@dataclass
class Analysis:
    """Everything :class:`autoprune.space.PruningSpace` needs from one traced model."""

    spaces: Spaces
    layers: dict[str, Layer]
    frozen_modules: dict[str, str]
    blocks: list[BlockInfo]
    node_ctx: dict[str, int]
    extra_macs: list[tuple[str, int]]  # (scope, MACs per sample) of functional conv/matmul ops
    batch: int
    input_shape: tuple[int, ...]


# ----------------------------------------------------------------------- tracing


class _ScopedTracer(fx.Tracer):
    """The default fx tracer that also records which module each node was created in."""

    def __init__(self) -> None:
        super().__init__()
        self._ap_scope: list[str] = []
        self.calls: dict[str, int] = {}

    def call_module(self, m: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> Any:
        name = self.path_of_module(m)
        self.calls[name] = self.calls.get(name, 0) + 1
        self._ap_scope.append(name)
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self._ap_scope.pop()

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:
        node = super().create_node(*args, **kwargs)
        node.meta["ap_scope"] = tuple(self._ap_scope)
        return node


def trace(model: nn.Module) -> tuple[fx.GraphModule, dict[str, int]]:
    """Symbolically trace ``model`` (in eval mode); AutopruneError names why if fx cannot."""
    tracer = _ScopedTracer()
    was_training = model.training
    model.eval()
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, RuntimeError ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AutopruneError(
            f"torch.fx cannot trace {type(model).__name__}: {first} "
            "(autoprune needs a traceable forward: no data-dependent Python control flow)"
        ) from None
    finally:
        model.train(was_training)
    return fx.GraphModule(tracer.root, graph), tracer.calls


class _ShapeProp(fx.Interpreter):
    """Runs the graph on ``meta`` tensors (shapes only, no arithmetic).

    Shape-preserving layers (norms, activations) pass their input through, conv and
    linear layers run with meta weights; only other modules with state go through
    ``functional_call`` (slow on meta, but rare).
    """

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        mod = self.fetch_attr(target)
        x = args[0] if args else None
        if kwargs or len(args) != 1 or not isinstance(x, torch.Tensor):
            return self._functional(mod, args, kwargs)
        if isinstance(mod, _SHAPE_KEEPING_MODULES):
            return x
        if isinstance(mod, nn.Linear):
            return torch.empty((*x.shape[:-1], mod.out_features), dtype=x.dtype, device="meta")
        if isinstance(mod, _CONV_MODULES):
            w = torch.empty(mod.weight.shape, dtype=x.dtype, device="meta")
            return mod._conv_forward(x, w, None)
        return self._functional(mod, args, kwargs)

    @staticmethod
    def _functional(mod: nn.Module, args: tuple, kwargs: dict) -> Any:
        state = mod.state_dict(keep_vars=True)
        if not state:
            return mod(*args, **kwargs)
        return functional_call(mod, {k: v.to("meta") for k, v in state.items()}, args, kwargs)

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if target in _SHAPE_KEEPING_FUNCS and args and isinstance(args[0], torch.Tensor):
            return args[0]
        return super().call_function(target, args, kwargs)

    def call_method(self, target: str, args: tuple, kwargs: dict) -> Any:
        if target in _SHAPE_KEEPING_METHODS and args and isinstance(args[0], torch.Tensor):
            return args[0]
        return super().call_method(target, args, kwargs)

    def get_attr(self, target: str, args: tuple, kwargs: dict) -> Any:
        value = super().get_attr(target, args, kwargs)
        return value.to("meta") if isinstance(value, torch.Tensor) else value


def propagate(gm: fx.GraphModule, inputs: tuple[torch.Tensor, ...]) -> dict[fx.Node, Any]:
    """Value of every node (tensors hold no meaningful numbers; shapes are what matters)."""
    values: dict[fx.Node, Any] = {}
    for cls in (_ShapeProp, fx.Interpreter):
        interp = cls(gm)
        args = tuple(t.to("meta") for t in inputs) if cls is _ShapeProp else inputs
        values.clear()
        orig = interp.run_node

        def run_node(n: fx.Node, _orig: Callable = orig) -> Any:
            values[n] = result = _orig(n)
            return result

        interp.run_node = run_node  # type: ignore[method-assign]
        try:
            with torch.no_grad():
                interp.run(*args)
            return values
        except Exception as exc:
            if cls is fx.Interpreter:
                raise AutopruneError(
                    f"the traced model fails on the example input: {str(exc).splitlines()[0]}"
                ) from None
    return values


# ------------------------------------------------------------------ op catalogue

_ZERO_UNARY_FUNCS = {
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.silu, F.gelu, F.hardswish, F.elu, F.leaky_relu,
    F.mish, torch.tanh, F.tanh, F.selu, torch.selu, F.celu, F.softsign, F.tanhshrink, F.hardshrink,
    F.softshrink, torch.abs, operator.neg, torch.neg, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
    F.alpha_dropout, F.feature_alpha_dropout, torch.clone, torch.square, torch.sin, torch.sinh,
    torch.detach,
}  # fmt: skip
_LIVE_UNARY_FUNCS = {
    torch.sigmoid, F.sigmoid, F.hardsigmoid, torch.exp, F.softplus, torch.cos, F.logsigmoid, torch.log,
    torch.rsqrt, torch.reciprocal, torch.cosh,
}  # fmt: skip
_SPATIAL_FUNCS = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
    F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.lp_pool1d, F.lp_pool2d, F.interpolate, F.upsample,
    F.upsample_nearest, F.upsample_bilinear, torch.max_pool2d, torch.avg_pool1d,
}  # fmt: skip
_ZERO_UNARY_METHODS = {
    "relu", "relu_", "tanh", "tanh_", "contiguous", "clone", "detach", "float", "double", "half",
    "bfloat16", "to", "type", "abs", "abs_", "neg", "square", "requires_grad_", "cpu", "cuda",
}  # fmt: skip
_LIVE_UNARY_METHODS = {"sigmoid", "sigmoid_", "exp", "exp_", "log", "rsqrt", "reciprocal", "cos"}
_REDUCE_FUNCS = {torch.mean, torch.sum, torch.amax, torch.amin, torch.std, torch.var, torch.logsumexp}
_REDUCE_METHODS = {"mean", "sum", "amax", "amin", "std", "var", "logsumexp"}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub}
_MUL_FUNCS = {operator.mul, operator.imul, torch.mul}
_DIV_FUNCS = {operator.truediv, operator.itruediv, torch.div, torch.true_divide}
_MAX_FUNCS = {torch.maximum, torch.minimum}
_BINARY_METHODS = {
    "add": "add", "add_": "add", "sub": "add", "sub_": "add", "mul": "mul", "mul_": "mul",
    "div": "div", "div_": "div", "maximum": "add", "minimum": "add",
}  # fmt: skip
_FLOP_HINTS = ("matmul", "mm", "einsum", "linear", "conv", "attention", "bilinear")

_ZERO_MODULES = (
    nn.ReLU, nn.SiLU, nn.GELU, nn.Hardswish, nn.ELU, nn.LeakyReLU, nn.Mish, nn.Tanh, nn.SELU, nn.CELU,
    nn.Softsign, nn.Tanhshrink, nn.Hardshrink, nn.Softshrink, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Identity,
)  # fmt: skip
_LIVE_MODULES = (nn.Sigmoid, nn.Hardsigmoid, nn.Softplus, nn.LogSigmoid)
_SPATIAL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d, nn.Upsample,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d, nn.CircularPad1d, nn.CircularPad2d,
    nn.CircularPad3d,
)  # fmt: skip
_CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT_MODULES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BN_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_IN_MODULES = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
_NORM_LAYER_TYPES = (*_BN_MODULES, *_IN_MODULES, nn.GroupNorm)


_SHAPE_KEEPING_MODULES = (
    *_ZERO_MODULES, *_LIVE_MODULES, *_NORM_LAYER_TYPES, nn.LayerNorm, nn.PReLU, nn.Hardtanh, nn.Softmax,
    nn.LogSoftmax,
)  # fmt: skip
_SHAPE_KEEPING_FUNCS = (_ZERO_UNARY_FUNCS | _LIVE_UNARY_FUNCS) - {torch.detach}
_SHAPE_KEEPING_METHODS = (_ZERO_UNARY_METHODS | _LIVE_UNARY_METHODS) - {"to", "type", "cpu", "cuda", "float",
    "double", "half", "bfloat16"}  # fmt: skip


def _materialize(value: Any, device: torch.device) -> Any:
    """Meta tensors (also inside lists) -> zeros on ``device``; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.is_meta:
        return torch.zeros(value.shape, dtype=value.dtype, device=device)
    if isinstance(value, (tuple, list)):
        return type(value)(_materialize(v, device) for v in value)
    return value


def _op_name(node: fx.Node) -> str:
    t = node.target
    if node.op == "call_method":
        return f"Tensor.{t}"
    return getattr(t, "__name__", str(t))


def _flatten_args(obj: Any) -> Iterable[Any]:
    if isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _flatten_args(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _flatten_args(o)
    else:
        yield obj


# ----------------------------------------------------------------------- analysis


class _Analyzer:
    """Walks the traced graph once and assigns a channel layout to every tensor."""

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

    # -- helpers ---------------------------------------------------------------

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

    def info(self, arg: Any) -> Any:
        """The analysis value of a node argument (TInfo, Attr, tuple, or a python value)."""
        if isinstance(arg, fx.Node):
            return self.desc.get(arg)
        return arg

    def shape_of(self, node: fx.Node) -> tuple[int, ...] | None:
        v = self.values.get(node)
        return tuple(v.shape) if isinstance(v, torch.Tensor) else None

    def unknown_value(self, value: Any, ctx: int) -> Any:
        """A descriptor without channel knowledge, mirroring the structure of ``value``."""
        if isinstance(value, torch.Tensor):
            return TInfo(tuple(value.shape), None, None, ctx)
        if isinstance(value, (tuple, list)):
            return tuple(self.unknown_value(v, ctx) for v in value)
        return None

    def ctx_of(self, node: fx.Node, inputs: Iterable[Any]) -> int:
        shape = self.shape_of(node)
        if shape is not None and len(shape) >= 3 and math.prod(shape[2:]) > 1:
            return math.prod(shape[2:])
        ctxs = [i.ctx for i in inputs if isinstance(i, TInfo) and i.ctx]
        return min(ctxs) if ctxs else 0

    def input_infos(self, node: fx.Node) -> list[TInfo]:
        out = []
        for a in _flatten_args((node.args, node.kwargs)):
            v = self.info(a)
            for x in _flatten_args(v) if isinstance(v, (tuple, list)) else (v,):
                if isinstance(x, TInfo):
                    out.append(x)
        return out

    def layout_on(self, t: Any, axis: int, width: int, consumer: str) -> Layout:
        """``t``'s layout on ``axis`` (which must hold ``width`` features), or a frozen one."""
        if isinstance(t, TInfo) and t.layout is not None:
            if t.axis == axis % len(t.shape) and layout_width(t.layout) == width:
                return t.layout
            self.freeze(t.layout, f"channels reach {consumer} on an unexpected axis")
        return self.fresh(width, f"{consumer} reads channels of unknown origin")

    def check_zero(self, layout: Layout, consumer: str) -> None:
        """A consumer that would see removed channels as non-zero freezes them."""
        for s in layout:
            if s.live is not None:
                self.spaces.freeze(s.space, f"removed channels would reach {consumer} as non-zero ({s.live})")

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

    @staticmethod
    def with_live(layout: Layout, live: str | None) -> Layout:
        return tuple(Seg(s.space, s.size, s.mult, live) for s in layout)

    @staticmethod
    def mark_live(layout: Layout, live: str) -> Layout:
        return tuple(Seg(s.space, s.size, s.mult, s.live or live) for s in layout)

    def layer(self, name: str, kind: str, node: fx.Node, **kw: Any) -> Layer:
        if name not in self.layers:
            self.layers[name] = Layer(name, kind, len(self.layers), node=node.name, **kw)
        return self.layers[name]

    def join_dim(self, layer: Layer, dim: str, layout: Layout) -> Layout:
        """Record ``layout`` for a layer dim; a repeated call (shared module) unifies."""
        old = getattr(layer, dim)
        if old is None:
            setattr(layer, dim, self.with_live(layout, None))
            return layout
        self.unify(old, layout, f"shared module {layer.name}")
        return old

    # -- the walk -----------------------------------------------------------------

    def run(self) -> None:
        for node in self.gm.graph.nodes:
            desc = self.visit(node)
            if node.op in ("call_module", "call_function", "call_method"):
                self.set_ctx(desc, self.input_infos(node))
            self.desc[node] = desc

    def set_ctx(self, desc: Any, inputs: list[TInfo]) -> None:
        """Resolution context of an op's outputs: their own spatial size (all dims but batch and
        channels) when it exceeds 1, else the smallest context among the inputs (pooled SE
        vectors and classifier features belong to the stage they were pooled from)."""
        inherited = min((i.ctx for i in inputs if i.ctx), default=0)
        for t in _flatten_args(desc) if isinstance(desc, (tuple, list)) else (desc,):
            if not isinstance(t, TInfo):
                continue
            own = 0
            if t.axis is not None and len(t.shape) >= 3:
                own = math.prod(n for d, n in enumerate(t.shape) if d not in (0, t.axis))
            t.ctx = own if own > 1 else inherited

    def visit(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            return self.on_placeholder(node)
        if node.op == "get_attr":
            value = self.values.get(node)
            if isinstance(value, torch.Tensor):
                return Attr(str(node.target), tuple(value.shape), self._is_param(node))
            return None
        if node.op == "output":
            self.freeze(self.info_tree(node.args), "model output (the classifier's outputs are never pruned)")
            return None
        value = self.values.get(node)
        tensor_out = any(isinstance(v, torch.Tensor) for v in _flatten_args(value))
        if node.op == "call_module":
            return self.on_module(node, value)
        if not tensor_out:
            return self.on_non_tensor(node, value)
        handler = self.function_handler(node)
        if handler is None:
            return self.on_unknown(node, value, f"unsupported op {_op_name(node)}")
        return handler(node)

    def _is_param(self, node: fx.Node) -> bool:
        try:
            self.gm.get_parameter(node.target)
            return True
        except AttributeError:
            return False

    def info_tree(self, obj: Any) -> Any:
        if isinstance(obj, fx.Node):
            return self.desc.get(obj)
        if isinstance(obj, (tuple, list)):
            return tuple(self.info_tree(o) for o in obj)
        if isinstance(obj, dict):
            return tuple(self.info_tree(o) for o in obj.values())
        return None

    def on_placeholder(self, node: fx.Node) -> Any:
        value = self.values.get(node)
        if not isinstance(value, torch.Tensor):
            return None
        shape = tuple(value.shape)
        if not self.input_shape:
            self.input_shape, self.batch = shape, shape[0] if shape else 1
        if len(shape) < 2:
            return TInfo(shape, None, None, 0)
        info = TInfo(shape, 1, self.fresh(shape[1], "network input (input channels are never pruned)"))
        info.ctx = self.ctx_of(node, ())
        return info

    def on_non_tensor(self, node: fx.Node, value: Any) -> Any:
        """``x.size(1)``, ``x.shape``: harmless unless fed back into shapes (checked there)."""
        if node.op == "call_function" and node.target is operator.getitem:
            src = self.info(node.args[0])
            if isinstance(src, (tuple, list)):
                try:
                    return src[node.args[1]]
                except (IndexError, TypeError, KeyError):
                    return None
        return None

    def on_unknown(self, node: fx.Node, value: Any, reason: str) -> Any:
        """Fail closed: freeze everything entering the op; its outputs carry no layout."""
        self.count_opaque(node)
        inputs = self.input_infos(node)
        self.freeze(inputs, f"channels pass through {reason}")
        out = self.unknown_value(value, self.ctx_of(node, inputs) if isinstance(value, torch.Tensor) else 0)
        if isinstance(out, TInfo):
            out.ctx = self.ctx_of(node, inputs)
        return out

    # -- modules -----------------------------------------------------------------

    def on_module(self, node: fx.Node, value: Any) -> Any:
        name = str(node.target)
        mod = self.gm.get_submodule(name)
        x = self.info(node.args[0]) if node.args else None
        if (
            not isinstance(value, torch.Tensor)
            or not isinstance(x, TInfo)
            or len(node.args) != 1
            or node.kwargs
        ):
            self.frozen_modules.setdefault(name, f"unsupported call signature of {type(mod).__name__}")
            return self.on_unknown(node, value, f"module {name} ({type(mod).__name__})")
        if any(isinstance(p, nn.parameter.UninitializedParameter) for p in mod.parameters(recurse=False)):
            raise AutopruneError(f"module {name} has uninitialized (lazy) parameters: run one forward first")
        out = TInfo(tuple(value.shape), None, None, self.ctx_of(node, [x]))
        if parametrize.is_parametrized(mod):
            self.frozen_modules.setdefault(name, "parametrized weights (e.g. weight norm) are not pruned")
            return self.on_unknown(node, value, f"module {name} with parametrized weights")
        handler = self.module_handler(mod)
        if handler is None:
            self.frozen_modules.setdefault(name, f"unsupported module type {type(mod).__name__}")
            return self.on_unknown(node, value, f"module {name} ({type(mod).__name__})")
        return handler(node, name, mod, x, out)

    def module_handler(self, mod: nn.Module) -> Callable | None:
        if isinstance(mod, _CONV_MODULES):
            return self.m_conv
        if isinstance(mod, _CONVT_MODULES):
            return self.m_conv_transpose
        if isinstance(mod, nn.Linear):
            return self.m_linear
        if isinstance(mod, _NORM_LAYER_TYPES):
            return self.m_norm
        if isinstance(mod, nn.LayerNorm):
            return self.m_layer_norm
        if isinstance(mod, nn.PReLU):
            return self.m_prelu
        if isinstance(mod, nn.Hardtanh):  # ReLU6 included
            return self.m_hardtanh
        if isinstance(mod, _ZERO_MODULES):
            return self.m_same
        if isinstance(mod, _LIVE_MODULES):
            return lambda node, name, mod, x, out: self.pass_through(
                x, out, live=f"{type(mod).__name__} of 0 is not 0"
            )
        if isinstance(mod, _SPATIAL_MODULES):
            return self.m_spatial
        if isinstance(mod, nn.ConstantPad1d | nn.ConstantPad2d | nn.ConstantPad3d):
            return self.m_spatial
        if isinstance(mod, nn.Flatten):
            return lambda node, name, mod, x, out: self.reshape(node, x, out, dynamic=True)
        if isinstance(mod, nn.Softmax | nn.LogSoftmax | nn.Softmin):
            return self.m_softmax
        return None

    def pass_through(self, x: TInfo, out: TInfo, live: str | None = None) -> TInfo:
        if x.layout is not None and x.axis is not None and len(x.shape) == len(out.shape):
            out.axis = x.axis
            out.layout = x.layout if live is None else self.mark_live(x.layout, live)
        return out

    def m_same(self, node: fx.Node, name: str, mod: nn.Module, x: TInfo, out: TInfo) -> TInfo:
        return self.pass_through(x, out)

    def m_hardtanh(self, node: fx.Node, name: str, mod: nn.Hardtanh, x: TInfo, out: TInfo) -> TInfo:
        ok = mod.min_val <= 0 <= mod.max_val
        return self.pass_through(x, out, None if ok else f"{type(mod).__name__} of 0 is not 0")

    def m_spatial(self, node: fx.Node, name: str, mod: nn.Module, x: TInfo, out: TInfo) -> TInfo:
        if x.axis != 1 or len(x.shape) != len(out.shape) or x.shape[1] != out.shape[1]:
            self.frozen_modules.setdefault(name, f"{type(mod).__name__} changes the channel axis")
            return self.on_unknown(node, self.values[node], f"module {name}")
        live = None
        if isinstance(mod, nn.ConstantPad1d | nn.ConstantPad2d | nn.ConstantPad3d) and mod.value != 0:
            live = "padding with a non-zero constant"
        return self.pass_through(x, out, live)

    def m_softmax(self, node: fx.Node, name: str, mod: nn.Module, x: TInfo, out: TInfo) -> TInfo:
        dim = mod.dim if mod.dim is not None else 1
        if x.axis is not None and dim % len(x.shape) == x.axis:
            self.freeze(x, f"{type(mod).__name__} {name} normalizes across channels")
            return out
        return self.pass_through(x, out, live=f"{type(mod).__name__} of 0 is not 0")

    def m_conv(self, node: fx.Node, name: str, mod: nn.Conv2d, x: TInfo, out: TInfo) -> TInfo:
        inp = self.layout_on(x, 1, mod.in_channels, name)
        groups = mod.groups
        if not (groups > 1 and groups == mod.in_channels):  # depthwise: a removed input is a removed output
            self.check_zero(inp, name)
        layer = self.layer(name, "conv", node, kernel=math.prod(mod.kernel_size))
        layer.positions.append(math.prod(out.shape[2:]))
        out.axis = 1
        if groups > 1 and groups == mod.in_channels:  # depthwise (possibly with a channel multiplier)
            layer.depthwise = True
            k = mod.out_channels // mod.in_channels
            inp = self.join_dim(layer, "inp", inp)
            out.layout = self.join_dim(layer, "out", tuple(Seg(s.space, s.size, s.mult * k) for s in inp))
            return out
        if groups > 1:
            layer.conv_groups = groups
            if len(inp) == 1 and inp[0].mult == 1:
                self.spaces.require_blocks(inp[0].space, groups)
            else:
                self.freeze(inp, f"grouped conv {name} reads concatenated or repeated channels")
        self.join_dim(layer, "inp", inp)
        if layer.out is None:
            layer.out = self.fresh(mod.out_channels, producer=name)
            if groups > 1:
                self.spaces.require_blocks(layer.out[0].space, groups)
        out.layout = layer.out
        return out

    def m_conv_transpose(self, node: fx.Node, name: str, mod: nn.Module, x: TInfo, out: TInfo) -> Any:
        if mod.groups != 1:
            self.frozen_modules.setdefault(name, "grouped transposed conv is not supported")
            return self.on_unknown(node, self.values[node], f"module {name} (grouped ConvTranspose)")
        inp = self.layout_on(x, 1, mod.in_channels, name)
        self.check_zero(inp, name)
        layer = self.layer(name, "conv", node, kernel=math.prod(mod.kernel_size), transposed=True)
        # FlopCounterMode counts a transposed conv by its input positions.
        layer.positions.append(math.prod(x.shape[2:]))
        self.join_dim(layer, "inp", inp)
        if layer.out is None:
            layer.out = self.fresh(mod.out_channels, producer=name)
        out.axis, out.layout = 1, layer.out
        return out

    def m_linear(self, node: fx.Node, name: str, mod: nn.Linear, x: TInfo, out: TInfo) -> TInfo:
        last = len(x.shape) - 1
        inp = self.layout_on(x, last, mod.in_features, name)
        self.check_zero(inp, name)
        layer = self.layer(name, "linear", node)
        layer.positions.append(math.prod(out.shape[:-1]) // max(self.batch, 1))
        self.join_dim(layer, "inp", inp)
        if layer.out is None:
            layer.out = self.fresh(mod.out_features, producer=name)
        out.axis, out.layout = len(out.shape) - 1, layer.out
        return out

    def m_norm(self, node: fx.Node, name: str, mod: nn.Module, x: TInfo, out: TInfo) -> TInfo:
        if isinstance(mod, nn.GroupNorm) and mod.num_groups != mod.num_channels:
            self.freeze(x, f"GroupNorm {name} normalizes across channels")
            self.frozen_modules.setdefault(name, "GroupNorm with several channels per group")
            return self.pass_through(x, out, live="GroupNorm")
        width = mod.num_channels if isinstance(mod, nn.GroupNorm) else mod.num_features
        layout = self.layout_on(x, 1, width, name)
        affine = bool(getattr(mod, "affine", False))
        stats = bool(getattr(mod, "track_running_stats", False))
        if affine or stats:
            layout = self.join_dim(self.layer(name, "norm", node), "out", layout)
        live = None
        if not affine and stats:
            live = f"{type(mod).__name__} without affine shifts zeros by its running mean"
        out.axis = 1
        out.layout = (
            self.with_live(layout, live) if affine else self.mark_live(layout, live) if live else layout
        )
        return out

    def m_layer_norm(self, node: fx.Node, name: str, mod: nn.LayerNorm, x: TInfo, out: TInfo) -> TInfo:
        n = len(mod.normalized_shape)
        if x.axis is not None and x.axis >= len(x.shape) - n:
            self.freeze(x, f"LayerNorm {name} normalizes across channels")
            return self.pass_through(x, out, live="LayerNorm")
        return self.pass_through(x, out, live="LayerNorm shifts zeros")

    def m_prelu(self, node: fx.Node, name: str, mod: nn.PReLU, x: TInfo, out: TInfo) -> TInfo:
        if mod.num_parameters == 1:
            return self.pass_through(x, out)
        layout = self.layout_on(x, 1, mod.num_parameters, name)
        self.join_dim(self.layer(name, "scale", node), "out", layout)
        out.axis, out.layout = 1, layout
        return out

    # -- functions and methods --------------------------------------------------

    def function_handler(self, node: fx.Node) -> Callable[[fx.Node], Any] | None:
        t = node.target
        if node.op == "call_method":
            if t in _ZERO_UNARY_METHODS:
                return self.f_unary
            if t in _LIVE_UNARY_METHODS:
                return self.f_live_unary
            if t in _BINARY_METHODS:
                return lambda n: self.f_binary(n, _BINARY_METHODS[t])
            return {
                "clamp": self.f_clamp, "clamp_": self.f_clamp, "clip": self.f_clamp,
                "flatten": self.f_reshape, "view": self.f_reshape, "reshape": self.f_reshape,
                "permute": self.f_permute, "transpose": self.f_transpose, "unsqueeze": self.f_squeeze,
                "squeeze": self.f_squeeze, "expand": self.f_expand, "expand_as": self.f_expand,
                "softmax": self.f_softmax, "log_softmax": self.f_softmax,
                "max": self.f_max, "min": self.f_max,
                **{m: self.f_reduce for m in _REDUCE_METHODS},
            }.get(t)  # fmt: skip
        if t in _ZERO_UNARY_FUNCS:
            return self.f_unary
        if t in _LIVE_UNARY_FUNCS:
            return self.f_live_unary
        if t in _SPATIAL_FUNCS:
            return self.f_spatial
        if t in _ADD_FUNCS or t in _MAX_FUNCS:
            return lambda n: self.f_binary(n, "add")
        if t in _MUL_FUNCS:
            return lambda n: self.f_binary(n, "mul")
        if t in _DIV_FUNCS:
            return lambda n: self.f_binary(n, "div")
        if t in _REDUCE_FUNCS:
            return self.f_reduce
        simple = {
            torch.cat: self.f_cat, torch.concat: self.f_cat, torch.concatenate: self.f_cat,
            torch.flatten: self.f_reshape, torch.reshape: self.f_reshape, torch.permute: self.f_permute,
            torch.transpose: self.f_transpose, torch.unsqueeze: self.f_squeeze, torch.squeeze: self.f_squeeze,
            operator.getitem: self.f_getitem, F.pad: self.f_pad, torch.clamp: self.f_clamp,
            torch.clip: self.f_clamp, F.hardtanh: self.f_clamp, F.relu6: self.f_unary,
            F.softmax: self.f_softmax, F.log_softmax: self.f_softmax, torch.softmax: self.f_softmax,
            torch.max: self.f_max, torch.min: self.f_max,
        }  # fmt: skip
        if t in simple:
            return simple[t]
        if getattr(t, "__name__", "") == "stochastic_depth":
            return self.f_stochastic_depth
        return None

    def arg(self, node: fx.Node, i: int, key: str, default: Any = None) -> Any:
        if len(node.args) > i:
            return node.args[i]
        return node.kwargs.get(key, default)

    def out_info(self, node: fx.Node, inputs: Iterable[Any]) -> TInfo:
        return TInfo(self.shape_of(node) or (), None, None, self.ctx_of(node, list(inputs)))

    def src(self, node: fx.Node) -> TInfo | None:
        x = self.info(node.args[0]) if node.args else self.info(node.kwargs.get("input"))
        return x if isinstance(x, TInfo) else None

    def f_unary(self, node: fx.Node, live: str | None = None) -> Any:
        x = self.src(node)
        if x is None:
            return self.on_unknown(node, self.values[node], _op_name(node))
        return self.pass_through(x, self.out_info(node, [x]), live)

    def f_live_unary(self, node: fx.Node) -> Any:
        return self.f_unary(node, live=f"{_op_name(node)} of 0 is not 0")

    def f_clamp(self, node: fx.Node) -> Any:
        lo, hi = self.arg(node, 1, "min"), self.arg(node, 2, "max")
        if node.target is F.hardtanh:
            lo, hi = self.arg(node, 1, "min_val", -1.0), self.arg(node, 2, "max_val", 1.0)
        if isinstance(lo, fx.Node) or isinstance(hi, fx.Node):
            return self.on_unknown(node, self.values[node], f"{_op_name(node)} with tensor bounds")
        ok = (lo is None or lo <= 0) and (hi is None or hi >= 0)
        return self.f_unary(node, None if ok else f"{_op_name(node)} moves 0")

    def f_stochastic_depth(self, node: fx.Node) -> Any:
        training = self.arg(node, 3, "training", True)
        if training is False:
            return self.f_unary(node)
        return self.on_unknown(node, self.values[node], "stochastic depth in training mode")

    def f_spatial(self, node: fx.Node) -> Any:
        x = self.src(node)
        out = self.out_info(node, [x])
        value = self.values[node]
        if isinstance(value, (tuple, list)):  # pools with return_indices
            return self.on_unknown(node, value, f"{_op_name(node)} returning indices")
        if x is None or x.axis != 1 or len(out.shape) != len(x.shape) or out.shape[1] != x.shape[1]:
            return self.on_unknown(node, value, f"{_op_name(node)} on an unexpected layout")
        return self.pass_through(x, out)

    def f_pad(self, node: fx.Node) -> Any:
        x = self.src(node)
        pad = self.arg(node, 1, "pad")
        mode = self.arg(node, 2, "mode", "constant")
        value = self.arg(node, 3, "value", None)
        if x is None or not isinstance(pad, (tuple, list)):
            return self.on_unknown(node, self.values[node], "F.pad")
        out = self.out_info(node, [x])
        if x.axis is not None and len(pad) // 2 > len(x.shape) - 1 - x.axis:
            self.freeze(x, "F.pad pads the channel axis")
            return out
        live = (
            "padding with a non-zero constant" if mode == "constant" and value not in (None, 0, 0.0) else None
        )
        return self.pass_through(x, out, live)

    def f_softmax(self, node: fx.Node) -> Any:
        x = self.src(node)
        dim = self.arg(node, 1, "dim")
        if x is None:
            return self.on_unknown(node, self.values[node], _op_name(node))
        out = self.out_info(node, [x])
        if dim is None or (x.axis is not None and dim % len(x.shape) == x.axis):
            self.freeze(x, f"{_op_name(node)} normalizes across channels")
            return out
        return self.pass_through(x, out, f"{_op_name(node)} of 0 is not 0")

    def count_opaque(self, node: fx.Node) -> None:
        """MACs of an op the analysis does not model (attention matmuls, an unknown layer),
        measured with FlopCounterMode on the node's recorded inputs: a frozen constant cost."""
        if node.op != "call_module" and not any(h in _op_name(node).lower() for h in _FLOP_HINTS):
            return
        # rerun on real zeros, like the measured model (meta tensors take other kernels, e.g. no
        # fused attention fast path, which FlopCounterMode counts differently)
        real: dict[fx.Node, Any] = {}  # one tensor per node: `q is k is v` selects attention kernels

        def value(n: fx.Node) -> Any:
            if n not in real:
                real[n] = _materialize(self.values.get(n), self.device)
            return real[n]

        args, kwargs = fx.node.map_arg(node.args, value), fx.node.map_arg(node.kwargs, value)

        def run() -> Any:
            if node.op == "call_module":
                return self.gm.get_submodule(str(node.target))(*args, **kwargs)
            if node.op == "call_method":
                return getattr(args[0], str(node.target))(*args[1:], **kwargs)
            return node.target(*args, **kwargs)

        try:
            macs = counted_macs(run)
        except Exception:  # an op that cannot rerun on its recorded inputs: count nothing
            return
        if macs:
            self.extra_macs.append((self.scope_of(node), macs // max(self.batch, 1)))

    @staticmethod
    def scope_of(node: fx.Node) -> str:
        scope = node.meta.get("ap_scope", ())
        return scope[-1] if scope else ""

    def f_binary(self, node: fx.Node, kind: str) -> Any:
        a = self.info(self.arg(node, 0, "input"))
        b = self.info(self.arg(node, 1, "other"))
        out = self.out_info(node, [a, b])
        nd = len(out.shape)
        carriers = [t for t in (a, b) if isinstance(t, TInfo) and t.layout is not None and t.axis is not None]
        if not carriers:
            for t in (a, b):
                if isinstance(t, TInfo) and t.layout is not None:
                    self.freeze(t, f"{_op_name(node)} with channels on no known axis")
            return out
        main = carriers[0]
        other, other_is_rhs = (b, True) if main is a else (a, False)
        axis = main.axis + nd - len(main.shape)
        out.axis, out.layout = axis, self.combine(node, kind, main.layout, axis, nd, other, other_is_rhs)
        return out

    def combine(
        self, node: fx.Node, kind: str, layout: Layout, axis: int, nd: int, other: Any, other_is_rhs: bool
    ) -> Layout:
        """Fold one more operand into an elementwise op's output layout."""
        where = f"{_op_name(node)} ({node.name})"
        c = layout_width(layout)
        if other is None or isinstance(other, (int, float, bool)):  # python scalar
            if kind == "add" and other not in (0, 0.0, None):
                return self.mark_live(layout, f"{where} adds a constant")
            if kind == "div" and not other_is_rhs:
                return self.mark_live(layout, f"{where} divides a constant by channels")
            return layout
        if isinstance(other, Attr):
            k = axis - (nd - len(other.shape))
            size = other.shape[k] if 0 <= k < len(other.shape) else 1
            if size == 1:
                return self.mark_live(layout, f"{where} adds a tensor") if kind == "add" else layout
            if size != c or kind == "div" and other_is_rhs:
                self.freeze(layout, f"{where} with tensor {other.name} of unexpected shape")
                return layout
            layer = self.layer(other.name, "tensor", node, axis=k)
            self.join_dim(layer, "out", layout)
            return layout
        if not isinstance(other, TInfo):
            self.freeze(layout, f"{where} with an operand of unknown kind")
            return layout
        k = axis - (nd - len(other.shape))
        size = other.shape[k] if 0 <= k < len(other.shape) else 1
        o_axis = None if other.axis is None else other.axis + nd - len(other.shape)
        if size == 1:
            if other.layout is not None and o_axis != axis:
                self.freeze(other, f"{where} broadcasts those channels over another tensor")
            return self.mark_live(layout, f"{where} adds a tensor") if kind == "add" else layout
        if other.layout is None or o_axis != axis or layout_width(other.layout) != c:
            self.freeze(layout, f"{where} combines them with a tensor of unknown channel order")
            if other.layout is not None:
                self.freeze(other, f"{where} combines channels on different axes")
            return layout
        merged = self.unify(layout, other.layout, where)
        lives = []
        for x, y in zip(layout, other.layout, strict=False):
            if kind == "add":
                lives.append(x.live or y.live)
            elif kind == "mul":
                lives.append(None if x.live is None or y.live is None else x.live)
            else:  # div: numerator keeps zeros; a zero divisor would give inf/nan
                num, den = (x, y) if other_is_rhs else (y, x)
                if den.live is None:
                    self.spaces.freeze(den.space, f"{where} divides by channels that would be removed")
                lives.append(num.live)
        if len(lives) != len(merged):
            return merged
        return tuple(Seg(s.space, s.size, s.mult, lv) for s, lv in zip(merged, lives, strict=False))

    def f_cat(self, node: fx.Node) -> Any:
        tensors = self.arg(node, 0, "tensors")
        dim = self.arg(node, 1, "dim", 0)
        infos = [self.info(t) for t in tensors]
        out = self.out_info(node, infos)
        nd = len(out.shape)
        if not all(isinstance(i, (TInfo, Attr)) for i in infos):
            return self.on_unknown(node, self.values[node], "torch.cat of unknown values")
        dim %= nd
        carriers = [i for i in infos if isinstance(i, TInfo) and i.layout is not None]
        if not carriers:
            return out
        if all(i.axis == dim for i in carriers):  # concatenation along channels: offsets
            segs: list[Seg] = []
            for i in infos:
                if isinstance(i, TInfo) and i.layout is not None:
                    segs.extend(i.layout)
                else:
                    segs.extend(self.fresh(i.shape[dim], "concatenated with a tensor of unknown channels"))
            out.axis, out.layout = dim, tuple(segs)
            return out
        axis = carriers[0].axis
        if all(isinstance(i, TInfo) and i.layout is not None and i.axis == axis for i in infos):
            layout = carriers[0].layout
            for i in infos[1:]:
                layout = self.unify(layout, i.layout, f"torch.cat ({node.name})")
                layout = tuple(
                    Seg(s.space, s.size, s.mult, s.live or t.live)
                    for s, t in zip(layout, i.layout, strict=False)
                )
            out.axis, out.layout = axis, layout
            return out
        self.freeze(infos, f"torch.cat ({node.name}) mixes channel axes")
        return out

    def f_getitem(self, node: fx.Node) -> Any:
        src, idx = self.info(node.args[0]), node.args[1]
        if isinstance(src, (tuple, list)):
            if isinstance(idx, (int, slice)):
                return src[idx]
            return None
        if not isinstance(src, TInfo):
            return self.on_unknown(node, self.values[node], "indexing")
        out = self.out_info(node, [src])
        if src.layout is None:
            return out
        items = idx if isinstance(idx, tuple) else (idx,)
        if any(isinstance(i, (fx.Node, list)) or hasattr(i, "shape") for i in items):
            self.freeze(src, f"indexing with tensors ({node.name})")
            return out
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
                    self.freeze(src, f"indexing selects single channels ({node.name})")
                    return out
                in_dim += 1
            elif isinstance(i, slice):
                if in_dim == src.axis:
                    if i != slice(None) and (i.start, i.stop, i.step) != (None, None, None):
                        self.freeze(src, f"slicing the channel axis ({node.name})")
                        return out
                    new_axis = out_dim
                in_dim, out_dim = in_dim + 1, out_dim + 1
        if new_axis is None and src.axis >= in_dim:
            new_axis = out_dim + src.axis - in_dim
        out.axis, out.layout = new_axis, src.layout
        return out

    def reshape(self, node: fx.Node, x: TInfo | None, out: TInfo, dynamic: bool) -> TInfo:
        """A reshape that merges the channel axis with the dims after it keeps channels intact."""
        if x is None or x.layout is None or x.axis is None:
            return out
        found = _merged_channel_axis(x.shape, out.shape, x.axis)
        if found is None:
            self.freeze(
                x, f"reshape ({node.name}) splits or reorders the channel axis (e.g. channel shuffle)"
            )
            return out
        if not dynamic:
            self.freeze(x, f"reshape ({node.name}) hard-codes the channel count")
            return out
        k, factor = found
        out.axis = k
        out.layout = tuple(Seg(g.space, g.size, g.mult * factor, g.live) for g in x.layout)
        return out

    def f_reshape(self, node: fx.Node) -> Any:
        x = self.src(node)
        out = self.out_info(node, [x])
        target = node.target
        dynamic = True
        if target in ("view", "reshape") or target is torch.reshape:
            sizes = list(node.args[1:]) if target != torch.reshape else [node.args[1]]
            if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
                sizes = list(sizes[0])
            dynamic = self.size_arg_is_dynamic(x, out, sizes)
        return self.reshape(node, x, out, dynamic)

    def size_arg_is_dynamic(self, x: TInfo | None, out: TInfo, sizes: list[Any]) -> bool:
        """The output size holding the channels must be -1 or computed, never a literal."""
        if x is None or x.axis is None or len(sizes) != len(out.shape):
            return True
        found = _merged_channel_axis(x.shape, out.shape, x.axis)
        if found is None:
            return True
        k = found[0]
        return not (isinstance(sizes[k], int) and sizes[k] != -1)

    def f_permute(self, node: fx.Node) -> Any:
        x = self.src(node)
        out = self.out_info(node, [x])
        dims = list(node.args[1:]) if node.op == "call_method" else [node.args[1]]
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = list(dims[0])
        if x is None or x.layout is None:
            return out
        dims = [d % len(x.shape) for d in dims]
        out.axis, out.layout = dims.index(x.axis), x.layout
        return out

    def f_transpose(self, node: fx.Node) -> Any:
        x = self.src(node)
        out = self.out_info(node, [x])
        if x is None or x.layout is None:
            return out
        d0, d1 = (self.arg(node, 1, "dim0") % len(x.shape)), (self.arg(node, 2, "dim1") % len(x.shape))
        axis = d1 if x.axis == d0 else d0 if x.axis == d1 else x.axis
        out.axis, out.layout = axis, x.layout
        return out

    def f_squeeze(self, node: fx.Node) -> Any:
        x = self.src(node)
        out = self.out_info(node, [x])
        if x is None or x.layout is None:
            return out
        s, t = x.shape, out.shape
        if len(t) > len(s):  # unsqueeze(d)
            d = self.arg(node, 1, "dim") % len(t)
            out.axis = x.axis + (1 if d <= x.axis else 0)
        else:
            if s[x.axis] == 1:
                return out
            dims = self.arg(node, 1, "dim")
            if dims is None:
                dims = [i for i, n in enumerate(s) if n == 1]
            dims = [d % len(s) for d in (dims if isinstance(dims, (tuple, list)) else [dims]) if s[d] == 1]
            out.axis = x.axis - sum(1 for d in dims if d < x.axis)
        out.layout = x.layout
        return out

    def f_expand(self, node: fx.Node) -> Any:
        x = self.src(node)
        out = self.out_info(node, [x])
        if x is None or x.layout is None:
            return out
        axis = x.axis + len(out.shape) - len(x.shape)
        if out.shape[axis] != x.shape[x.axis]:
            self.freeze(x, f"expand ({node.name}) broadcasts channels")
            return out
        out.axis, out.layout = axis, x.layout
        return out

    def f_reduce(self, node: fx.Node) -> Any:
        x = self.src(node)
        out = self.out_info(node, [x])
        if x is None or x.layout is None:
            return out
        dims = self.arg(node, 1, "dim")
        keep = self.arg(node, 2, "keepdim", False)
        if dims is None:
            self.freeze(x, f"{_op_name(node)} reduces over channels")
            return out
        dims = [d % len(x.shape) for d in (dims if isinstance(dims, (tuple, list)) else [dims])]
        if x.axis in dims:
            self.freeze(x, f"{_op_name(node)} reduces over channels")
            return out
        out.axis = x.axis if keep else x.axis - sum(1 for d in dims if d < x.axis)
        out.layout = x.layout
        return out

    def f_max(self, node: fx.Node) -> Any:
        second = self.arg(node, 1, "dim", self.arg(node, 1, "other"))
        if isinstance(second, fx.Node):
            return self.f_binary(node, "add")
        if second is None:
            return self.on_unknown(node, self.values[node], f"{_op_name(node)} over all elements")
        x = self.src(node)
        value = self.values[node]
        if x is None or x.layout is None:
            return self.unknown_value(value, x.ctx if x else 0)
        d = second % len(x.shape)
        if d == x.axis:
            return self.on_unknown(node, value, f"{_op_name(node)} over channels")
        keep = self.arg(node, 2, "keepdim", False)
        axis = x.axis if keep else x.axis - (1 if d < x.axis else 0)
        vals = TInfo(tuple(value[0].shape), axis, x.layout, x.ctx)
        idx = TInfo(tuple(value[1].shape), None, None, x.ctx)
        return (vals, idx)


def _merged_channel_axis(s: tuple[int, ...], t: tuple[int, ...], a: int) -> tuple[int, int] | None:
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


# ------------------------------------------------------------------------- blocks


def _find_blocks(
    gm: fx.GraphModule, values: dict[fx.Node, Any], calls: dict[str, int], ctx: dict[str, int]
) -> list[BlockInfo]:
    """Modules that hold exactly one residual sum of two equal-shape tensors."""
    by_scope: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        for s in node.meta.get("ap_scope", ()):
            by_scope.setdefault(s, []).append(node)
    adds: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if not _is_tensor_add(node, values):
            continue
        scope = node.meta.get("ap_scope", ())
        if scope:
            adds.setdefault(scope[-1], []).append(node)
    blocks = []
    for name, nodes in adds.items():
        if len(nodes) != 1 or calls.get(name, 0) != 1:
            continue
        block = _block_from_add(gm, name, nodes[0], by_scope[name], values, ctx)
        if block is not None:
            blocks.append(block)
    return blocks


def _is_tensor_add(node: fx.Node, values: dict[fx.Node, Any]) -> bool:
    if node.op == "call_function" and node.target in (operator.add, operator.iadd, torch.add):
        pass
    elif not (node.op == "call_method" and node.target in ("add", "add_")):
        return False
    if len(node.args) < 2 or not all(isinstance(a, fx.Node) for a in node.args[:2]):
        return False
    va, vb = values.get(node.args[0]), values.get(node.args[1])
    return isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor) and va.shape == vb.shape


def _block_from_add(
    gm: fx.GraphModule,
    name: str,
    add: fx.Node,
    members: list[fx.Node],
    values: dict[fx.Node, Any],
    ctx: dict[str, int],
) -> BlockInfo | None:
    inside = set(members)
    ext = {a for n in members for a in n.all_input_nodes if a not in inside and a.op != "get_attr"}
    outs = {n for n in members if any(u not in inside for u in n.users)}
    if len(ext) != 1 or len(outs) != 1:
        return None
    (x,) = ext
    (y,) = outs
    vx, vy = values.get(x), values.get(y)
    if not isinstance(vx, torch.Tensor) or not isinstance(vy, torch.Tensor):
        return None
    a, b = add.args[0], add.args[1]
    if not (_depends_on(a, x, inside) and _depends_on(b, x, inside)):
        return None  # e.g. x + positional_embedding: not a residual sum
    branch = b if a is x else a if b is x else max((a, b), key=lambda n: _ancestors_inside(n, inside))
    return BlockInfo(
        name=name,
        ctx=ctx.get(add.name, 0),
        removable=tuple(vx.shape) == tuple(vy.shape),
        branch_end=_branch_end(gm, branch, inside),
    )


def _depends_on(node: fx.Node, x: fx.Node, inside: set[fx.Node]) -> bool:
    """Whether ``node`` is ``x`` or computed from it by nodes of the block."""
    seen, stack = set(), [node]
    while stack:
        n = stack.pop()
        if n is x:
            return True
        if n in seen or n not in inside:
            continue
        seen.add(n)
        stack.extend(n.all_input_nodes)
    return False


def _ancestors_inside(node: fx.Node, inside: set[fx.Node]) -> int:
    seen, stack = set(), [node]
    while stack:
        n = stack.pop()
        if n in seen or n not in inside:
            continue
        seen.add(n)
        stack.extend(n.all_input_nodes)
    return len(seen)


_ZERO_KEEPING_WALK = {
    "contiguous",
    "clone",
    "permute",
    "transpose",
    "view",
    "reshape",
    "flatten",
    "stochastic_depth",
}


def _branch_end(gm: fx.GraphModule, node: fx.Node, inside: set[fx.Node]) -> str | None:
    """The last norm/conv/linear of a branch, walking back through ops that keep zeros zero
    (dropout, stochastic depth, permutes, a multiply by a parameter such as a layer scale)."""
    while node in inside:
        nxt = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        if node.op == "call_module":
            mod = gm.get_submodule(str(node.target))
            if isinstance(mod, (*_NORM_LAYER_TYPES, *_CONV_MODULES, nn.Linear)):
                return str(node.target)
            if not isinstance(mod, (nn.Identity, nn.Dropout, nn.Dropout2d)):
                return None
        elif node.target in (operator.mul, torch.mul, "mul"):
            tensors = [a for a in node.args[:2] if isinstance(a, fx.Node) and a.op != "get_attr"]
            nxt = tensors[0] if len(tensors) == 1 else None
        elif getattr(node.target, "__name__", node.target) not in _ZERO_KEEPING_WALK:
            return None
        if nxt is None:
            return None
        node = nxt
    return None


# ------------------------------------------------------------------------ entry


def analyze(model: nn.Module, example_inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> Analysis:
    """Trace ``model`` and derive its channel spaces, layers, frozen parts and residual blocks."""
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise AutopruneError("example_inputs must be a tensor (or a tuple of tensors) shaped like a batch")
    gm, calls = trace(model)
    was_training = model.training
    model.eval()
    try:
        values = propagate(gm, inputs)
        an = _Analyzer(gm, values, calls, inputs[0].device)
        an.run()
    finally:
        model.train(was_training)
    node_ctx = {n.name: d.ctx for n, d in an.desc.items() if isinstance(d, TInfo)}
    blocks = _find_blocks(gm, values, calls, node_ctx)
    return Analysis(
        spaces=an.spaces,
        layers=an.layers,
        frozen_modules=an.frozen_modules,
        blocks=blocks,
        node_ctx=node_ctx,
        extra_macs=an.extra_macs,
        batch=an.batch,
        input_shape=an.input_shape,
    )
