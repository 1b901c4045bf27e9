"""Resolution stages of a traced network, and running one stage from its input tensor.

The space numbers its groups' resolution stages (0 = highest resolution). Here the fx
graph is cut between consecutive stages at the last node of stage ``s`` where exactly
one tensor is live (needed later): that tensor is the *boundary* of stage ``s``, the
input of stage ``s + 1``. The last stage ends at the logits. A boundary's channel
layout (which groups its channels belong to) is read from the first layer that
consumes it, so a plan's kept positions of the boundary are known.

:class:`StageGraph` is an ``nn.Module`` around the GraphModule (whose submodules are
the model's own), so ``functional_call`` on it runs stages with sliced weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.fx as fx
from torch import nn

from autoprune.errors import AutopruneError
from autoprune.fx import propagate, trace
from autoprune.space import PruningSpace

Segs = tuple[tuple[int, int, int], ...]


def _res(value: object) -> int | None:
    if isinstance(value, torch.Tensor) and value.ndim >= 3:
        n = 1
        for s in value.shape[2:]:
            n *= int(s)
        return n
    return None


class StageGraph(nn.Module):
    """The stages of ``model`` as ``space`` numbers them; see the module docstring."""

    def __init__(self, model: nn.Module, space: PruningSpace, example: torch.Tensor) -> None:
        super().__init__()
        self.gm, _ = trace(model)
        nodes = list(self.gm.graph.nodes)
        values = propagate(self.gm, (example,))
        pos = {n: i for i, n in enumerate(nodes)}
        levels = _resolution_levels(space, nodes, values)
        self.n_stages = len(levels)
        node_stage = _node_stages(nodes, values, levels)
        boundary_pos = _boundary_positions(nodes, values, pos, node_stage, self.n_stages)
        output = next(n for n in nodes if n.op == "output")
        result = output.args[0]
        if not isinstance(result, fx.Node) or not isinstance(values.get(result), torch.Tensor):
            raise AutopruneError("stage-wise training needs a model that returns one tensor (the logits)")
        self.boundaries: list[fx.Node] = [nodes[p] for p in boundary_pos] + [result]
        self.channels = [int(values[b].shape[1]) for b in self.boundaries]
        self.segs: list[Segs | None] = [
            _boundary_segs(b, space, values, c)
            for b, c in zip(self.boundaries[:-1], self.channels, strict=False)
        ] + [None]
        placeholder = next(n for n in nodes if n.op == "placeholder")
        self._inputs: list[fx.Node] = [placeholder, *self.boundaries[:-1]]
        self._runs: list[list[fx.Node]] = _stage_runs(nodes, [*boundary_pos, pos[result]], self._inputs)
        self._interp = fx.Interpreter(self.gm)

    def forward(
        self, inputs: Sequence[torch.Tensor | None], stages: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """Output of each stage in ``stages`` (default all) from its input ``inputs[s]``.

        ``inputs[s]`` of a stage not run may be None; when ``inputs[s]`` is None for a stage
        that is run, the previous stage's output of this call is used (a chained, whole pass).
        """
        stages = list(range(self.n_stages)) if stages is None else list(stages)
        outputs: list[torch.Tensor] = []
        prev: torch.Tensor | None = None
        interp = self._interp
        for s in stages:
            x = inputs[s] if inputs[s] is not None else prev
            if x is None:
                raise AutopruneError(f"stage {s} has no input")
            interp.env = {self._inputs[s]: x}
            for n in self._runs[s]:
                interp.env[n] = interp.run_node(n)
            prev = interp.env[self.boundaries[s]]
            interp.env = {}
            outputs.append(prev)
        return outputs


def _boundary_segs(
    node: fx.Node, space: PruningSpace, values: dict[fx.Node, object], channels: int
) -> Segs | None:
    """Channel layout of a boundary tensor, from the nearest layer that reads (or writes) it."""

    def width(segs) -> int:
        return sum(size * mult for _, size, mult in segs)

    if node.op == "call_module" and node.target in space.layers:
        r = space.layers[node.target]
        if r.out and width(r.out) == channels:
            return r.out
    shape = getattr(values.get(node), "shape", None)
    seen, queue = {node}, list(node.users)
    while queue:
        u = queue.pop(0)
        if u in seen:
            continue
        seen.add(u)
        if u.op == "call_module" and u.target in space.layers:
            r = space.layers[u.target]
            segs = r.inp if r.layer.kind in ("conv", "linear") else r.out
            if segs and width(segs) == channels:
                return segs
        if getattr(values.get(u), "shape", None) == shape:  # channel-wise op: look further
            queue.extend(u.users)
    raise AutopruneError(
        f"cannot tell which channel groups the stage boundary {node.name!r} carries; "
        "stage-wise training needs a conv, linear or norm reading it"
    )


def _resolution_levels(space: PruningSpace, nodes: list[fx.Node], values: dict[fx.Node, object]) -> list[int]:
    """Distinct spatial sizes of the groups' producers, largest first; checks each group's stage."""
    by_name = {n.name: n for n in nodes}
    producer_res = {}
    for g in space.groups:
        node = by_name.get(space.layers[g.id].layer.node)
        r = _res(values.get(node)) if node is not None else None
        if r is None:
            raise AutopruneError(f"cannot find the resolution of group {g.id!r} in the traced graph")
        producer_res[g.id] = r
    levels = sorted(set(producer_res.values()), reverse=True)
    for g in space.groups:
        if levels.index(producer_res[g.id]) != g.stage:
            raise AutopruneError(
                f"group {g.id!r} is in stage {g.stage} of the space but at resolution level "
                f"{levels.index(producer_res[g.id])} of the graph; stage-wise training needs both equal"
            )
    return levels


def _node_stages(nodes: list[fx.Node], values: dict[fx.Node, object], levels: list[int]) -> list[int]:
    """Resolution stage of each node: by its spatial size among ``levels`` (never decreasing)."""
    stage_now, node_stage = 0, []
    for n in nodes:
        r = _res(values.get(n))
        if r is not None and n.op != "placeholder":
            stage_now = max(stage_now, sum(1 for level in levels if level > r))
        node_stage.append(stage_now)
    return node_stage


def _boundary_positions(
    nodes: list[fx.Node],
    values: dict[fx.Node, object],
    pos: dict[fx.Node, int],
    node_stage: list[int],
    n_stages: int,
) -> list[int]:
    """Position of each stage's boundary node (all stages but the last): the last node of the
    stage where exactly one tensor is live."""
    last_use = {n: max((pos[u] for u in n.users), default=-1) for n in nodes}
    live: set[fx.Node] = set()
    cut_at: dict[int, int] = {}  # stage -> position of its boundary node
    for i, n in enumerate(nodes):
        if n.op not in ("get_attr", "output"):
            live.add(n)
        live = {m for m in live if last_use[m] > i}
        tensors = [m for m in live if isinstance(values.get(m), torch.Tensor)]
        if len(live) == 1 and len(tensors) == 1 and node_stage[i] < n_stages - 1:
            cut_at[node_stage[i]] = i
    missing = [s for s in range(n_stages - 1) if s not in cut_at]
    if missing:
        raise AutopruneError(
            f"stage-wise training needs one tensor passing from each resolution stage to the next; "
            f"after stage {missing[0]} several are live"
        )
    return [cut_at[s] for s in range(n_stages - 1)]


def _stage_runs(nodes: list[fx.Node], ends: list[int], inputs: list[fx.Node]) -> list[list[fx.Node]]:
    """Nodes each stage runs, in order (stage ``s`` ends at position ``ends[s]``); get_attr
    nodes are fetched where they are used."""
    runs: list[list[fx.Node]] = []
    start = 0
    for s, end in enumerate(ends):
        run = [n for n in nodes[start : end + 1] if n.op not in ("placeholder", "get_attr", "output")]
        if s > 0:
            run = [n for n in run if n is not inputs[s]]
        attrs = {a for n in run for a in n.all_input_nodes if a.op == "get_attr"}
        runs.append([n for n in nodes if n in attrs] + run)
        start = end + 1
    return runs
