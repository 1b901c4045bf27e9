"""Residual blocks: modules that hold one sum ``branch(x) + shortcut(x)``.

They are the units of the depth view (SR-init block sensitivity, block removal):
a block is removable when its input and output shapes agree, and its branch can
be silenced by zeroing the last norm/conv/linear on the branch (``branch_end``).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from autoprune.fx.ops import CHANNEL_NORM_MODULES, CONV_MODULES, RESIDUAL_ADD_FUNCS, RESIDUAL_ADD_METHODS
from autoprune.fx.tracing import node_scope
from autoprune.graph.model import BlockInfo


def find_blocks(
    gm: fx.GraphModule, values: dict[fx.Node, Any], calls: dict[str, int], ctx: dict[str, int]
) -> list[BlockInfo]:
    """Modules that hold exactly one residual sum of two equal-shape tensors."""
    by_scope: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        for s in node_scope(node):
            by_scope.setdefault(s, []).append(node)
    adds: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if not _is_tensor_add(node, values):
            continue
        scope = node_scope(node)
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
    if not (
        node.op == "call_function"
        and node.target in RESIDUAL_ADD_FUNCS
        or node.op == "call_method"
        and node.target in RESIDUAL_ADD_METHODS
    ):
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
            if isinstance(mod, (*CHANNEL_NORM_MODULES, *CONV_MODULES, nn.Linear)):
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
