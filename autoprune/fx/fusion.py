"""conv → BN → activation chains in a traced graph: finding them, folding the BN, swapping modules.

The sensitivity engine (oneDNN fusion on the CPU) and the masked executor (fused
kernels) both rewrite such chains; this module is the one place that decides what
a chain is, how a BN folds and which activations exist.

* :func:`conv_chains` walks the graph for ``conv [→ BN] [→ residual add] [→ activation]``,
  each step taken only when it is the sole user of the previous one.
* :func:`batchnorm_affine` is the BN fold: ``scale = γ/√(var+ε)``,
  ``shift = β − mean·scale + scale·conv_bias``; :func:`scale_weight` folds ``scale``
  into a conv weight.
* :data:`ACTIVATION_TABLE` names every activation a chain may end with, by module
  type, function and tensor method; :func:`activation_of` reads a node with it.
* :func:`set_module` puts a module at a dotted path.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

# -- activations ------------------------------------------------------------------


@dataclass(frozen=True)
class ActivationKind:
    """One activation: its name and the module types, functions and tensor methods that compute it.

    ``bounds``: the fixed clamp bounds of a clamping activation called as a function;
    a module of the ``nn.Hardtanh`` family gives its own ``min_val``/``max_val``.
    Modules match by exact type (a subclass may change ``forward``).
    """

    name: str
    modules: tuple[type[nn.Module], ...] = ()
    functions: tuple[Callable, ...] = ()
    methods: tuple[str, ...] = ()
    bounds: tuple[float, float] | None = None


ACTIVATION_TABLE: tuple[ActivationKind, ...] = (
    ActivationKind("relu", (nn.ReLU,), (F.relu, torch.relu, torch.relu_), ("relu", "relu_")),
    ActivationKind("relu6", (nn.ReLU6,), (F.relu6,), bounds=(0.0, 6.0)),
    ActivationKind("hardtanh", (nn.Hardtanh,)),
    ActivationKind("hardswish", (nn.Hardswish,), (F.hardswish,)),
)
"""Every activation a fused chain may end with. Each user takes the names it can run:
the masked executor those of :data:`autoprune.kernels.ACTIVATIONS`, the engine the
ones oneDNN has a post-op for."""

_BY_MODULE = {t: k for k in ACTIVATION_TABLE for t in k.modules}
_BY_FUNCTION = {f: k for k in ACTIVATION_TABLE for f in k.functions}
_BY_METHOD = {m: k for k in ACTIVATION_TABLE for m in k.methods}


@dataclass(frozen=True)
class Activation:
    """An activation call: its table name and, for clamps (relu6, hardtanh), the bounds ``(lo, hi)``."""

    name: str
    scalars: tuple[float, ...] = ()


def activation_of(node: fx.Node, modules: Mapping[str, nn.Module]) -> Activation | None:
    """The activation ``node`` computes on its one tensor argument, or None if it is none of the table's."""
    if len(node.args) != 1 or any(k != "inplace" for k in node.kwargs):
        return None
    if node.op == "call_module":
        module = modules.get(node.target)
        kind = _BY_MODULE.get(type(module))
        if kind is None:
            return None
        if isinstance(module, nn.Hardtanh):
            return Activation(kind.name, (float(module.min_val), float(module.max_val)))
        return Activation(kind.name)
    if node.op == "call_function":
        kind = _BY_FUNCTION.get(node.target)
    elif node.op == "call_method":
        kind = _BY_METHOD.get(node.target)
    else:
        kind = None
    if kind is None:
        return None
    return Activation(kind.name, kind.bounds or ())


# -- modules ----------------------------------------------------------------------

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def is_plain_conv(module: nn.Module | None, types: tuple[type[nn.Module], ...] = _CONV_TYPES) -> bool:
    """A conv of one of ``types`` whose ``forward`` is that conv's own (what a fused op reproduces)."""
    return isinstance(module, types) and any(type(module).forward is t.forward for t in types)


def is_foldable_bn(module: nn.Module | None) -> bool:
    """A BatchNorm with running statistics and the stock ``forward`` (so eval mode is an affine map)."""
    return (
        isinstance(module, _BatchNorm)
        and type(module).forward is _BatchNorm.forward
        and module.running_mean is not None
        and module.running_var is not None
    )


def set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted ``path`` under ``root`` (its parent must exist)."""
    parent, _, child = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


# -- BN folding -------------------------------------------------------------------


def batchnorm_affine(
    mean: torch.Tensor,
    var: torch.Tensor,
    eps: float,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    conv_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval BatchNorm after a conv as a per-channel affine: ``bn(conv(x) + b) == conv(x)·scale + shift``.

    ``scale = weight / sqrt(var + eps)``, ``shift = bias − mean·scale + scale·conv_bias``
    (``b``: ``conv_bias``; ``weight``/``bias``: the BN's γ/β, None when it is not affine), computed in the
    tensors' dtype in this order.
    """
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    if conv_bias is not None:
        shift = shift + scale * conv_bias
    return scale, shift


def scale_weight(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``weight`` with output channel ``i`` multiplied by ``scale[i]`` (a BN folded into the conv)."""
    return weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))


# -- chains -----------------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    """``conv [→ bn] [→ add of residual] [→ act]`` in a graph, each node the sole user of the one before."""

    conv: fx.Node
    bn: fx.Node | None = None
    add: fx.Node | None = None
    residual: fx.Node | None = None
    act: fx.Node | None = None
    activation: Activation | None = None

    @property
    def nodes(self) -> list[fx.Node]:
        return [n for n in (self.conv, self.bn, self.add, self.act) if n is not None]

    @property
    def last(self) -> fx.Node:
        return self.nodes[-1]

    @property
    def source(self) -> fx.Argument:
        """The conv's input."""
        return node_input(self.conv)


def node_input(node: fx.Node) -> fx.Argument:
    """The one input of a module call (``module(x)`` or ``module(input=x)``)."""
    return node.args[0] if node.args else node.kwargs["input"]


def sole_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def module_calls(graph: fx.Graph) -> Counter[str]:
    """How many nodes call each submodule."""
    return Counter(str(n.target) for n in graph.nodes if n.op == "call_module")


def conv_chains(
    gm: fx.GraphModule,
    *,
    conv: Callable[[nn.Module | None], bool] = is_plain_conv,
    norms: bool = True,
    residual: Callable[[fx.Node, fx.Node], bool] | None = None,
    activations: Collection[str] = (),
    single_call: bool = False,
) -> Iterator[Chain]:
    """Every ``conv [→ BN] [→ add] [→ activation]`` chain of ``gm``, in graph order.

    ``conv``: which conv modules start a chain. ``norms``: take a foldable BN
    (:func:`is_foldable_bn`) that is the conv's sole user. ``residual(conv, other)``:
    whether the sole user ``conv_out + other`` may join the chain (None: never).
    ``activations``: the :data:`ACTIVATION_TABLE` names that may end it.
    ``single_call``: skip a conv, and leave out a BN, called at more than one place
    (what a rewrite of the module itself needs). A lone conv is yielded too.

    Lazy: the caller may rewrite the graph between chains (a later chain then sees
    the rewritten graph).
    """
    modules = dict(gm.named_modules())
    calls = module_calls(gm.graph)
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not conv(modules.get(node.target)):
            continue
        if single_call and calls[node.target] != 1:
            continue
        bn = add = other = act_node = act = None
        last = node
        user = sole_user(last)
        if (
            norms
            and _is_module_call(user, modules, is_foldable_bn)
            and (not single_call or calls[user.target] == 1)
        ):
            bn = last = user
            user = sole_user(last)
        if residual is not None and user is not None and _is_add(user):
            o = user.args[1] if user.args[0] is last else user.args[0]
            if isinstance(o, fx.Node) and o is not last and residual(node, o):
                add = last = user
                other = o
                user = sole_user(last)
        found = activation_of(user, modules) if user is not None else None
        if found is not None and found.name in activations:
            act_node, act = user, found
        yield Chain(node, bn, add, other, act_node, act)


def _is_module_call(node: fx.Node | None, modules: Mapping[str, nn.Module], test) -> bool:
    return node is not None and node.op == "call_module" and test(modules.get(node.target))


def _is_add(node: fx.Node) -> bool:
    return (
        node.op == "call_function"
        and node.target in (operator.add, torch.add)
        and not node.kwargs
        and len(node.args) == 2
    )


def replace_chain(gm: fx.GraphModule, chain: Chain, target: str, args: tuple[fx.Argument, ...]) -> fx.Node:
    """Replace the chain's nodes by one call of the submodule ``target`` on ``args``; the new node."""
    with gm.graph.inserting_before(chain.last):
        new = gm.graph.call_module(target, args)
    chain.last.replace_all_uses_with(new)
    for node in reversed(chain.nodes):  # each one's only user was the next, already gone
        gm.graph.erase_node(node)
    return new
