"""Sensitivity through the fused kernels (the CUDA path), forced on the CPU: same values as naive.

The engine runs conv chains as :mod:`autoprune.kernels` ops on CUDA; ``Execution(kernels=...)``
forces that on the CPU, with the torch backend or with Triton interpreted
(``TRITON_INTERPRET=1``, slow: resnet20 only, 8×8, 4 images).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import autoprune
from autoprune.errors import AutopruneError
from autoprune.sensitivity import (
    Execution,
    Images,
    Perturbation,
    compute_sensitivity,
    compute_sensitivity_naive,
)
from autoprune.sensitivity import rescore as rescore_module
from autoprune.sensitivity.engine import Engine, FoldedKernelConv, OneDNNConv, _kernel_backend
from autoprune.space import PruningSpace

SIZE = 8
COMMON = {"unit": "block", "perturbation": Perturbation(seeds=1), "images": Images(chunk=4)}

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(arch: str, **kwargs) -> tuple[nn.Module, PruningSpace, tuple[torch.Tensor, torch.Tensor]]:
    """A random model at 8×8 with BN statistics from random data and moderate logits; 4 images
    labelled by its own predictions, one relabelled."""
    torch.manual_seed(0)
    model = autoprune.create_model(arch, 10, SIZE, **kwargs)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0.0, 0.1)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, 3, SIZE, SIZE))
    model.eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, SIZE, SIZE, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[0] = (y[0] + 1) % 10
    space = PruningSpace.from_model(model, torch.zeros(1, 3, SIZE, SIZE), arch=arch)
    return model, space, (x, y)


@pytest.fixture(scope="module")
def resnet20():
    return tiny("resnet20")


@pytest.fixture(scope="module")
def mobilenet():
    return tiny("mobilenetv2", width_mult=0.35)


def assert_naive_values(fused, naive) -> None:
    """Every top-1 Δ identical, losses within 1e-5."""
    assert fused.ids == naive.ids and fused.acc0 == naive.acc0
    assert fused.loss0 == pytest.approx(naive.loss0, abs=1e-5, rel=0)
    for u, v in zip(fused.units, naive.units, strict=True):
        assert u.per_seed == v.per_seed, u.id
        assert u.loss_per_seed == pytest.approx(v.loss_per_seed, abs=1e-5, rel=0), u.id
    assert any(u.delta != 0 for u in fused.units)  # the comparison is not vacuous


@pytest.mark.parametrize(
    ("arch", "backend"), [("resnet20", "torch"), ("mobilenet", "torch"), ("resnet20", "triton")]
)
def test_kernel_path_equals_naive(arch, backend, request, monkeypatch):
    if backend == "triton":
        pytest.importorskip("triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    model, space, data = request.getfixturevalue(arch)
    fused = compute_sensitivity(model, space, data, execution=Execution(kernels=backend), **COMMON)
    assert fused.engine["kernels"] == backend and fused.engine["fused"] > 0
    assert fused.engine["tie_tolerance"] >= rescore_module.TIE_TOLERANCE  # near-ties are rescored
    naive = compute_sensitivity_naive(model, space, data, execution=Execution.plain(), **COMMON)
    assert_naive_values(fused, naive)


def test_kernel_path_rescores_near_ties(resnet20, monkeypatch):
    """The rescoring of near-ties applies to the kernel path: with every chunk a near-tie, the
    values are the plain model's bit for bit."""
    model, space, data = resnet20
    monkeypatch.setattr(rescore_module, "TIE_TOLERANCE", 1e9)
    fused = compute_sensitivity(model, space, data, execution=Execution(kernels="torch"), **COMMON)
    naive = compute_sensitivity_naive(model, space, data, execution=Execution.plain(), **COMMON)
    assert fused.engine["rescored"] == 1 + len(fused.units)  # one chunk: clean + each unit
    assert fused.acc0 == naive.acc0 and fused.loss0 == naive.loss0
    for u, v in zip(fused.units, naive.units, strict=True):
        assert u.per_seed == v.per_seed and u.loss_per_seed == v.loss_per_seed


def test_kernel_engine_refolds_overrides(resnet20):
    """An override of a conv and its BN runs through the kernel op as the re-folded weights."""
    model, _, (x, _) = resnet20
    engine = Engine(model, example=x, kernels="torch")
    assert engine.kernels == "torch"
    assert any(isinstance(m, FoldedKernelConv) for m in engine.gm.modules())
    assert not any(isinstance(m, OneDNNConv) for m in engine.gm.modules())
    overrides = {"layer1.0.conv1.weight": torch.randn_like(model.layer1[0].conv1.weight)}
    overrides["layer1.0.bn1.running_var"] = torch.rand_like(model.layer1[0].bn1.running_var) + 0.5
    perturbed = {k: v.clone() for k, v in model.state_dict().items()} | overrides
    twin = autoprune.create_model("resnet20", 10, SIZE)
    twin.load_state_dict(perturbed)
    with torch.no_grad():
        expected = twin.eval()(x)
        got = engine.forward(engine.format(x), engine.derive(overrides))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_cpu_default_is_unchanged(resnet20):
    """On the CPU by default the engine still fuses into oneDNN calls; the JSON record is as before."""
    model, space, data = resnet20
    engine = Engine(model, example=data[0])
    assert engine.kernels is None and engine.fused > 0
    assert not any(isinstance(m, FoldedKernelConv) for m in engine.gm.modules())
    result = compute_sensitivity(model, space, data, **COMMON)
    assert set(result.engine) == {
        "cached", "fold_bn", "channels_last", "fused", "chunk", "device", "tie_tolerance", "rescored"
    }  # fmt: skip


def test_kernel_mode_follows_the_device():
    assert _kernel_backend(torch.device("cuda"), None) == "auto"
    assert _kernel_backend(torch.device("cuda:1"), None) == "auto"
    assert _kernel_backend(torch.device("cpu"), None) is None
    assert _kernel_backend(torch.device("cpu"), "numba") == "numba"
    with pytest.raises(AutopruneError, match="invalid kernels"):
        _kernel_backend(torch.device("cpu"), "cudnn")
