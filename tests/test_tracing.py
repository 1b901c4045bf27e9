"""autoprune.fx.tracing: the one trace, the node-by-node probe, meta shape propagation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoprune.errors import AutopruneError
from autoprune.fx import node_scope, probe, propagate, trace


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


def test_trace_records_scopes_and_calls_and_restores_the_mode() -> None:
    model = _Net().train()
    gm, calls = trace(model)
    assert model.training
    assert calls == {"body": 1, "body.0": 1, "body.1": 1, "body.2": 1, "head": 1}
    conv = next(n for n in gm.graph.nodes if n.target == "body.0")
    assert node_scope(conv) == ("body", "body.0")


def test_untraceable_model_is_one_line_naming_the_class() -> None:
    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.sum() > 0 else -x

    with pytest.raises(AutopruneError) as info:
        trace(Branchy())
    message = str(info.value)
    assert message.startswith("torch.fx cannot trace Branchy: ") and "\n" not in message


def test_probe_calls_back_with_every_value_and_returns_the_output() -> None:
    model = _Net().eval()
    gm, _ = trace(model)
    x = torch.randn(2, 3, 8, 8)
    shapes: dict[str, tuple[int, ...]] = {}
    out = probe(gm, (x,), lambda n, v: shapes.update({n.name: tuple(v.shape)}), inference=True)
    torch.testing.assert_close(out, model(x))
    assert shapes["body_0"] == (2, 4, 8, 8) and shapes["output"] == (2, 2)


def test_propagate_runs_on_meta_and_names_a_failing_input() -> None:
    gm, _ = trace(_Net())
    values = propagate(gm, (torch.randn(2, 3, 8, 8),))
    head = next(n for n in gm.graph.nodes if n.target == "head")
    assert values[head].is_meta and tuple(values[head].shape) == (2, 2)
    with pytest.raises(AutopruneError, match="fails on the example input"):
        propagate(gm, (torch.randn(2, 5, 8, 8),))
