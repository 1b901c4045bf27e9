"""Ops the analysis does not understand: fail closed, and keep their cost.

Every channel that enters such an op is frozen (an unknown op can shrink the
search space, never produce a wrong model); its outputs carry no layout. If the
op may multiply-accumulate (an unknown layer, attention, a functional conv), its
MACs are measured once and recorded as a constant cost of the enclosing module.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from autoprune.flops import counted_macs
from autoprune.fx.ops import FLOP_HINTS
from autoprune.fx.tracing import node_scope
from autoprune.graph.model import TInfo
from autoprune.graph.state import State, op_name, unknown_value


def unknown(st: State, node: fx.Node, value: Any, reason: str) -> Any:
    """Freeze everything entering ``node``; its outputs carry no layout."""
    count_opaque(st, node)
    inputs = st.input_infos(node)
    st.freeze(inputs, f"channels pass through {reason}")
    out = unknown_value(value, st.ctx_of(node, inputs) if isinstance(value, torch.Tensor) else 0)
    if isinstance(out, TInfo):
        out.ctx = st.ctx_of(node, inputs)
    return out


def count_opaque(st: State, node: fx.Node) -> None:
    """MACs of an op the analysis does not model (attention matmuls, an unknown layer),
    measured with FlopCounterMode on the node's recorded inputs: a frozen constant cost."""
    if node.op != "call_module" and not any(h in op_name(node).lower() for h in FLOP_HINTS):
        return
    # rerun on real zeros, like the measured model (meta tensors take other kernels, e.g. no
    # fused attention fast path, which FlopCounterMode counts differently)
    real: dict[fx.Node, Any] = {}  # one tensor per node: `q is k is v` selects attention kernels

    def value(n: fx.Node) -> Any:
        if n not in real:
            real[n] = _materialize(st.values.get(n), st.device)
        return real[n]

    args, kwargs = fx.node.map_arg(node.args, value), fx.node.map_arg(node.kwargs, value)

    def run() -> Any:
        if node.op == "call_module":
            return st.gm.get_submodule(str(node.target))(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], str(node.target))(*args[1:], **kwargs)
        return node.target(*args, **kwargs)

    try:
        macs = counted_macs(run)
    except Exception:  # an op that cannot rerun on its recorded inputs: count nothing
        return
    if macs:
        scope = node_scope(node)
        st.extra_macs.append((scope[-1] if scope else "", macs // max(st.batch, 1)))


def _materialize(value: Any, device: torch.device) -> Any:
    """Meta tensors (also inside lists) -> zeros on ``device``; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.is_meta:
        return torch.zeros(value.shape, dtype=value.dtype, device=device)
    if isinstance(value, (tuple, list)):
        return type(value)(_materialize(v, device) for v in value)
    return value
