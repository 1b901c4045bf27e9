"""Channel-group analysis on small hand-written models: one structure per test.

Each model is pruned with a seeded random plan (random channel choice, so index
bookkeeping errors cannot hide behind "the first k") and compared in float64
with the dense model whose removed channels are dead; unsupported structures
must be frozen with a reason, never pruned wrongly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import randomize
from torch import nn

import autoprune
from autoprune.budget import plan_cost
from autoprune.cost import CostModel
from autoprune.errors import AutopruneError
from autoprune.flops import measured_macs, param_count
from autoprune.space import PruningSpace
from autoprune.surgery import apply_plan, dead_channel_model

pytestmark = pytest.mark.usefixtures("one_thread")


def space_of(model: nn.Module, size: int = 16) -> tuple[PruningSpace, torch.Tensor]:
    torch.manual_seed(0)
    randomize(model).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    return PruningSpace.from_model(model, x[:1], round_to=1), x


def check_exact(model: nn.Module, space: PruningSpace, x: torch.Tensor, seed: int = 0) -> None:
    """A random plan prunes exactly, and the cost model matches the pruned model."""
    ratios = np.random.default_rng(seed).uniform(0.2, 0.9, len(space.groups))
    plan = space.plan(ratios)
    result = apply_plan(model, plan, "random", space=space, seed=seed)
    pruned = result.model.eval()
    flops, params = plan_cost(space, plan)
    assert params == param_count(pruned)
    assert flops == measured_macs(pruned, x[:1])
    dead = dead_channel_model(model, result).double().eval()
    with torch.no_grad():
        a, b = pruned.double()(x.double()), dead(x.double())
    scale = float(b.abs().max())
    assert scale > 1e-6
    assert float((a - b).abs().max()) <= 1e-5 * scale


def members(space: PruningSpace, gid: str) -> set[tuple[str, str]]:
    return set(space.group(gid).members)


# ---------------------------------------------------------------- structures


class ConcatFlatten(nn.Module):
    """Two producers concatenated, then flatten (4x4 positions per channel) into a linear."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 12, 3, padding=1)
        self.bn = nn.BatchNorm2d(20)
        self.c = nn.Conv2d(20, 16, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc1 = nn.Linear(16 * 16, 32)
        self.fc2 = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(torch.cat([self.a(x), self.b(x)], dim=1)))
        x = self.pool(F.relu(self.c(x)))
        return self.fc2(F.relu(self.fc1(x.view(x.size(0), -1))))


def test_concat_offsets_and_flatten_to_linear() -> None:
    model = ConcatFlatten()
    space, x = space_of(model)
    assert space.group_ids == ["a", "b", "c", "fc1"]
    assert members(space, "a") == {("a", "out"), ("bn", "out"), ("c", "in")}
    assert members(space, "c") == {("c", "out"), ("fc1", "in")}
    result = apply_plan(model, space.plan({"b": 0.5, "c": 0.25}), space=space)
    assert result.kept["c"]["in"][:8] == list(range(8))  # group a keeps all, b starts at offset 8
    assert len(result.kept["fc1"]["in"]) == 4 * 16  # 4 channels x 16 positions
    assert "fc2" not in result.kept
    check_exact(model, space, x)


class DepthMultiplier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 16, 3, padding=1, groups=8, bias=False)  # 2 filters per input channel
        self.bn2 = nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn2(self.dw(F.relu(self.bn(self.conv(x))))))
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.pw(x)), 1).flatten(1))


def test_depthwise_with_channel_multiplier_couples_in_and_out() -> None:
    model = DepthMultiplier()
    space, x = space_of(model)
    assert members(space, "conv") >= {("dw", "in"), ("dw", "out"), ("bn2", "out"), ("pw", "in")}
    result = apply_plan(model, space.plan({"conv": 0.5}), space=space)
    dw = result.model.dw
    assert (dw.in_channels, dw.out_channels, dw.groups) == (4, 8, 4)
    check_exact(model, space, x)


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.g = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.bn2 = nn.BatchNorm2d(32)
        self.head = nn.Conv2d(32, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn2(self.g(F.relu(self.bn(self.stem(x))))))
        return self.head(x).mean((2, 3))


def test_grouped_conv_keeps_equal_counts_per_conv_group() -> None:
    model = Grouped()
    space, x = space_of(model)
    assert space.group("stem").divisor == 4 and space.group("g").divisor == 4
    assert space.plan({"stem": 0.5}).channels["stem"] % 4 == 0
    result = apply_plan(model, space.plan({"stem": 0.5, "g": 0.5}), "random", space=space, seed=1)
    ins = np.array(result.kept["g"]["in"])
    assert np.bincount(ins // 4, minlength=4).tolist() == [2, 2, 2, 2]
    assert result.model.g.groups == 4
    check_exact(model, space, x)
    with pytest.raises(AutopruneError, match="multiple of 4"):
        autoprune.Plan.from_dict({**space.uniform(1.0).to_dict(), "channels": {"g": 30}}, space)


class SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.fc1, self.fc2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.proj = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return self.proj(x * gate).amax((2, 3))


def test_squeeze_excitation_gate_joins_the_gated_channels() -> None:
    model = SqueezeExcite()
    space, x = space_of(model)
    assert members(space, "conv") == {
        ("conv", "out"),
        ("bn", "out"),
        ("fc1", "in"),
        ("fc2", "out"),
        ("proj", "in"),
    }
    assert members(space, "fc1") == {("fc1", "out"), ("fc2", "in")}  # the SE hidden width is its own group
    check_exact(model, space, x)


class LayerScaleResidual(nn.Module):
    """A residual stream with a per-channel parameter used directly, PReLU and ConvTranspose."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, stride=2, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(12, 24, 1), nn.PReLU(24), nn.Conv2d(24, 12, 1))
        self.scale = nn.Parameter(torch.rand(12, 1, 1) + 0.5)
        self.up = nn.ConvTranspose2d(12, 6, 2, stride=2)
        self.bn = nn.BatchNorm2d(6)
        self.shared = nn.Conv2d(6, 6, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.scale * self.branch(x)
        x = F.relu(self.bn(self.up(x)))
        return self.shared(F.relu(self.shared(x))).sum((2, 3))


def test_parameters_prelu_transposed_and_shared_modules() -> None:
    model = LayerScaleResidual()
    space, x = space_of(model)
    assert members(space, "stem") >= {("stem", "out"), ("scale", "out"), ("branch.2", "out"), ("up", "in")}
    assert ("branch.1", "out") in members(space, "branch.0")
    result = apply_plan(model, space.plan({"stem": 0.5}), space=space)
    assert result.model.scale.shape == (6, 1, 1)
    assert list(result.kept["scale"]) == ["dim0"]
    # the shared conv is called twice: its input and output are one group (also the model output)
    assert "shared" in space.frozen
    check_exact(model, space, x)


# ------------------------------------------------------------------ fail closed


class SigmoidThenConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(F.relu(self.b(torch.sigmoid(self.a(x))))).mean((2, 3))


def test_nonzero_dead_channels_freeze_the_group() -> None:
    model = SigmoidThenConv()
    space, x = space_of(model)
    assert space.group_ids == ["b"]
    assert "non-zero" in space.frozen["a"] and "sigmoid" in space.frozen["a"]
    check_exact(model, space, x)


class Assorted(nn.Module):
    """Each branch uses something autoprune must not prune through."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)  # -> channel-wise LayerNorm
        self.ln = nn.LayerNorm(8)
        self.b = nn.Conv2d(3, 8, 3, padding=1)  # -> chunk along channels
        self.c = nn.Conv2d(3, 8, 3, padding=1)  # -> unsupported module
        self.lrn = nn.LocalResponseNorm(2)
        self.d = nn.Conv2d(3, 8, 3, padding=1)  # -> unsupported function
        self.e = nn.Conv2d(3, 8, 3, padding=1)  # fine
        self.out = nn.Conv2d(36, 4, 1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.ln(self.a(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        b1, _ = self.b(x).chunk(2, dim=1)
        c = self.lrn(self.c(x))
        d = torch.roll(self.d(x), 1, dims=1)
        e = F.relu(self.e(x))
        y = self.out(torch.cat([a, b1, c, d, e], 1)).mean((2, 3))
        pooled = e.mean((2, 3))
        return y.sum(1, keepdim=True) + self.fc(pooled.view(pooled.size(0), 8))


def test_unsupported_ops_freeze_with_reasons() -> None:
    model = Assorted()
    space, x = space_of(model)
    assert "LayerNorm" in space.frozen["a"]
    assert "chunk" in space.frozen["b"]
    assert "LocalResponseNorm" in space.frozen["lrn"]
    assert "roll" in space.frozen["d"]
    assert "hard-codes the channel count" in space.frozen["e"]
    assert space.group_ids == []


class DynamicFlatten(Assorted):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = F.relu(self.e(x))
        d = torch.roll(self.d(x), 1, dims=1)
        y = self.out(torch.cat([self.a(x), self.b(x), self.c(x)[:, :4], d, e], 1)).mean((2, 3))
        return y.sum(1, keepdim=True) + self.fc(e.mean((2, 3)).flatten(1))


def test_frozen_parts_do_not_stop_the_rest() -> None:
    model = DynamicFlatten()
    space, x = space_of(model)
    assert "slicing the channel axis" in space.frozen["c"]
    assert set(space.group_ids) == {"a", "b", "e"}
    check_exact(model, space, x)


def test_channel_shuffle_is_frozen_and_the_rest_prunes_exactly() -> None:
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=5)
    space, x = space_of(model, 64)
    reasons = " ".join(space.frozen.values())
    assert "channel shuffle" in reasons
    assert space.groups  # the inner 1x1 -> depthwise -> 1x1 widths of each branch remain
    check_exact(model, space, x)


def test_parametrized_weights_are_frozen() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.utils.parametrizations.weight_norm(nn.Conv2d(8, 8, 3)),
        nn.ReLU(),
        nn.Conv2d(8, 4, 1),
    )
    space, x = space_of(model)
    assert "parametrized" in space.frozen["1"] and "0" not in space.group_ids
    assert CostModel(space).dense_params == param_count(model)


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.conv(x)
        return x


def test_untraceable_model_gets_a_clear_error() -> None:
    with pytest.raises(AutopruneError, match="torch.fx cannot trace DataDependent"):
        PruningSpace.from_model(DataDependent(), torch.randn(1, 3, 8, 8))


# ------------------------------------------------------------------ ids, stages, blocks


def test_resnet20_groups_stages_and_blocks() -> None:
    model = autoprune.create_model("resnet20")
    x = torch.randn(1, 3, 32, 32)
    space = PruningSpace.from_model(model, x, arch="resnet20")
    again = PruningSpace.from_model(autoprune.create_model("resnet20"), x, arch="resnet20")
    assert space.group_ids == again.group_ids
    # residual streams: one group per stage, named by the stage's first producer
    stream = space.group("conv1")
    assert {"layer1.0.bn2", "layer1.1.bn2", "layer1.2.bn2", "bn1"} <= {m for m, _ in stream.members}
    assert space.group("layer2.0.downsample.0").stage == 1
    assert space.group("layer3.0.downsample.0").stage == 2
    assert [g.stage for g in space.groups] == sorted(g.stage for g in space.groups)
    assert ("fc", "in") in space.group("layer3.0.downsample.0").members
    assert all(("fc", "out") not in g.members and ("conv1", "in") not in g.members for g in space.groups)
    assert len(space.blocks) == 9 and [b.removable for b in space.blocks].count(True) == 7
    assert {b.stage for b in space.blocks} == {0, 1, 2}
    assert space.blocks[0].name == "layer1.0" and space.blocks[0].branch_end == "layer1.0.bn2"
    assert "network input" in space.frozen["conv1"] and "model output" in space.frozen["fc"]
    assert space.num_classes == 10 and space.input_size == 32
    cm = CostModel(space)
    assert cm.dense_params == param_count(model) and cm.dense_flops == measured_macs(model, x)
    batch4 = PruningSpace.from_model(model, x.repeat(4, 1, 1, 1))
    assert CostModel(batch4).dense_flops == cm.dense_flops  # FLOPs are per sample


def test_round_to_and_min_channels() -> None:
    model = autoprune.create_model("mobilenetv2")
    x = torch.randn(1, 3, 32, 32)
    space = PruningSpace.from_model(model, x)
    g96 = space.group("features.2.conv.0.0")
    assert (g96.channels, g96.round_to, g96.step) == (96, 16, 16)
    assert space.group("features.1.conv.1").round_to == 1  # 16 channels
    assert all(
        n % 16 == 0 for gid, n in space.uniform(0.33).channels.items() if space.group(gid).channels >= 32
    )
    strict = PruningSpace.from_model(model, x, round_to={"features.2.conv.0.0": 16}, min_channels=4)
    assert strict.group("features.2.conv.0.0").step == 16
    assert min(strict.uniform(0.01).channels.values()) >= 4
