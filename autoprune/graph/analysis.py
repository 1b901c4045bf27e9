"""The driver: trace, propagate shapes, walk the graph once in order, find residual blocks.

Each node gets a descriptor (:class:`TInfo` for a tensor, :class:`Attr` for a
fetched parameter, a tuple of them, or a Python value) from the rule registered
for its op: module rules by module family, function and method rules in tables
built once at import. An op without a rule fails closed
(:func:`~autoprune.graph.opaque.unknown`).
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from autoprune.errors import AutopruneError
from autoprune.fx.tracing import propagate, trace
from autoprune.graph import elementwise, shape_rules
from autoprune.graph.blocks import find_blocks
from autoprune.graph.model import Analysis, Attr, TInfo
from autoprune.graph.module_rules import visit_module
from autoprune.graph.opaque import unknown
from autoprune.graph.state import FunctionRule, State, flatten_args, op_name


def _merge(*tables: dict[Any, FunctionRule]) -> dict[Any, FunctionRule]:
    """One dispatch table; an op claimed by two families with different rules is a bug."""
    merged: dict[Any, FunctionRule] = {}
    for table in tables:
        for key, rule in table.items():
            if merged.setdefault(key, rule) is not rule:
                raise AssertionError(f"two rules for {key!r}")
    return merged


FUNCTION_RULES = _merge(elementwise.FUNCTIONS, shape_rules.FUNCTIONS)
METHOD_RULES = _merge(elementwise.METHODS, shape_rules.METHODS)
NAMED_FUNCTION_RULES = elementwise.NAMED_FUNCTIONS


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
        st = State(gm, values, calls, inputs[0].device)
        walk(st)
    finally:
        model.train(was_training)
    node_ctx = {n.name: d.ctx for n, d in st.desc.items() if isinstance(d, TInfo)}
    return Analysis(
        spaces=st.spaces,
        layers=st.layers,
        frozen_modules=st.frozen_modules,
        blocks=find_blocks(gm, values, calls, node_ctx),
        node_ctx=node_ctx,
        extra_macs=st.extra_macs,
        batch=st.batch,
        input_shape=st.input_shape,
    )


def walk(st: State) -> None:
    """Give every node of the graph its descriptor, in graph order."""
    for node in st.gm.graph.nodes:
        desc = visit(st, node)
        if node.op in ("call_module", "call_function", "call_method"):
            set_ctx(desc, st.input_infos(node))
        st.desc[node] = desc


def set_ctx(desc: Any, inputs: list[TInfo]) -> None:
    """Resolution context of an op's outputs: their own spatial size (all dims but batch and
    channels) when it exceeds 1, else the smallest context among the inputs (pooled SE
    vectors and classifier features belong to the stage they were pooled from)."""
    inherited = min((i.ctx for i in inputs if i.ctx), default=0)
    for t in flatten_args(desc) if isinstance(desc, (tuple, list)) else (desc,):
        if not isinstance(t, TInfo):
            continue
        own = 0
        if t.axis is not None and len(t.shape) >= 3:
            own = math.prod(n for d, n in enumerate(t.shape) if d not in (0, t.axis))
        t.ctx = own if own > 1 else inherited


def visit(st: State, node: fx.Node) -> Any:
    """The descriptor of one node."""
    if node.op == "placeholder":
        return _placeholder(st, node)
    if node.op == "get_attr":
        value = st.values.get(node)
        if isinstance(value, torch.Tensor):
            return Attr(str(node.target), tuple(value.shape), _is_param(st.gm, str(node.target)))
        return None
    if node.op == "output":
        st.freeze(_info_tree(st, node.args), "model output (the classifier's outputs are never pruned)")
        return None
    value = st.values.get(node)
    if node.op == "call_module":
        return visit_module(st, node, value)
    if not any(isinstance(v, torch.Tensor) for v in flatten_args(value)):
        return _non_tensor(st, node)
    rule = rule_for(node)
    if rule is None:
        return unknown(st, node, value, f"unsupported op {op_name(node)}")
    return rule(st, node)


def rule_for(node: fx.Node) -> FunctionRule | None:
    """The rule for a call_function / call_method node, or None."""
    if node.op == "call_method":
        return METHOD_RULES.get(node.target)
    rule = FUNCTION_RULES.get(node.target)
    if rule is None:
        rule = NAMED_FUNCTION_RULES.get(getattr(node.target, "__name__", ""))
    return rule


def _placeholder(st: State, node: fx.Node) -> Any:
    value = st.values.get(node)
    if not isinstance(value, torch.Tensor):
        return None
    shape = tuple(value.shape)
    if not st.input_shape:
        st.input_shape, st.batch = shape, shape[0] if shape else 1
    if len(shape) < 2:
        return TInfo(shape, None, None, 0)
    info = TInfo(shape, 1, st.fresh(shape[1], "network input (input channels are never pruned)"))
    info.ctx = st.ctx_of(node, ())
    return info


def _non_tensor(st: State, node: fx.Node) -> Any:
    """``x.size(1)``, ``x.shape``: harmless unless fed back into shapes (checked there)."""
    if node.op == "call_function" and node.target is operator.getitem:
        src = st.info(node.args[0])
        if isinstance(src, (tuple, list)):
            try:
                return src[node.args[1]]
            except (IndexError, TypeError, KeyError):
                return None
    return None


def _is_param(gm: fx.GraphModule, target: str) -> bool:
    try:
        gm.get_parameter(target)
        return True
    except AttributeError:
        return False


def _info_tree(st: State, obj: Any) -> Any:
    if isinstance(obj, fx.Node):
        return st.desc.get(obj)
    if isinstance(obj, (tuple, list)):
        return tuple(_info_tree(st, o) for o in obj)
    if isinstance(obj, dict):
        return tuple(_info_tree(st, o) for o in obj.values())
    return None
