"""Physical pruning sweep: every built-in and the listed torchvision models, two plans each.

For each plan: the pruned model runs with an unchanged output shape, equals (in
float64) the dense model whose removed channels were made dead, its params equal
the cost model's exactly and its FLOPs FlopCounterMode's, and save -> load_pruned
reproduces it. BN statistics and affine parameters are randomized first so the
comparison is not trivially satisfied by identity-like norms.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import randomize
from torch import nn

import autoprune
from autoprune.budget import plan_cost
from autoprune.cost import CostModel
from autoprune.errors import AutopruneError
from autoprune.flops import measured_macs, param_count
from autoprune.plan import Plan
from autoprune.space import PruningSpace
from autoprune.surgery import (
    apply_plan,
    dead_channel_model,
    load_pruned,
    module_out_masks,
    save_pruned,
)

BUILTINS = ["resnet20", "resnet32", "resnet56", "resnet110", "mobilenetv2", "vgg16"]
TORCHVISION = [
    "mobilenet_v2",
    "mobilenet_v3_small",
    "resnet18",
    "resnet50",
    "resnext50_32x4d",
    "vgg16_bn",
    "efficientnet_b0",
    "regnet_y_400mf",
    "densenet121",
    "googlenet",
]
MODELS = BUILTINS + [f"torchvision:{n}" for n in TORCHVISION]


_CACHE: dict[str, tuple[nn.Module, torch.Tensor, PruningSpace]] = {}


pytestmark = pytest.mark.usefixtures("one_thread")


def case(name: str) -> tuple[nn.Module, torch.Tensor, PruningSpace]:
    """(dense model in eval mode, batch of 2 inputs, space), built once per model."""
    if name not in _CACHE:
        _CACHE.clear()  # keep one big model alive at a time
        size = 64 if name.startswith("torchvision:") else 32
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = randomize(autoprune.create_model(name, 10, size)).eval()
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
        _CACHE[name] = (model, x, PruningSpace.from_model(model, x[:1], arch=name, num_classes=10))
    return _CACHE[name]


def make_plan(space: PruningSpace, kind: str) -> Plan:
    if kind == "uniform":
        return space.uniform(0.5)
    rng = np.random.default_rng(7)
    return space.plan(rng.uniform(0.1, 1.0, len(space.groups)))


def assert_close64(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = float(b.abs().max())
    assert scale > 1e-6, "degenerate output: the comparison would be meaningless"
    err = float((a - b).abs().max())
    assert err <= 1e-5 * scale, f"max error {err:.3g} vs output scale {scale:.3g}"


@pytest.mark.parametrize("kind", ["keep_all", "uniform", "random"])
@pytest.mark.parametrize("name", MODELS)
def test_pruned_model_is_exact(name: str, kind: str, tmp_path) -> None:
    model, x, space = case(name)
    assert space.groups, f"{name}: no prunable group found"
    if kind == "keep_all":  # (c) keep = 1.0 is the original model
        result = apply_plan(model, space.uniform(1.0), space=space)
        assert result.kept == {}
        assert param_count(result.model) == param_count(model) == CostModel(space).dense_params
        assert CostModel(space).dense_flops == measured_macs(model, x[:1])
        with torch.no_grad():
            assert torch.equal(result.model.eval()(x), model(x))
        return
    plan = make_plan(space, kind)
    criterion = "l1" if kind == "uniform" else ["l2", "bn_gamma", "random"][MODELS.index(name) % 3]
    result = apply_plan(model, plan, criterion, space=space, seed=3)
    pruned = result.model.eval()
    assert result.kept, "the plan removed nothing"
    # (a) runs, output shape unchanged
    with torch.no_grad():
        out = pruned(x)
        assert out.shape == model(x).shape
    # (d) params exact, FLOPs vs FlopCounterMode (cost model: MACs)
    flops, params = plan_cost(space, plan)
    assert params == param_count(pruned)
    measured = measured_macs(pruned, x[:1])
    assert abs(flops - measured) <= 0.005 * measured, (flops, measured)
    # (e) save -> load_pruned gives identical outputs (zoo rebuild for built-ins)
    path = save_pruned(tmp_path / "pruned.pt", result)
    loaded = load_pruned(path, model=None if name in BUILTINS else model).model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), out)
    # (b) exactness against the dead-channel dense model, in float64
    dead = dead_channel_model(model, result).double().eval()
    with torch.no_grad():
        assert_close64(pruned.double()(x.double()), dead(x.double()))


@pytest.mark.parametrize("name", ["resnet20", "torchvision:mobilenet_v3_small"])
def test_input_model_is_untouched(name: str) -> None:
    model, x, space = case(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules_before = [type(m) for m in model.modules()]
    result = apply_plan(model, space.uniform(0.3), space=space)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [type(m) for m in model.modules()] == modules_before
    assert param_count(result.model) < param_count(model)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_removed_block_equals_zero_branch(name: str) -> None:
    model, x, space = case(name)
    removable = [b.name for b in space.blocks if b.removable]
    assert removable
    plan = space.uniform(1.0, removed_blocks=removable[:2])
    result = apply_plan(model, plan, space=space)
    pruned = result.model.eval()
    for b in removable[:2]:
        assert isinstance(pruned.get_submodule(b), nn.Identity)
    flops, params = plan_cost(space, plan)
    assert params == param_count(pruned)
    assert flops == measured_macs(pruned, x[:1])
    dead = dead_channel_model(model, result).double().eval()
    with torch.no_grad():
        assert_close64(pruned.double()(x.double()), dead(x.double()))


def test_removed_blocks_and_channels_together() -> None:
    model, x, space = case("resnet20")
    plan = space.uniform(0.5, removed_blocks=[space.removable_blocks[-1].name])
    result = apply_plan(model, plan, space=space)
    assert plan_cost(space, plan)[1] == param_count(result.model)
    dead = dead_channel_model(model, result).double().eval()
    with torch.no_grad():
        assert_close64(result.model.eval().double()(x.double()), dead(x.double()))


def test_kept_indices_describe_the_modules() -> None:
    model, _, space = case("mobilenetv2")
    result = apply_plan(model, space.uniform(0.5), space=space)
    dw = "features.2.conv.1.0"  # depthwise conv of the first 24-channel block
    kept = result.kept[dw]
    assert kept["out"] == kept["in"]
    mod = result.model.get_submodule(dw)
    assert mod.groups == mod.in_channels == mod.out_channels == len(kept["out"])
    original = model.get_submodule(dw).weight
    assert torch.equal(mod.weight, original[kept["out"]])
    masks = module_out_masks(model, result)
    assert masks[dw].sum() == len(kept["out"])
    assert masks["classifier.1"].all()
    assert module_out_masks(space, result)[dw].tolist() == masks[dw].tolist()


def test_criteria_pick_channels_by_score() -> None:
    model, _, space = case("resnet20")
    plan = space.uniform(0.5)
    gid = "layer1.0.conv1"
    by_gamma = apply_plan(model, plan, "bn_gamma", space=space).kept[gid]["out"]
    gamma = model.get_submodule("layer1.0.bn1").weight.detach().abs()
    assert sorted(by_gamma) == sorted(torch.topk(gamma, len(by_gamma)).indices.tolist())
    by_l1 = apply_plan(model, plan, "l1", space=space).kept[gid]["out"]
    assert len(by_l1) == len(by_gamma) == 8
    r1 = apply_plan(model, plan, "random", space=space, seed=1).kept
    r2 = apply_plan(model, plan, "random", space=space, seed=1).kept
    r3 = apply_plan(model, plan, "random", space=space, seed=2).kept
    assert r1 == r2 and r1 != r3
    with pytest.raises(AutopruneError, match="unknown criterion"):
        apply_plan(model, plan, "taylor", space=space)


def test_auto_criterion_recalibrates_and_keeps_the_best() -> None:
    model, x, space = case("resnet20")
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(4)
    ]
    result = apply_plan(model, space.uniform(0.5), "auto", space=space, loader=batches, recal_batches=2)
    assert result.criterion in ("l1", "l2", "bn_gamma")
    assert set(result.scores) == {"l1", "l2", "bn_gamma"}
    assert result.scores[result.criterion] == max(result.scores.values())
    with pytest.raises(AutopruneError, match="loader"):
        apply_plan(model, space.uniform(0.5), "auto", space=space)


def test_apply_without_space_traces_the_model() -> None:
    model, x, space = case("resnet20")
    plan = space.uniform(0.5)
    result = apply_plan(model, plan)  # zeros of the plan's input size
    assert result.kept == apply_plan(model, plan, space=space).kept


def test_load_pruned_errors(tmp_path) -> None:
    with pytest.raises(AutopruneError, match="does not exist"):
        load_pruned(tmp_path / "missing.pt")
    bogus = tmp_path / "bogus.pt"
    torch.save({"format": "something/else"}, bogus)
    with pytest.raises(AutopruneError, match="not a pruned model"):
        load_pruned(bogus)
    model, _, space = case("resnet20")
    result = apply_plan(model, space.uniform(0.5), space=space)
    path = save_pruned(tmp_path / "r20.pt", result)
    with pytest.raises(AutopruneError, match="does not fit"):
        load_pruned(path, model=autoprune.create_model("resnet32"))


def test_exports_run(tmp_path) -> None:
    model, x, space = case("mobilenetv2")
    pruned = apply_plan(model, space.uniform(0.5), space=space).model.eval()
    ts = autoprune.export_torchscript(pruned, tmp_path / "m.ts", x[:1])
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(ts))(x), pruned(x), atol=1e-5)
    import onnx
    from onnx.reference import ReferenceEvaluator  # onnxruntime is not a dependency

    path = autoprune.export_onnx(pruned, tmp_path / "m.onnx", x[:1])
    exported = onnx.load(str(path))
    onnx.checker.check_model(exported)
    (out,) = ReferenceEvaluator(exported).run(None, {"input": x.numpy()})  # batch 2: the batch is dynamic
    with torch.no_grad():
        expected = pruned(x)
    assert out.shape == tuple(expected.shape)
    assert float(expected.abs().max()) > 1e-3  # not a degenerate comparison
    torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-4, atol=1e-5)
