"""Tracing a model into a torch.fx graph, and running that graph node by node.

* :func:`trace`: symbolic trace in eval mode; every node records the module scope it
  was created in (:func:`node_scope`); an untraceable model is one clear
  :class:`~autoprune.errors.AutopruneError`.
* :func:`probe`: run a GraphModule and hand each node's value to a callback
  (shapes, bytes, the values themselves).
* :func:`propagate`: every node's value on ``meta`` tensors (shapes without
  arithmetic, through :class:`ShapeProp`), falling back to a real run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.func import functional_call

from autoprune.errors import AutopruneError
from autoprune.fx.ops import CONV_MODULES, SHAPE_KEEPING_FUNCS, SHAPE_KEEPING_METHODS, SHAPE_KEEPING_MODULES

SCOPE_KEY = "ap_scope"


class _ScopedTracer(fx.Tracer):
    """The default fx tracer that also records which module each node was created in."""

    def __init__(self) -> None:
        super().__init__()
        self._scope: list[str] = []
        self.calls: dict[str, int] = {}

    def call_module(self, m: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> Any:
        name = self.path_of_module(m)
        self.calls[name] = self.calls.get(name, 0) + 1
        self._scope.append(name)
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self._scope.pop()

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:
        node = super().create_node(*args, **kwargs)
        node.meta[SCOPE_KEY] = tuple(self._scope)
        return node


def trace(model: nn.Module) -> tuple[fx.GraphModule, dict[str, int]]:
    """Symbolically trace ``model`` in eval mode (its mode is restored afterwards).

    Returns the GraphModule and how many times the forward called each submodule
    (by qualified name; a module called twice shares its weights between two places).
    Each node's enclosing module path is :func:`node_scope`. Raises
    :class:`AutopruneError` naming the model class and fx's reason when fx cannot trace.
    """
    tracer = _ScopedTracer()
    was_training = model.training
    model.eval()
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, RuntimeError ...)
        raise AutopruneError(untraceable_message(model, exc)) from None
    finally:
        model.train(was_training)
    return fx.GraphModule(tracer.root, graph), tracer.calls


def untraceable_message(model: nn.Module, exc: BaseException) -> str:
    """The one-line error for a model torch.fx cannot trace."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return (
        f"torch.fx cannot trace {type(model).__name__}: {first} (autoprune needs a traceable forward: "
        "move data-dependent Python control flow into a submodule or wrap it with torch.fx.wrap)"
    )


def node_scope(node: fx.Node) -> tuple[str, ...]:
    """Qualified names of the modules whose forward created ``node``, outermost first."""
    return node.meta.get(SCOPE_KEY, ())


def probe(
    gm: fx.GraphModule,
    inputs: tuple[Any, ...],
    on_node: Callable[[fx.Node, Any], None],
    *,
    interpreter: type[fx.Interpreter] = fx.Interpreter,
    inference: bool = False,
) -> Any:
    """Run ``gm`` on ``inputs`` node by node, calling ``on_node(node, value)`` after each node.

    ``value`` is whatever the node produced (a tensor, a tuple, a Python value; the
    output node gives the graph's result). Runs without autograd (``inference``:
    under ``torch.inference_mode``, whose tensors cannot enter autograd later).
    ``interpreter`` may be an :class:`fx.Interpreter` subclass such as :class:`ShapeProp`.
    Returns the graph's output; exceptions of the run propagate unchanged.
    """
    interp = interpreter(gm)
    run_node = interp.run_node

    def observed(n: fx.Node) -> Any:
        value = run_node(n)
        on_node(n, value)
        return value

    interp.run_node = observed  # type: ignore[method-assign]
    with torch.inference_mode() if inference else torch.no_grad():
        return interp.run(*inputs)


def propagate(gm: fx.GraphModule, inputs: tuple[torch.Tensor, ...]) -> dict[fx.Node, Any]:
    """Value of every node: on ``meta`` tensors when :class:`ShapeProp` can run the graph
    (shapes only), else on ``inputs`` themselves. Raises :class:`AutopruneError` when
    the graph fails on them."""
    values: dict[fx.Node, Any] = {}
    with contextlib.suppress(Exception):  # an op without a meta kernel: run it for real below
        probe(gm, tuple(t.to("meta") for t in inputs), values.__setitem__, interpreter=ShapeProp)
        return values
    values.clear()
    try:
        probe(gm, inputs, values.__setitem__)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AutopruneError(f"the traced model fails on the example input: {first}") from None
    return values


class ShapeProp(fx.Interpreter):
    """Runs the graph on ``meta`` tensors (shapes only, no arithmetic).

    Shape-preserving layers (norms, activations) pass their input through, conv and
    linear layers run with meta weights; only other modules with state go through
    ``functional_call`` (slow on meta, but rare).
    """

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        mod = self.fetch_attr(target)
        x = args[0] if args else None
        if kwargs or len(args) != 1 or not isinstance(x, torch.Tensor):
            return _meta_call(mod, args, kwargs)
        if isinstance(mod, SHAPE_KEEPING_MODULES):
            return x
        if isinstance(mod, nn.Linear):
            return torch.empty((*x.shape[:-1], mod.out_features), dtype=x.dtype, device="meta")
        if isinstance(mod, CONV_MODULES):
            w = torch.empty(mod.weight.shape, dtype=x.dtype, device="meta")
            return mod._conv_forward(x, w, None)
        return _meta_call(mod, args, kwargs)

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if target in SHAPE_KEEPING_FUNCS and args and isinstance(args[0], torch.Tensor):
            return args[0]
        return super().call_function(target, args, kwargs)

    def call_method(self, target: str, args: tuple, kwargs: dict) -> Any:
        if target in SHAPE_KEEPING_METHODS and args and isinstance(args[0], torch.Tensor):
            return args[0]
        return super().call_method(target, args, kwargs)

    def get_attr(self, target: str, args: tuple, kwargs: dict) -> Any:
        value = super().get_attr(target, args, kwargs)
        return value.to("meta") if isinstance(value, torch.Tensor) else value


def _meta_call(mod: nn.Module, args: tuple, kwargs: dict) -> Any:
    """``mod(*args, **kwargs)`` with its parameters and buffers moved to ``meta``."""
    state = mod.state_dict(keep_vars=True)
    if not state:
        return mod(*args, **kwargs)
    return functional_call(mod, {k: v.to("meta") for k, v in state.items()}, args, kwargs)
