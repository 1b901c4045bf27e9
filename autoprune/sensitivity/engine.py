"""Run a traced model from any cut: the prefix-caching engine behind sensitivity.

The model is traced once with torch.fx into a flat list of nodes. A **cut** is a
position in that list; the values *live* at a cut (computed before it, used at
or after it) are all a pass starting there needs. The engine generates, once
per pair of positions, a small ``GraphModule`` that maps the live values at one
position to those at the next (or to the logits), sharing the engine's
submodules. A perturbed unit runs from the first node that reads one of its
tensors; everything before that is the clean, cached prefix.

Optional rewrites make the inference copy faster without changing what it
computes (up to float rounding; the engine's naive reference uses the same
arithmetic, so cached and naive values agree exactly):

* ``fold_bn``: an eval-mode BatchNorm that is the only consumer of a conv is
  folded into that conv (``w * gamma / sqrt(var + eps)``, bias likewise). Unit
  overrides on the conv or the norm are re-folded by :meth:`Engine.derive`.
* ``channels_last``: 4-d weights and the input use the NHWC memory format.
* ``fuse``: on the CPU (float32), a 2-d conv followed by ReLU/ReLU6/Hardtanh, by a
  same-shape residual add, or by both, becomes one oneDNN call
  (``torch.ops.mkldnn._convolution_pointwise``) with the activation and the add as
  post-ops; the activation pass over memory disappears. On CUDA (or on any device
  when ``kernels`` names a backend: a test and benchmark hook), each conv with its
  folded BN and its activation becomes one fused op of :mod:`autoprune.kernels`
  (:class:`FoldedKernelConv`, the masked executor's
  :class:`~autoprune.executor.KernelConv` without a mask); a residual add stays a
  separate op. Either may round differently from the unfused graph in the last
  bits, like folding (the near-tie rescoring of :mod:`.rescore` keeps top-1 exact).
* in-place activations and ``+=`` become out-of-place, so cached values are
  never overwritten by a suffix pass.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import torch
import torch.fx as fx
from torch import nn
from torch.func import functional_call

from autoprune.errors import AutopruneError
from autoprune.executor import KernelConv
from autoprune.fx.fusion import (
    batchnorm_affine,
    conv_chains,
    is_plain_conv,
    replace_chain,
    scale_weight,
    set_module,
)
from autoprune.fx.tracing import probe, trace
from autoprune.kernels import ACTIVATIONS, BACKENDS

T = TypeVar("T")

_INPLACE_FUNCS = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}


@dataclass(frozen=True)
class _Fold:
    """A conv whose following BatchNorm is folded into it."""

    conv: str
    bn: str
    eps: float
    conv_bias: bool
    bn_affine: bool

    @property
    def sources(self) -> tuple[str, ...]:
        keys = [f"{self.conv}.weight", f"{self.bn}.running_mean", f"{self.bn}.running_var"]
        if self.conv_bias:
            keys.append(f"{self.conv}.bias")
        if self.bn_affine:
            keys += [f"{self.bn}.weight", f"{self.bn}.bias"]
        return tuple(keys)

    def fuse(self, get) -> tuple[torch.Tensor, torch.Tensor]:
        """Folded (weight, bias); ``get(key)`` returns the raw tensor of a state key."""
        scale, bias = batchnorm_affine(
            get(f"{self.bn}.running_mean"),
            get(f"{self.bn}.running_var"),
            self.eps,
            get(f"{self.bn}.weight") if self.bn_affine else None,
            get(f"{self.bn}.bias") if self.bn_affine else None,
            get(f"{self.conv}.bias") if self.conv_bias else None,
        )
        return scale_weight(get(f"{self.conv}.weight"), scale), bias


class Engine:
    """An inference copy of ``model`` that can run from any cut (see the module docstring).

    ``kernels``: None runs conv chains as :mod:`autoprune.kernels` ops on CUDA and as oneDNN
    calls on the CPU; a backend (``auto``, ``torch``, ``triton``, ``numba``) runs them as
    kernel ops with that backend on any device. :attr:`kernels` is the backend in use, or
    None; :attr:`fused` the number of chains fused.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        fold_bn: bool = True,
        channels_last: bool = True,
        fuse: bool = True,
        example: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
        kernels: str | None = None,
    ) -> None:
        self.device = torch.device(device)
        raw = copy.deepcopy(model).eval().to(self.device)
        for m in raw.modules():
            if hasattr(m, "inplace"):
                m.inplace = False
        self.raw_state = {k: v.detach() for k, v in raw.state_dict().items()}
        self.gm, _ = trace(raw)
        _make_out_of_place(self.gm.graph)
        self.folds: dict[str, _Fold] = _fold_batchnorms(self.gm) if fold_bn else {}
        self.channels_last = channels_last
        self._folded_keys = {k for f in self.folds.values() for k in f.sources}
        self.gm.delete_all_unused_submodules()
        self.gm.recompile()
        _load_tensors(self.gm, self.derive(self.raw_state, full=True))
        self.fused = 0
        self.kernels = _kernel_backend(self.device, kernels) if fuse else None
        if self.kernels is not None:
            self.fused = _fuse_kernels(self.gm, self.kernels)
        elif fuse and example is not None and _can_fuse(self.device, example):
            self.fused = self._fuse(self.format(example))
        self._index_graph()
        self._modules: dict[tuple[int, int], fx.GraphModule] = {}
        self._key_sets: dict[int, set[str]] = {}

    # -- tensors ------------------------------------------------------------------

    def format(self, t: torch.Tensor) -> torch.Tensor:
        """The memory format the engine runs 4-d tensors in."""
        if self.channels_last and t.dim() == 4:
            return t.to(self.device, memory_format=torch.channels_last)
        return t.to(self.device)

    def derive(self, overrides: Mapping[str, torch.Tensor], *, full: bool = False) -> dict[str, torch.Tensor]:
        """Engine tensors implied by raw ``overrides`` (state-dict keys of the original model).

        Folded convs touched by an override are re-folded from the overridden and
        the original tensors; other keys pass through. ``full`` derives every
        engine tensor (how the engine's own weights are made, so an override equal
        to the original yields bitwise the same engine tensors).
        """
        out: dict[str, torch.Tensor] = {}

        def get(key: str) -> torch.Tensor:
            t = overrides.get(key)
            return (self.raw_state[key] if t is None else t).to(self.device)

        touched = set(overrides)
        for conv, fold in self.folds.items():
            if full or touched.intersection(fold.sources):
                w, b = fold.fuse(get)
                out[f"{conv}.weight"] = self.format(w)
                out[f"{conv}.bias"] = self.format(b)
        for key, t in overrides.items():
            if key in self._folded_keys or not t.is_floating_point():
                continue
            if full and not _has_tensor(self.gm, key):
                continue
            out[key] = self.format(t)
        return out

    def _fuse(self, example: torch.Tensor) -> int:
        """Fuse conv + activation / residual add (see the module docstring); the number fused."""
        return _fuse_conv_pointwise(self.gm, _probe(self.gm, example, lambda t: tuple(t.shape)))

    # -- graph positions ----------------------------------------------------------

    def _index_graph(self) -> None:
        nodes = list(self.gm.graph.nodes)
        self.inputs = [n for n in nodes if n.op == "placeholder"]
        self.output = next(n for n in nodes if n.op == "output")
        self.nodes = [n for n in nodes if n.op not in ("placeholder", "output", "get_attr")]
        self.end = len(self.nodes)
        pos = {n: i for i, n in enumerate(self.nodes)}
        pos.update({n: -1 for n in self.inputs})
        pos[self.output] = self.end
        self._last_use: dict[fx.Node, int] = {}
        for n in [*self.inputs, *self.nodes]:
            self._last_use[n] = max((pos[u] for u in n.users), default=-1)
        # first position that reads each module / attribute
        self._first: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            targets = [n.target] if n.op == "call_module" else []
            targets += [a.target for a in n.all_input_nodes if a.op == "get_attr"]
            for t in targets:
                self._first.setdefault(str(t), i)

    def live(self, position: int) -> list[fx.Node]:
        """Values computed before ``position`` and still needed at or after it."""
        before = [*self.inputs, *self.nodes[:position]]
        return [n for n in before if self._last_use[n] >= position]

    def cut_for(self, engine_keys: Iterable[str]) -> int:
        """The first position reading any of ``engine_keys`` (``end`` if none is read)."""
        cut = self.end
        for key in engine_keys:
            owner = key.rpartition(".")[0]
            for target in (key, owner):
                if target in self._first:
                    cut = min(cut, self._first[target])
        return cut

    # -- running ------------------------------------------------------------------

    def module(self, start: int, stop: int) -> fx.GraphModule:
        """Live values at ``start`` -> live values at ``stop`` (a tuple), or the output if ``stop == end``."""
        key = (start, stop)
        if key not in self._modules:
            self._modules[key] = self._build(start, stop)
        return self._modules[key]

    def _build(self, start: int, stop: int) -> fx.GraphModule:
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {n: graph.placeholder(n.name) for n in self.live(start)}

        def arg(n: fx.Node) -> fx.Node:
            if n.op == "get_attr" and n not in env:
                env[n] = graph.get_attr(n.target)
            return env[n]

        for n in self.nodes[start:stop]:
            env[n] = graph.node_copy(n, arg)
        if stop == self.end:
            graph.output(fx.map_arg(self.output.args[0], arg))
        else:
            graph.output(tuple(env[n] for n in self.live(stop)))
        return fx.GraphModule(self.gm, graph)

    def run(
        self,
        start: int,
        stop: int,
        values: Sequence[torch.Tensor],
        overrides: Mapping[str, torch.Tensor] | None = None,
    ):
        """Run positions ``[start, stop)`` on the live values at ``start`` (engine-tensor overrides)."""
        mod = self.module(start, stop)
        if overrides:
            mine = self._keys(mod)
            overrides = {k: v for k, v in overrides.items() if k in mine}
        if not overrides:
            return mod(*values)
        return functional_call(mod, overrides, tuple(values), strict=False)

    def _keys(self, mod: nn.Module) -> set[str]:
        keys = self._key_sets.get(id(mod))
        if keys is None:
            keys = self._key_sets[id(mod)] = set(mod.state_dict().keys())
        return keys

    def forward(self, x: torch.Tensor, overrides: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The whole network (what the naive method reruns for every unit and seed)."""
        if overrides:
            mine = self._keys(self.gm)
            overrides = {k: v for k, v in overrides.items() if k in mine}
        if not overrides:
            return self.gm(x)
        return functional_call(self.gm, overrides, (x,), strict=False)

    # -- memory -------------------------------------------------------------------

    def bytes_per_image(self, example: torch.Tensor) -> int:
        """Peak bytes per image of a cached pass: the largest cut cache plus a pass's working set."""
        sizes = _probe(self.gm, self.format(example), lambda t: t.numel() * t.element_size())
        batch = example.shape[0]
        inputs = sum(sizes.get(n, 0) for n in self.inputs)
        live_now, peak_work, peak_cache = inputs, 0, inputs
        for i, n in enumerate(self.nodes):
            out = sizes.get(n, 0)
            peak_work = max(peak_work, live_now + out)
            dead = sum(sizes.get(m, 0) for m in [*self.inputs, *self.nodes[:i]] if self._last_use[m] == i)
            live_now = live_now + out - dead
            peak_cache = max(peak_cache, live_now)
        return max(1, (peak_cache + peak_work) // batch)


def _make_out_of_place(graph: fx.Graph) -> None:
    """``x += y`` -> ``x + y`` and ``x.relu_()`` -> ``x.relu()``: same values, nothing overwritten."""
    for n in graph.nodes:
        if n.op == "call_function" and n.target in _INPLACE_FUNCS:
            n.target = _INPLACE_FUNCS[n.target]
        elif n.op == "call_method" and n.target.endswith("_") and not n.target.startswith("_"):
            if hasattr(torch.Tensor, n.target[:-1]):
                n.target = n.target[:-1]
        elif n.op == "call_function" and "inplace" in n.kwargs:
            n.kwargs = {**n.kwargs, "inplace": False}


def _fold_batchnorms(gm: fx.GraphModule) -> dict[str, _Fold]:
    """Fold each eval BatchNorm that is a conv's only consumer into that conv (graph edit).

    Both modules must be called at one place only: the conv's own weights change.
    """
    folds: dict[str, _Fold] = {}
    for chain in list(conv_chains(gm, single_call=True)):
        if chain.bn is None:
            continue
        conv, bn = gm.get_submodule(chain.conv.target), gm.get_submodule(chain.bn.target)
        fused = copy.deepcopy(conv)
        fused.bias = nn.Parameter(torch.zeros(conv.out_channels, device=conv.weight.device))
        set_module(gm, chain.conv.target, fused)
        folds[chain.conv.target] = _Fold(
            chain.conv.target, chain.bn.target, float(bn.eps), conv.bias is not None, bn.affine
        )
        chain.bn.replace_all_uses_with(chain.conv)
        gm.graph.erase_node(chain.bn)
    return folds


class OneDNNConv(nn.Module):
    """A 2-d conv with an activation and optionally a residual add as oneDNN post-ops: one call.

    Holds the conv's ``weight`` and ``bias`` under the same names, so overrides of
    the conv apply unchanged.
    """

    def __init__(self, conv: nn.Conv2d, unary: str | None, scalars: list[float], add: bool) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.padding = list(conv.padding)
        self.stride, self.dilation, self.groups = list(conv.stride), list(conv.dilation), conv.groups
        self.unary, self.scalars, self.add = unary, scalars, add

    def forward(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        args = (self.padding, self.stride, self.dilation, self.groups)
        if other is None:
            return torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, *args, self.unary or "none", self.scalars, ""
            )
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, other, self.weight, self.bias, *args, "add", 1.0, self.unary, self.scalars, ""
        )


_ONEDNN_UNARY = {"relu": "relu", "relu6": "hardtanh", "hardtanh": "hardtanh"}
"""Activations (names of :data:`~autoprune.fx.fusion.ACTIVATION_TABLE`) fused as a oneDNN unary post-op."""


def _can_fuse(device: torch.device, example: torch.Tensor) -> bool:
    return (
        device.type == "cpu"
        and example.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    )


def _is_onednn_conv(module: nn.Module | None) -> bool:
    return (
        is_plain_conv(module, (nn.Conv2d,))
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def _fuse_conv_pointwise(gm: fx.GraphModule, shapes: dict[fx.Node, tuple[int, ...]]) -> int:
    """Rewrite conv -> [add] -> [activation] chains into :class:`OneDNNConv` calls (graph edit)."""

    def same_shape(conv: fx.Node, other: fx.Node) -> bool:
        return shapes.get(other) == shapes.get(conv) is not None

    count = 0
    chains = conv_chains(
        gm,
        conv=_is_onednn_conv,
        norms=False,
        residual=same_shape,
        activations=_ONEDNN_UNARY,
        single_call=True,
    )
    for chain in chains:  # lazily: a fused output may be a later chain's residual
        if chain.add is not None and chain.activation is not None and chain.activation.name != "relu":
            chain = replace(chain, act=None, activation=None)  # oneDNN: add + hardtanh is undefined
        if len(chain.nodes) == 1:
            continue
        unary, scalars = None, []
        if chain.activation is not None:
            unary, scalars = _ONEDNN_UNARY[chain.activation.name], list(chain.activation.scalars)
        conv = gm.get_submodule(chain.conv.target)
        set_module(gm, chain.conv.target, OneDNNConv(conv, unary, scalars, chain.add is not None))
        args = (chain.source,) if chain.residual is None else (chain.source, chain.residual)
        last = chain.last
        new = replace_chain(gm, chain, chain.conv.target, args)
        if last in shapes:  # a later add may take this output as its residual
            shapes[new] = shapes[last]
        count += 1
    gm.delete_all_unused_submodules()
    gm.recompile()
    return count


class FoldedKernelConv(KernelConv):
    """A conv with its folded BN and its activation as one fused op of :mod:`autoprune.kernels`, no mask.

    Holds the conv's ``weight`` and ``bias`` under the same names, so overrides of the
    conv (re-folded by :meth:`Engine.derive`) apply unchanged; the op's scale is 1 and
    its shift the folded bias.
    """

    def __init__(self, conv: nn.Conv2d, act: str, backend: str) -> None:
        super().__init__(conv, act)
        self.weight, self.bias = conv.weight, conv.bias
        self.backend = backend
        ones = torch.ones(conv.out_channels, device=conv.weight.device)
        self._ones, self._zeros = ones, torch.zeros_like(ones)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shift = self._zeros if self.bias is None else self.bias
        return self.run(x, self.weight, self._ones, shift, self.act, None, self.backend)


def _kernel_backend(device: torch.device, kernels: str | None) -> str | None:
    """The backend conv chains run with as kernel ops, or None (oneDNN on the CPU, see :class:`Engine`)."""
    if kernels is None:
        return "auto" if device.type == "cuda" else None
    if kernels not in ("auto", *BACKENDS):
        raise AutopruneError(f"invalid kernels {kernels!r}: use one of auto, {', '.join(BACKENDS)}")
    return kernels


def _fuse_kernels(gm: fx.GraphModule, backend: str) -> int:
    """Rewrite conv -> [activation] chains (BN already folded) into :class:`FoldedKernelConv` calls."""
    count = 0
    chains = conv_chains(gm, conv=KernelConv.accepts, norms=False, activations=ACTIVATIONS, single_call=True)
    for chain in chains:
        act = "none" if chain.activation is None else chain.activation.name
        fused = FoldedKernelConv(gm.get_submodule(chain.conv.target), act, backend)
        if fused.kind == "generic" and act == "none":
            continue  # the kernels would add nothing to a plain conv
        set_module(gm, chain.conv.target, fused)
        replace_chain(gm, chain, chain.conv.target, (chain.source,))
        count += 1
    gm.delete_all_unused_submodules()
    gm.recompile()
    return count


def _probe(
    gm: fx.GraphModule, example: torch.Tensor, measure: Callable[[torch.Tensor], T]
) -> dict[fx.Node, T]:
    """``measure`` of each node's tensor output on ``example`` (one pass of :func:`~autoprune.fx.probe`)."""
    found: dict[fx.Node, T] = {}

    def on_node(n: fx.Node, value) -> None:
        if isinstance(value, torch.Tensor):
            found[n] = measure(value)

    probe(gm, (example,), on_node, inference=True)
    return found


def _has_tensor(gm: nn.Module, key: str) -> bool:
    owner, _, attr = key.rpartition(".")
    try:
        mod = gm.get_submodule(owner) if owner else gm
    except AttributeError:
        return False
    return attr in mod._parameters or attr in mod._buffers


def _load_tensors(gm: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Replace the engine's parameters and buffers by ``tensors`` (no autograd)."""
    for key, t in tensors.items():
        owner, _, attr = key.rpartition(".")
        mod = gm.get_submodule(owner) if owner else gm
        if attr in mod._parameters:
            mod._parameters[attr] = nn.Parameter(t, requires_grad=False)
        elif attr in mod._buffers:
            mod._buffers[attr] = t
