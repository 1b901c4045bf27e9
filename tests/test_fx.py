"""The shared fx layer's fusion helpers and the one evaluation loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from autoprune.evaluation import device_of, evaluate
from autoprune.fx.fusion import (
    ACTIVATION_TABLE,
    Activation,
    activation_of,
    batchnorm_affine,
    conv_chains,
    replace_chain,
    scale_weight,
    set_module,
)
from autoprune.kernels import ACTIVATIONS, fold_bn


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.b, self.bn_b = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.shared = nn.Conv2d(4, 4, 1)
        self.clamp = nn.Hardtanh(-1.0, 2.0)

    def forward(self, x):
        y = F.relu6(self.bn_a(self.a(x)))
        z = self.bn_b(self.b(y)) + y  # conv → BN → residual add → method relu
        z = z.relu()
        return self.clamp(self.shared(z)) + torch.sigmoid(self.shared(z))


def _summary(gm, **kw):
    return [
        (c.conv.target, c.bn and c.bn.target, c.residual is not None, c.activation)
        for c in conv_chains(gm, **kw)
    ]


def test_chains_follow_sole_users_and_the_activations_asked_for():
    gm = fx.symbolic_trace(_Net().eval())
    assert _summary(gm, activations=("relu", "relu6", "hardtanh")) == [
        ("a", "bn_a", False, Activation("relu6", (0.0, 6.0))),
        ("b", "bn_b", False, None),  # the add is not taken without a residual rule
        ("shared", None, False, Activation("hardtanh", (-1.0, 2.0))),
        ("shared", None, False, None),
    ]
    summary = _summary(gm, residual=lambda conv, other: True, activations=("relu",), single_call=True)
    assert summary == [("a", "bn_a", False, None), ("b", "bn_b", True, Activation("relu"))]


def test_replace_chain_and_set_module_keep_the_function():
    model = _Net().eval()
    x = torch.randn(2, 3, 6, 6)
    gm = fx.symbolic_trace(model)
    chain = next(conv_chains(gm, activations=("relu6",)))

    class _AsSequential(nn.Sequential):
        pass

    gm.add_submodule("fused", _AsSequential(model.a, model.bn_a, nn.ReLU6()))
    replace_chain(gm, chain, "fused", (chain.source,))
    set_module(gm, "clamp", nn.Hardtanh(-1.0, 2.0))
    gm.recompile()
    torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)


def test_batchnorm_affine_is_the_eval_batchnorm_and_matches_the_kernels_fold():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    nn.init.normal_(bn.weight)
    nn.init.normal_(bn.bias)
    bn.eval()
    x = torch.randn(2, 3, 7, 7)
    scale, shift = batchnorm_affine(
        bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias, conv_bias=conv.bias
    )
    with torch.no_grad():
        folded = F.conv2d(x, scale_weight(conv.weight, scale), shift)
        torch.testing.assert_close(folded, bn(conv(x)), rtol=1e-5, atol=1e-5)
        for got, want in zip((scale, shift), fold_bn(bn, conv.bias), strict=True):
            assert torch.equal(got, want)


def test_one_activation_table():
    names = {k.name for k in ACTIVATION_TABLE}
    assert set(ACTIVATIONS) - {"none"} <= names
    gm = fx.symbolic_trace(nn.Sequential(nn.ReLU(), nn.ReLU6(), nn.Hardswish(), nn.GELU()))
    modules = dict(gm.named_modules())
    found = [activation_of(n, modules) for n in gm.graph.nodes if n.op == "call_module"]
    assert found == [Activation("relu"), Activation("relu6", (0.0, 6.0)), Activation("hardswish"), None]


def test_evaluate_modules_and_callables():
    model = nn.Linear(4, 3)
    model.train()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(5, 4, generator=g), torch.randint(0, 3, (5,), generator=g)) for _ in range(3)]
    seen: list[tuple[int, float]] = []
    result = evaluate(model, batches, report=lambda step, acc: seen.append((step, acc)))
    assert model.training  # mode restored
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    assert result.images == 15
    assert result.accuracy == (logits.argmax(1) == labels).sum().item() / 15
    assert abs(result.loss - F.cross_entropy(logits, labels).item()) < 1e-6
    assert [s for s, _ in seen] == [0, 1, 2]
    assert evaluate(lambda x: model(x), batches) == result
    assert evaluate(model, []).images == 0
    assert device_of(model) == torch.device("cpu") == device_of(nn.ReLU())
