"""Sensitivity engine: cached == naive, determinism, fixed points, adaptive, JSON, depth selection."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import autoprune
from autoprune.errors import AutopruneError
from autoprune.models import initializer_for
from autoprune.sensitivity import (
    Adaptive,
    Execution,
    Images,
    Perturbation,
    Provenance,
    Sensitivity,
    UnitSensitivity,
    bn_gamma_value,
    compute_sensitivity,
    compute_sensitivity_naive,
    load_sensitivity,
    sbpf_overrides,
    select_blocks_to_remove,
    sr_init_overrides,
    units_from_space,
)
from autoprune.sensitivity import adaptive as adaptive_module
from autoprune.sensitivity import images as images_module
from autoprune.sensitivity import rescore as rescore_module
from autoprune.space import PruningSpace

SIZE = 16
ONE_SEED = Perturbation(seeds=1)
TWO_SEEDS = Perturbation(seeds=2)
BN_GAMMA = Perturbation("bn-gamma")
PLAIN = {"execution": Execution.plain()}


pytestmark = pytest.mark.usefixtures("one_thread")


def calibrated(arch: str, seed: int = 0, **kwargs) -> nn.Module:
    """A random-init model with BN statistics from random data, so no layer is degenerate."""
    torch.manual_seed(seed)
    model = autoprune.create_model(arch, 10, SIZE, **kwargs)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0.0, 0.1)
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 1.0)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(64, 3, SIZE, SIZE))
    return model.eval()


def data_for(model: nn.Module, n: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels: the clean model's predictions, a quarter replaced by random labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, SIZE, SIZE, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    flip = torch.arange(n) % 4 == 0
    y[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=g)
    return x, y


def space_of(model: nn.Module, arch: str) -> PruningSpace:
    return PruningSpace.from_model(model, torch.zeros(1, 3, SIZE, SIZE), arch=arch)


@pytest.fixture(scope="module")
def resnet20():
    model = calibrated("resnet20")
    return model, space_of(model, "resnet20"), data_for(model)


@pytest.fixture(scope="module")
def mobilenet():
    model = calibrated("mobilenetv2", width_mult=0.35)
    return model, space_of(model, "mobilenetv2"), data_for(model, 24)


def assert_same_values(a: Sensitivity, b: Sensitivity) -> None:
    assert a.ids == b.ids
    assert a.acc0 == b.acc0 and a.loss0 == b.loss0
    for u, v in zip(a.units, b.units, strict=True):
        assert u.per_seed == v.per_seed, u.id
        assert u.loss_per_seed == pytest.approx(v.loss_per_seed, abs=1e-6, rel=0), u.id


# ------------------------------------------------------------- cached == naive


@pytest.mark.parametrize(
    ("unit", "method"), [("block", "sr-init"), ("group", "sr-init"), ("block", "sbpf"), ("group", "sbpf")]
)
def test_cached_equals_naive_resnet20(resnet20, unit, method):
    model, space, data = resnet20
    kw = {"unit": unit, "perturbation": Perturbation(method, 2, (0.25, 0.5)), "images": Images(chunk=16)}
    cached = compute_sensitivity(model, space, data, **kw)
    naive = compute_sensitivity_naive(model, space, data, **kw)
    assert_same_values(cached, naive)
    assert cached.engine["cached"] and not naive.engine["cached"]
    assert any(u.delta != 0 for u in cached.units)  # the comparison is not vacuous
    assert len(cached.units) == (len(space.blocks) if unit == "block" else len(space.groups))


@pytest.mark.parametrize("unit", ["block", "group"])
def test_cached_equals_naive_mobilenetv2(mobilenet, unit):
    model, space, data = mobilenet
    kw = {"unit": unit, "perturbation": Perturbation(seeds=2), "images": Images(chunk=12)}
    cached = compute_sensitivity(model, space, data, **kw)
    assert cached.engine["fused"] > 0 and cached.engine["fold_bn"]
    assert_same_values(cached, compute_sensitivity_naive(model, space, data, **kw))
    assert any(u.loss_delta != 0 for u in cached.units)


def test_exact_mode_equals_the_plain_module(resnet20):
    """Without folding/fusion/channels_last the cached path equals the original module bit for bit."""
    model, space, data = resnet20
    exact = compute_sensitivity(model, space, data, perturbation=TWO_SEEDS, images=Images(chunk=16), **PLAIN)
    plain = compute_sensitivity_naive(
        model, space, data, perturbation=TWO_SEEDS, images=Images(chunk=16), **PLAIN
    )
    assert_same_values(exact, plain)
    assert exact.engine["fused"] == 0
    fast = compute_sensitivity(model, space, data, perturbation=TWO_SEEDS, images=Images(chunk=16))
    assert exact.engine["tie_tolerance"] is None  # same arithmetic as the plain module: nothing to rescore
    assert fast.engine["tie_tolerance"] >= rescore_module.TIE_TOLERANCE
    for u, v in zip(fast.units, plain.units, strict=True):  # the fast engine only rounds differently
        assert u.loss_per_seed == pytest.approx(v.loss_per_seed, abs=1e-5, rel=0)
        assert u.per_seed == v.per_seed  # near-ties, where rounding could flip top-1, are rescored


def test_near_ties_are_rescored_with_the_naive_arithmetic(resnet20, monkeypatch):
    model, space, data = resnet20
    plain = compute_sensitivity_naive(
        model, space, data, perturbation=TWO_SEEDS, images=Images(chunk=16), **PLAIN
    )
    monkeypatch.setattr(rescore_module, "TIE_TOLERANCE", 1e9)  # every chunk holds a "near-tie"
    fast = compute_sensitivity(model, space, data, perturbation=TWO_SEEDS, images=Images(chunk=16))
    assert fast.engine["tie_tolerance"] == 1e9
    assert fast.engine["rescored"] == 2 * (1 + len(fast.units) * 2)  # 2 chunks x (clean + units x seeds)
    assert fast.acc0 == plain.acc0 and fast.loss0 == plain.loss0
    for u, v in zip(fast.units, plain.units, strict=True):  # bit for bit: the plain model's logits
        assert u.per_seed == v.per_seed and u.loss_per_seed == v.loss_per_seed


def test_near_flip():
    logits = torch.tensor([[3.0, 1.0, 3.0 + 1e-5], [0.0, 5.0, -1.0]])
    near = rescore_module.near_flip
    assert near(logits, torch.tensor([0, 1]), 1e-4)  # label 0 is 1e-5 below class 2: could flip
    assert near(logits, torch.tensor([2, 1]), 1e-4)  # label 2 is 1e-5 above class 0: could flip
    assert not near(logits, torch.tensor([1, 1]), 1e-4)  # a tie between two wrong classes is harmless
    assert not near(logits, torch.tensor([0, 1]), 1e-6)
    assert not near(torch.tensor([[1.0], [1.0]]), torch.tensor([0, 0]), 1.0)  # one class: nothing to flip


def test_deterministic_under_a_seed(resnet20):
    model, space, data = resnet20
    a = compute_sensitivity(model, space, data, unit="group", perturbation=Perturbation("sbpf", 2, (0.5,)))
    b = compute_sensitivity(model, space, data, unit="group", perturbation=Perturbation("sbpf", 2, (0.5,)))
    da, db = a.to_dict(), b.to_dict()
    da.pop("seconds"), db.pop("seconds")
    assert da == db
    c = compute_sensitivity(
        model, space, data, unit="group", perturbation=Perturbation("sbpf", [5, 6], (0.5,))
    )
    assert [u.per_seed for u in c.units] != [u.per_seed for u in a.units]


def test_model_is_not_modified(resnet20):
    model, space, data = resnet20
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compute_sensitivity(model, space, data, unit="group", perturbation=ONE_SEED)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training


# -------------------------------------------------------------- fixed points


def test_sbpf_on_all_zero_weights_is_no_damage(resnet20):
    model, space, data = resnet20
    model = _copy(model)
    with torch.no_grad():
        for conv in (model.layer1[1].conv1, model.layer1[1].conv2):
            conv.weight.zero_()
        model.get_submodule("layer2.1.conv1").weight.zero_()  # the producer of group layer2.1.conv1
    for unit, uid in (("block", "layer1.1"), ("group", "layer2.1.conv1")):
        sens = compute_sensitivity(model, space, data, unit=unit, perturbation=Perturbation("sbpf", 2))
        u = sens[uid]
        assert u.per_seed == [0.0, 0.0] and u.loss_per_seed == [0.0, 0.0], uid
        assert any(v.loss_delta != 0 for v in sens.units if v.id != uid)


@pytest.mark.parametrize(("unit", "uid"), [("block", "layer2.1"), ("group", "layer3.0.conv1")])
def test_sr_init_on_its_own_draw_is_zero(resnet20, unit, uid):
    model, space, data = resnet20
    model = _copy(model)
    (target,) = [u for u in units_from_space(space, unit, model) if u.id == uid]
    with torch.no_grad():
        overrides = sr_init_overrides(model, target, 0, initializer_for("resnet20"))
        model.load_state_dict(overrides, strict=False)
    sens = compute_sensitivity(model, space, data, unit=unit, perturbation=Perturbation(seeds=[0]))
    assert sens[uid].per_seed == [0.0] and sens[uid].loss_per_seed == [0.0]
    assert any(v.loss_delta != 0 for v in sens.units if v.id != uid)
    # a different seed redraws different values
    other = compute_sensitivity(model, space, data, unit=unit, perturbation=Perturbation(seeds=[1]))
    assert other[uid].loss_delta != 0


def test_sr_init_group_only_touches_the_group_channels(resnet20):
    model, space, _ = resnet20
    (unit,) = [u for u in units_from_space(space, "group", model) if u.id == "layer1.0.conv1"]
    overrides = sr_init_overrides(model, unit, 0, initializer_for("resnet20"))
    assert set(overrides) == {
        "layer1.0.conv1.weight",
        "layer1.0.bn1.weight",
        "layer1.0.bn1.bias",
        "layer1.0.bn1.running_mean",
        "layer1.0.bn1.running_var",
    }
    assert torch.equal(overrides["layer1.0.bn1.running_var"], torch.ones(16))
    assert not torch.equal(overrides["layer1.0.conv1.weight"], model.layer1[0].conv1.weight)


def test_bn_gamma_is_mean_abs_gamma(resnet20):
    model, space, _ = resnet20
    sens = compute_sensitivity(model, space, None, unit="block", perturbation=BN_GAMMA)
    block = model.layer2[1]
    expected = torch.cat([block.bn1.weight.abs(), block.bn2.weight.abs()]).double().mean().item()
    assert sens["layer2.1"].delta == pytest.approx(expected, rel=1e-12)
    assert sens.images == 0 and sens.acc0 is None
    groups = compute_sensitivity(model, space, None, unit="group", perturbation=BN_GAMMA)
    (unit,) = [u for u in units_from_space(space, "group", model) if u.id == "layer2.0.conv1"]
    assert groups["layer2.0.conv1"].delta == pytest.approx(bn_gamma_value(model, unit))
    assert groups["layer2.0.conv1"].delta == pytest.approx(model.layer2[0].bn1.weight.abs().mean().item())


# ------------------------------------------------------------------ adaptive


def test_adaptive_stops_when_the_ranking_is_settled_and_matches_a_full_run(resnet20):
    model, space, _ = resnet20
    data = data_for(model, 96, seed=3)
    cfg = Adaptive(chunk=16, min_images=32, target=0.8)
    sens = compute_sensitivity(model, space, data, perturbation=ONE_SEED, adaptive=cfg)
    n = sens.images
    assert 32 <= n < 96 and n % 16 == 0
    assert all(u.images == n for u in sens.units)
    assert sens.adaptive["stopped"] == "settled" and sens.adaptive["stability"] >= 0.8
    full = compute_sensitivity(model, space, data, perturbation=ONE_SEED, images=Images(count=n, chunk=16))
    assert_same_values(sens, full)  # the same images in the same order
    never = compute_sensitivity(
        model, space, data, perturbation=ONE_SEED, adaptive=Adaptive(chunk=32, min_images=1000)
    )
    assert never.images == 96 and never.adaptive["stopped"] == "budget"
    with pytest.raises(AutopruneError, match="naive"):
        compute_sensitivity_naive(model, space, data, adaptive=True)
    with pytest.raises(AutopruneError, match="invalid adaptive"):
        compute_sensitivity(model, space, data, adaptive=Adaptive(quantile=1.5))


def test_default_chunk_fits_the_largest_activation(resnet20, monkeypatch):
    model, space, data = resnet20
    largest = 16 * SIZE * SIZE * 4  # resnet20's widest activation: 16 channels at full size, float32
    monkeypatch.setattr(images_module, "CPU_CHUNK_BYTES", 12 * largest)  # 12 images: a chunk of 8
    cached = compute_sensitivity(model, space, data, perturbation=ONE_SEED)
    naive = compute_sensitivity_naive(model, space, data, perturbation=ONE_SEED, **PLAIN)
    assert cached.engine["chunk"] == naive.engine["chunk"] == 8
    assert cached.acc0 == naive.acc0
    assert [u.per_seed for u in cached.units] == [u.per_seed for u in naive.units]
    checks = []

    def never_settled(*args):
        checks.append(args[0].shape[1])  # images seen
        return -1.0

    monkeypatch.setattr(adaptive_module, "rank_stability", never_settled)
    cfg = Adaptive(chunk=16, min_images=8, target=0.5)
    sens = compute_sensitivity(model, space, data, perturbation=ONE_SEED, adaptive=cfg)
    assert sens.engine["chunk"] == 8 and checks == [8, 24]  # every 16 images, not every chunk
    assert sens.images == 32 and sens.adaptive["stopped"] == "budget"


def test_rank_stability():
    from autoprune.sensitivity.adaptive import rank_stability

    rng = np.random.default_rng(0)
    spread = np.arange(10)[:, None] * 0.1 + rng.normal(0, 0.01, (10, 200))  # clearly ordered units
    assert rank_stability(spread, 100, 0.1, np.random.default_rng(1)) > 0.95
    noise = rng.normal(0, 1, (10, 20))  # no order at all
    assert rank_stability(noise, 100, 0.1, np.random.default_rng(1)) < 0.8  # far from the 0.95 target
    assert rank_stability(np.zeros((5, 30)), 50, 0.1, np.random.default_rng(1)) == 1.0  # all tied


def test_chunking_follows_max_memory(resnet20):
    model, space, data = resnet20
    small = compute_sensitivity(model, space, data, perturbation=ONE_SEED, images=Images(max_memory=2**20))
    big = compute_sensitivity(model, space, data, perturbation=ONE_SEED)
    assert 1 <= small.engine["chunk"] < big.engine["chunk"] == 32
    assert_same_values(
        small,
        compute_sensitivity_naive(model, space, data, perturbation=ONE_SEED, images=Images(max_memory=2**20)),
    )


# ------------------------------------------------------------ JSON, bad input


def test_json_round_trip_and_fields(resnet20, tmp_path):
    model, space, data = resnet20
    sens = compute_sensitivity(
        model,
        space,
        data,
        perturbation=Perturbation("sbpf", 2, (0.1, 0.5)),
        provenance=Provenance(checkpoint_sha256="ab" * 32),
    )
    path = sens.save(tmp_path / "sens.json")
    raw = json.loads(path.read_text())
    assert raw["format"] == "autoprune.sensitivity/1"
    for key in ("method", "unit", "arch", "input_size", "num_classes", "seeds", "images", "acc0", "loss0"):
        assert key in raw
    assert raw["checkpoint_sha256"] == "ab" * 32 and len(raw["model_sha256"]) == 64
    first = raw["units"][0]
    assert {"id", "stage", "delta", "std", "per_seed", "removable", "per_sigma"} <= set(first)
    assert len(first["per_seed"]) == 2 and set(first["per_sigma"]) == {"0.1", "0.5"}
    back = load_sensitivity(path, space)
    assert back.to_dict() == sens.to_dict() | {"seconds": round(sens.seconds, 3)}
    assert math.isclose(back["layer1.0"].std, sens["layer1.0"].std)


def test_load_rejects_another_model(resnet20, tmp_path):
    model, space, data = resnet20
    sens = compute_sensitivity(model, space, data, unit="group", perturbation=ONE_SEED)
    path = sens.save(tmp_path / "sens.json")
    other = calibrated("resnet32")
    with pytest.raises(AutopruneError, match="sens.json was computed for resnet20, not resnet32"):
        load_sensitivity(path, space_of(other, "resnet32"))
    anonymous = PruningSpace.from_model(other, torch.zeros(1, 3, SIZE, SIZE))  # no arch: ids decide
    with pytest.raises(AutopruneError, match="lacks .* channel group"):
        load_sensitivity(path, anonymous)
    with pytest.raises(AutopruneError, match="block units are needed"):
        load_sensitivity(path, space, unit="block")
    (tmp_path / "bad.json").write_text('{"format": "something/1"}')
    with pytest.raises(AutopruneError, match="not an autoprune sensitivity file"):
        load_sensitivity(tmp_path / "bad.json")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (lambda: {"perturbation": Perturbation("magic")}, "unknown sensitivity method"),
        (lambda: {"perturbation": Perturbation(seeds=0)}, "seeds must be >= 1"),
        (lambda: {"perturbation": Perturbation(seeds=[])}, "seeds must not be empty"),
        (lambda: {"perturbation": Perturbation(seeds=[1, 1])}, "seeds must be distinct"),
        (lambda: {"unit": "layer"}, "unknown unit"),
        (lambda: {"perturbation": Perturbation("sbpf", sigmas=(0.0,))}, "positive sigmas"),
        (lambda: {"images": Images(count=0)}, "images must be >= 1"),
        (lambda: {"images": Images(chunk=0)}, "chunk size must be >= 1"),
        (lambda: {"images": Images(max_memory=0)}, "max_memory must be positive"),
    ],
)
def test_bad_arguments_are_user_errors(resnet20, kwargs, match):
    model, space, data = resnet20
    with pytest.raises(AutopruneError, match=match):
        compute_sensitivity(model, space, data, **kwargs())


def test_block_units_need_residual_blocks():
    model = autoprune.create_model("vgg16", 10, 32).eval()
    space = PruningSpace.from_model(model, torch.zeros(1, 3, 32, 32), arch="vgg16")
    with pytest.raises(AutopruneError, match="no residual blocks; use --unit group"):
        compute_sensitivity(model, space, None, unit="block", perturbation=BN_GAMMA)


# ------------------------------------------------------------ depth selection


def _fake(deltas: dict[str, float], removable: dict[str, bool], unit: str = "block") -> Sensitivity:
    units = [
        UnitSensitivity(uid, unit, 0, d, 0.0, [d], loss_delta=0.0, removable=removable.get(uid))
        for uid, d in deltas.items()
    ]
    return Sensitivity("sr-init", unit, "net", 32, 10, [0], 100, 0.9, 0.3, units)


def test_select_blocks_by_tau_and_k_never_takes_shape_changing_blocks():
    sens = _fake(
        {"a": 0.001, "b": 0.0, "c": 0.2, "d": 0.01, "e": 0.05},
        {"a": True, "b": False, "c": True, "d": True, "e": True},
    )
    assert select_blocks_to_remove(sens, tau=0.01) == ["a", "d"]
    assert select_blocks_to_remove(sens, k=3) == ["a", "d", "e"]  # network order; "b" is never chosen
    assert select_blocks_to_remove(sens, k=0) == []
    with pytest.raises(AutopruneError, match="only 4 of 5 are removable"):
        select_blocks_to_remove(sens, k=5)
    with pytest.raises(AutopruneError, match="exactly one"):
        select_blocks_to_remove(sens, tau=0.1, k=1)
    with pytest.raises(AutopruneError, match="needs block sensitivities"):
        select_blocks_to_remove(_fake({"g": 0.1}, {}, unit="group"), k=1)


def test_depth_plan_from_a_real_run(resnet20):
    from autoprune.sensitivity import depth_plan

    model, space, data = resnet20
    sens = compute_sensitivity(model, space, data, perturbation=ONE_SEED)
    plan = depth_plan(space, sens, k=3)
    removable = {b.name for b in space.blocks if b.removable}
    assert len(plan.removed_blocks) == 3 and set(plan.removed_blocks) <= removable
    lowest = sorted((u for u in sens.units if u.removable), key=lambda u: (u.delta, u.loss_delta))[:3]
    assert set(plan.removed_blocks) == {u.id for u in lowest}
    assert all(plan.channels[g.id] == g.channels for g in space.groups)


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


# ------------------------------------------- perturbations against their definition


def test_sbpf_noise_has_the_formula_scale(resnet20):
    """ε ~ N(0, (σ·std W)²) per weight tensor, std W over that tensor's damaged entries."""
    from scipy.stats import kstest

    model, space, _ = resnet20
    model = _copy(model)
    with torch.no_grad():
        model.layer3[1].conv2.weight.mul_(10.0)  # a pooled std over both convs would be far off
    (unit,) = [u for u in units_from_space(space, "block", model) if u.id == "layer3.1"]
    for sigma in (0.1, 0.5):
        overrides = sbpf_overrides(model, unit, 0, sigma)
        assert set(overrides) == {"layer3.1.conv1.weight", "layer3.1.conv2.weight"}
        for key, new in overrides.items():
            w = model.get_parameter(key).detach()
            z = ((new - w) / (sigma * w.std())).double().flatten()  # should be N(0, 1)
            assert abs(float(z.mean())) < 0.03, key
            assert float(z.std()) == pytest.approx(1.0, abs=0.02), key
            assert kstest(z.numpy(), "norm").pvalue > 1e-3, key
    (group,) = [u for u in units_from_space(space, "group", model) if u.id == "layer3.0.conv1"]
    overrides = sbpf_overrides(model, group, 1, 0.25)
    assert set(overrides) == {"layer3.0.conv1.weight"}  # norms and biases are not damaged
    w = model.layer3[0].conv1.weight.detach()
    z = (overrides["layer3.0.conv1.weight"] - w) / (0.25 * w.std())
    assert float(z.std()) == pytest.approx(1.0, abs=0.03)


def _seed_of(*parts: object) -> int:
    """The documented seed derivation (units.py), written out here on purpose."""
    import hashlib

    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def _redraw_by_hand(model: nn.Module, name: str, seed: int) -> None:
    """Re-initialize ``model.name`` in place with resnet20's initializer from ``seed``, norms reset."""
    module = model.get_submodule(name)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        initializer_for("resnet20")(module)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0), m.bias.zero_(), m.running_mean.zero_(), m.running_var.fill_(1.0)


def _top1_and_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[int, float]:
    with torch.no_grad():
        logits = model.eval()(x)
    return int((logits.argmax(1) == y).sum()), float(nn.functional.cross_entropy(logits, y))


@pytest.mark.parametrize(
    ("unit", "uid", "modules"),
    [("block", "layer2.1", ["layer2.1"]), ("group", "layer3.0.conv1", ["layer3.0.conv1", "layer3.0.bn1"])],
)
def test_sr_init_delta_equals_an_independent_reference(resnet20, unit, uid, modules):
    """SR-init by hand (no library perturbation code): redraw the unit in a copy, evaluate the
    plain module on all images, and compare with the library's Δ (fast engine, its own chunks)."""
    model, space, (x, y) = resnet20
    sens = compute_sensitivity(model, space, (x, y), unit=unit, perturbation=Perturbation(seeds=[0, 3]))
    clean, loss0 = _top1_and_loss(model, x, y)
    n = len(y)
    for i, seed in enumerate((0, 3)):
        damaged = _copy(model)
        for name in modules:
            parts = ("sr-init", uid, seed) if unit == "block" else ("sr-init", uid, seed, name)
            _redraw_by_hand(damaged, name, _seed_of(*parts))
        correct, loss = _top1_and_loss(damaged, x, y)
        assert sens[uid].per_seed[i] == clean / n - correct / n, seed
        assert sens[uid].loss_per_seed[i] == pytest.approx(loss - loss0, abs=1e-5), seed
    assert sens[uid].loss_delta != 0  # the redraw does damage
