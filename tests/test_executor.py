"""The masked executor equals the dead-channel model, with and without the fused kernels."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoprune import AutopruneError, create_model
from autoprune.executor import MaskedExecutor, PreparedMasks


def _randomized(name: str, seed: int = 0, **kwargs) -> nn.Module:
    """A zoo model in eval mode with random BN statistics and affine, and a unit-scale head."""
    torch.manual_seed(seed)
    model = create_model(name, 10, 32, **kwargs)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, m.in_features**-0.5)
    return model.eval()


def _random_masks(executor: MaskedExecutor, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    masks = {n: torch.rand(executor.out_channels(n), generator=g) < 0.7 for n in executor.conv_names}
    names = executor.conv_names
    masks[names[1]][:] = False  # a fully dead conv
    masks[names[2]][:] = True  # and a fully alive one
    return masks


def _bn_after(model: nn.Module) -> dict[str, nn.BatchNorm2d]:
    """conv name → the BN registered right after it (how the zoo models are laid out)."""
    named = list(model.named_modules())
    found = {}
    for (name, m), (_, following) in zip(named, named[1:], strict=False):
        if isinstance(m, nn.Conv2d) and isinstance(following, nn.BatchNorm2d):
            found[name] = following
    return found


def _dead_channel_model(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """The same network with each masked channel's conv weights and bias and BN γ and β zeroed."""
    dead = copy.deepcopy(model)
    bns = _bn_after(dead)
    modules = dict(dead.named_modules())
    with torch.no_grad():
        for name, keep in masks.items():
            conv = modules[name]
            conv.weight[~keep] = 0
            if conv.bias is not None:
                conv.bias[~keep] = 0
            if name in bns:
                bns[name].weight[~keep] = 0
                bns[name].bias[~keep] = 0
    return dead


def _assert_close(got: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    scale = expected.abs().max().item()
    assert scale > 0.1, f"{what}: logits too small to compare meaningfully"
    torch.testing.assert_close(got, expected, atol=1e-4 * scale, rtol=1e-4, msg=what)


@pytest.mark.parametrize("arch", ["resnet20", "mobilenetv2"])
def test_masked_output_equals_dead_channel_model(arch):
    model = _randomized(arch)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    executor = MaskedExecutor(model, example_inputs=x[:1], backend="torch")
    kinds = {f.kind for group in executor._fused.values() for f in group}
    assert kinds == (
        {"pointwise", "generic"} if arch == "resnet20" else {"pointwise", "depthwise", "generic"}
    )
    for seed in (0, 1):
        masks = _random_masks(executor, seed)
        with torch.no_grad():
            expected = _dead_channel_model(model, masks)(x)
        _assert_close(executor(x, masks), expected, f"{arch} seed {seed}")
    with torch.no_grad():
        _assert_close(executor(x), model(x), f"{arch} without masks")


def _assert_backend_equals_torch(arch: str, backend: str, seed: int, images: int, size: int) -> None:
    """``backend``'s masked executor against the torch one: model seed ``seed``, input ``seed + 1``,
    masks ``seed + 2``."""
    model = _randomized(arch, seed=seed)
    x = torch.randn(images, 3, size, size, generator=torch.Generator().manual_seed(seed + 1))
    plain = MaskedExecutor(model, backend="torch")
    fused = MaskedExecutor(model, backend=backend)
    masks = _random_masks(plain, seed=seed + 2)
    _assert_close(fused(x, masks), plain(x, masks), f"{arch} {backend} vs torch")


@pytest.mark.parametrize("arch", ["resnet20", "mobilenetv2"])
def test_numba_kernels_equal_torch_backend(arch):
    _assert_backend_equals_torch(arch, "numba", seed=2, images=2, size=32)


@pytest.mark.parametrize("arch", ["resnet20", "mobilenetv2"])
def test_triton_kernels_equal_torch_backend(arch, monkeypatch):
    """Triton kernels interpreted on the CPU (one 16 px image: the interpreter is slow)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    _assert_backend_equals_torch(arch, "triton", seed=5, images=1, size=16)


def test_auto_backend_follows_environment(monkeypatch):
    model = _randomized("resnet20")
    x = torch.randn(1, 3, 32, 32)
    monkeypatch.setenv("AUTOPRUNE_KERNELS", "triton")
    with pytest.raises(AutopruneError, match="CUDA"):
        MaskedExecutor(model)(x)
    monkeypatch.setenv("AUTOPRUNE_KERNELS", "bogus")
    with pytest.raises(AutopruneError, match="AUTOPRUNE_KERNELS"):
        MaskedExecutor(model)(x)
    with pytest.raises(AutopruneError, match="backend='fast'"):
        MaskedExecutor(model, backend="fast")


class _Functional(nn.Module):
    """Activations written as functions and methods, convs without BN, and a non-zero padding mode."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect")
        self.b = nn.Conv2d(8, 8, 1, bias=True)
        self.c = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=True)
        self.bn_c = nn.BatchNorm2d(8)
        self.d = nn.Conv2d(8, 6, 1)
        self.e = nn.Conv2d(8, 4, 5, stride=2, padding=2, dilation=1)

    def forward(self, x):
        y = F.relu(self.a(x))
        y = torch.relu(self.b(y))
        z = self.bn_c(self.c(y)).relu()
        w = F.hardswish(self.d(z))
        return torch.cat([w.mean((2, 3)), F.relu6(self.e(z)).mean((2, 3))], 1)


def test_functional_activations_and_convs_without_bn():
    torch.manual_seed(0)
    model = _Functional().eval()
    model.bn_c.running_mean.normal_()
    x = torch.randn(2, 3, 9, 9)
    executor = MaskedExecutor(model, example_inputs=x)
    fused = {name: group[0] for name, group in executor._fused.items()}
    assert {n: (f.kind, f.act) for n, f in fused.items()} == {
        "a": ("generic", "relu"),
        "b": ("pointwise", "relu"),
        "c": ("depthwise", "relu"),
        "d": ("pointwise", "hardswish"),
        "e": ("generic", "relu6"),
    }
    masks = {n: torch.rand(executor.out_channels(n)) < 0.5 for n in executor.conv_names}
    dead = copy.deepcopy(model)
    with torch.no_grad():
        for name, keep in masks.items():
            conv = getattr(dead, name)
            conv.weight[~keep] = 0
            conv.bias[~keep] = 0
        dead.bn_c.weight[~masks["c"]] = 0
        dead.bn_c.bias[~masks["c"]] = 0
        expected = dead(x)
    torch.testing.assert_close(executor(x, masks), expected, atol=1e-5, rtol=1e-5)


def test_refolds_after_in_place_changes_and_refresh():
    """SR-init redraws parameters in place between passes: the executor follows."""
    model = _randomized("resnet20", seed=8)
    x = torch.randn(2, 3, 32, 32)
    executor = MaskedExecutor(model, backend="torch")
    before = executor(x)
    with torch.no_grad():
        model.layer2[0].bn1.running_var.mul_(3.0)
        nn.init.kaiming_normal_(model.layer1[1].conv2.weight)
        expected = model(x)
    after = executor(x)
    assert not torch.allclose(before, after)
    _assert_close(after, expected, "after in-place changes")
    model.layer3[0].bn2.weight = nn.Parameter(torch.rand(64) + 0.5)  # replaced, not modified
    executor.refresh()
    with torch.no_grad():
        _assert_close(executor(x), model(x), "after refresh")


def test_prepared_masks_are_reused():
    model = _randomized("mobilenetv2", seed=9, width_mult=0.5)
    x = torch.randn(2, 3, 32, 32)
    executor = MaskedExecutor(model, backend="torch")
    masks = _random_masks(executor, seed=10)
    prepared = executor.prepare_masks(masks)
    assert isinstance(prepared, PreparedMasks)
    torch.testing.assert_close(executor(x, prepared), executor(x, masks))


def test_mask_errors_are_user_errors():
    model = _randomized("resnet20")
    executor = MaskedExecutor(model)
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(AutopruneError, match="no maskable conv named 'layer9'"):
        executor(x, {"layer9": torch.ones(16, dtype=torch.bool)})
    with pytest.raises(AutopruneError, match=r"shape \(16,\)"):
        executor(x, {"conv1": torch.ones(15, dtype=torch.bool)})
    with pytest.raises(AutopruneError, match="bool"):
        executor(x, {"conv1": torch.ones(16)})


def test_build_errors_are_user_errors():
    class Untraceable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return self.conv(x)
            return x

    with pytest.raises(AutopruneError, match="cannot trace Untraceable"):
        MaskedExecutor(Untraceable())
    model = create_model("resnet20", 10, 32)  # training mode
    with pytest.raises(AutopruneError, match="eval"):
        MaskedExecutor(model, example_inputs=torch.randn(1, 3, 32, 32))
