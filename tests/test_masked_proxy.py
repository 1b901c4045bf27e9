"""The masked recal proxy (dead channels through the fused kernels) scores like the sliced one.

Tolerances: both proxies compute the kept channels from the same float32 weights
and images, but sum them in different orders (a conv over the kept channels vs a
masked GEMM that also adds exact zeros, numba or Triton kernels vs oneDNN) and
accumulate the BN statistics differently (float64 sums vs torch's running update).
Each layer then differs by a few float32 ulps (~1e-7 relative) and ~20-50 layers
compound that to ~1e-6 at most (measured: 3e-8 to 1e-6); the mean loss is compared
at 1e-5 relative. The accuracies are compared exactly: a prediction could only flip
on a top-2 logit margin below ~1e-5, which these seeded draws do not have.

Every BN sees at least 16 values per channel per recalibration batch: with very few
(8 px images, batch 2: 2 values) a channel's spread can be tiny next to its mean, and
the folded ``y·scale + shift`` form of the kernels then cancels catastrophically
(the losses differed by 0.5 %, in float64 too, on every backend).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_executor import _randomized
from torch import nn

from autoprune import AutopruneError, PruningSpace
from autoprune.data import EvalBatches
from autoprune.executor import MaskedExecutor
from autoprune.recalibration import recalibrate_batchnorm
from autoprune.search.proxies import (
    MIN_REPORT_STEPS,
    MaskedRecalProxy,
    ProxyScore,
    RecalProxy,
    create_proxy,
)
from autoprune.surgery import apply_plan

CPU = torch.device("cpu")
REMOVED = {"resnet20": "layer1.1", "mobilenetv2": "features.5"}  # a removable block of each


@pytest.fixture(autouse=True)
def _one_thread_again(one_thread):
    """A numba kernel launch resizes the OpenMP pool torch uses: one thread again before every test."""
    one_thread()


def _images(count: int, size: int, pixels: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(size, 3, pixels, pixels, generator=g) for _ in range(count)]


def _setup(arch: str, pixels: int = 16, recal=(2, 4), search=(2, 8)):
    """A randomized model, its space, recal batches, search images and two plans.

    The images are 16 px (both models end in a global pool) to keep the test fast.
    """
    model = _randomized(arch)
    space = PruningSpace.from_model(model, torch.zeros(1, 3, 32, 32), arch=arch, num_classes=10)
    rng = np.random.default_rng(0)
    plans = {
        "uniform": space.uniform(0.5),
        "random": space.plan(rng.uniform(0.15, 1.0, len(space.groups)), removed_blocks=[REMOVED[arch]]),
    }
    recal_batches = EvalBatches(
        [(x, torch.zeros(len(x), dtype=torch.long)) for x in _images(*recal, pixels, 1)]
    )
    return model, space, recal_batches, _images(*search, pixels, 2), plans


def _labelled(model: nn.Module, space: PruningSpace, plan, recal: EvalBatches, images) -> EvalBatches:
    """``images`` labelled by the sliced candidate itself, every other label moved to another class.

    The sliced proxy then scores exactly 50 % and the masked one only if every prediction agrees.
    """
    pruned = recalibrate_batchnorm(apply_plan(model, plan, space=space).model, recal.images, CPU)
    with torch.no_grad():
        labels = [pruned(x).argmax(1) for x in images]
    for y in labels:
        y[::2] = (y[::2] + 1) % 10
    return EvalBatches(list(zip(images, labels, strict=True)))


def _scores(proxy, plan) -> tuple[ProxyScore, list[float]]:
    reported: list[float] = []
    score = proxy.score(plan, lambda step, acc: reported.append(acc))
    return score, reported


def _assert_same(got: tuple[ProxyScore, list[float]], expected: tuple[ProxyScore, list[float]], what: str):
    (score, per_batch), (ref, ref_per_batch) = got, expected
    assert per_batch == ref_per_batch, what
    assert (score.accuracy, score.images) == (ref.accuracy, ref.images), what
    assert score.loss == pytest.approx(ref.loss, rel=1e-5), what


@pytest.fixture(scope="module", params=["resnet20", "mobilenetv2"])
def case(request, one_thread):
    """Per plan: search batches and the sliced proxy's scores on them."""
    one_thread()
    model, space, recal, images, plans = _setup(request.param)
    cases = {}
    for name, plan in plans.items():
        search = _labelled(model, space, plan, recal, images)
        expected = _scores(RecalProxy(model, space, recal, search, device=CPU), plan)
        # 16 images in 2 batches; ceil(16 / MIN_REPORT_STEPS) = 2 images a report step, one of each pair right
        assert expected[0].images == 16 and MIN_REPORT_STEPS == 12
        assert expected[1] == [0.5] * 8
        cases[name] = (plan, search, expected)
    return request.param, model, space, recal, cases


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_masked_proxy_equals_recal_proxy(case, backend):
    arch, model, space, recal, cases = case
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name, (plan, search, expected) in cases.items():
        masked = MaskedRecalProxy(model, space, recal, search, device=CPU, backend=backend)
        _assert_same(_scores(masked, plan), expected, f"{arch} {backend} {name}")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the model must not change"


@pytest.mark.parametrize("arch", ["resnet20", "mobilenetv2"])
def test_triton_interpreted_equals_recal_proxy(arch, monkeypatch):
    """Triton kernels interpreted on the CPU, on few 16 px images (the interpreter is slow)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    model, space, recal, images, plans = _setup(arch, recal=(1, 4), search=(1, 2))
    plan = plans["random"]
    search = _labelled(model, space, plan, recal, images)
    masked = MaskedRecalProxy(model, space, recal, search, device=CPU, backend="triton")
    expected = _scores(RecalProxy(model, space, recal, search, device=CPU), plan)
    _assert_same(_scores(masked, plan), expected, f"{arch} triton")


def test_recalibrated_statistics_are_the_pruned_models():
    """Mean of batch means and of *unbiased* batch variances, as torch's BN with momentum=None."""
    model, space, recal, _, plans = _setup("resnet20", recal=(3, 4))
    plan = plans["uniform"]
    proxy = MaskedRecalProxy(model, space, recal, recal, device=CPU, backend="torch")
    run = proxy.executor.recalibrated(recal.images, proxy.out_masks(plan))
    result = apply_plan(model, plan, space=space)
    pruned = recalibrate_batchnorm(result.model, recal.images, CPU)
    for name, bn in pruned.named_modules():
        if isinstance(bn, nn.BatchNorm2d):
            kept = result.kept.get(name, {}).get("out", list(range(bn.num_features)))
            mean, var = run.stats[name]
            torch.testing.assert_close(mean[kept], bn.running_mean, rtol=1e-5, atol=1e-6, msg=name)
            torch.testing.assert_close(var[kept], bn.running_var, rtol=1e-5, atol=1e-6, msg=name)


def test_create_proxy_picks_by_device_and_override(monkeypatch):
    model, space, recal, _, _ = _setup("resnet20", recal=(1, 2), search=(1, 2))
    args = ("recal", model, space, recal, recal, CPU)
    monkeypatch.delenv("AUTOPRUNE_PROXY_EXECUTOR", raising=False)
    assert type(create_proxy(*args)) is RecalProxy  # CPU: slicing is the fast path
    assert type(create_proxy(*args, executor="masked")) is MaskedRecalProxy
    monkeypatch.setenv("AUTOPRUNE_PROXY_EXECUTOR", "masked")
    assert type(create_proxy(*args)) is MaskedRecalProxy
    assert type(create_proxy(*args, executor="sliced")) is RecalProxy
    monkeypatch.setenv("AUTOPRUNE_PROXY_EXECUTOR", "fast")
    with pytest.raises(AutopruneError, match="AUTOPRUNE_PROXY_EXECUTOR"):
        create_proxy(*args)
    with pytest.raises(AutopruneError, match="unknown proxy"):
        create_proxy("nonsense", *args[1:])


class _PreActivation(nn.Module):
    """A BN on a tensor that also feeds a sum: not fused after its conv, so not recalibrated under masks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.conv1(x)
        y = self.conv2(torch.relu(self.bn(x)))
        return self.fc((x + y).mean((2, 3)))


def test_models_beyond_the_executor_are_refused():
    model = _PreActivation().eval()
    space = PruningSpace.from_model(model, torch.zeros(1, 3, 8, 8), num_classes=10)
    data = EvalBatches([(x, torch.zeros(2, dtype=torch.long)) for x in _images(1, 2, 8, 0)])
    with pytest.raises(AutopruneError, match="not: bn"):
        MaskedRecalProxy(model, space, data, data, device=CPU)
    executor = MaskedExecutor(model)
    assert executor.unfused_norms == ["bn"]
    with pytest.raises(AutopruneError, match="not fused: bn"):
        executor.recalibrated(data.images)
