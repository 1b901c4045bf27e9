"""The weight-shared supernet: executor == apply_plan, sandwich sampling, stage-wise training,
refusing a foreign supernet, and `search --proxy supernet` end to end (all on the CPU, small)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import randomize

from autoprune import PruningSpace, apply_plan, create_model
from autoprune.checkpoint import file_sha256, load_model
from autoprune.data import EvalBatches, load_dataset
from autoprune.errors import AutopruneError
from autoprune.search.proxies import create_proxy
from autoprune.supernet import Supernet, SupernetConfig, SupernetExecutor, sandwich, train_supernet
from autoprune.supernet import training as training_module
from autoprune.supernet.training import frozen_teacher
from autoprune.surgery import group_scores, select_channels

pytestmark = pytest.mark.usefixtures("one_thread")
X32 = torch.zeros(1, 3, 32, 32)


@pytest.mark.parametrize("arch", ["resnet20", "mobilenetv2"])
def test_the_executor_equals_apply_plan_on_random_plans(arch):
    torch.manual_seed(0)
    model = randomize(create_model(arch, 10, 32)).eval()
    space = PruningSpace.from_model(model, X32, arch=arch)
    executor = SupernetExecutor.from_dense(model, space)
    executor.model.eval()
    x = torch.randn(3, 3, 32, 32)
    scores = group_scores(space, model, "l1")
    rng = np.random.default_rng(0)
    with torch.no_grad():
        assert torch.allclose(executor.model(x), model(x), atol=1e-5)  # reordering changes nothing
        for _ in range(3):
            plan = space.plan(rng.uniform(0.1, 1.0, len(space.groups)).tolist())
            reference = apply_plan(model, plan, space=space).model.eval()(x)
            assert torch.allclose(executor(x, plan), reference, atol=1e-5)
            assert torch.allclose(executor.materialize(plan).eval()(x), reference, atol=1e-5)
            chosen = select_channels(space, scores, space.channels_vector(plan))
            for ours, theirs in zip(executor.original_kept(plan), chosen, strict=True):
                assert np.array_equal(ours, theirs)  # first-k of the order = top-k


def test_the_sandwich_has_the_full_and_the_smallest_plan_every_step():
    model = create_model("resnet20", 10, 32)
    space = PruningSpace.from_model(model, X32, arch="resnet20")
    rng = np.random.default_rng(0)
    smallest = space.channels_from_ratios(np.full(len(space.groups), 0.1))
    for _ in range(5):
        plans = sandwich(space, rng, 0.1)
        assert len(plans) == 4
        assert np.array_equal(plans[0], space.max_counts) and np.array_equal(plans[1], smallest)
        for p in plans[2:]:
            space.plan_from_channels(p)  # valid counts
            assert (smallest <= p).all() and (p <= space.max_counts).all()


@pytest.fixture(scope="module")
def digits_supernet(digits_checkpoint):
    model, ckpt = load_model(digits_checkpoint)
    space = PruningSpace.from_model(model, X32, arch="resnet20", num_classes=10)
    meta = {"arch": "resnet20", "checkpoint_sha256": file_sha256(digits_checkpoint)}
    return model, space, Supernet.from_dense(model, space, meta=meta)


def test_a_few_training_steps_reduce_every_stage_loss(digits_supernet, monkeypatch):
    model, space, supernet = digits_supernet
    splits = load_dataset("digits")
    x = torch.stack([splits.train[i][0] for i in range(48)])
    plans = sandwich(space, np.random.default_rng(1))

    def measure() -> np.ndarray:
        teacher = frozen_teacher(supernet)
        supernet.model.train()
        with torch.no_grad():
            outs = teacher([x, None, None])
            return np.array([[float(v) for v in supernet.stage_losses(x, c, outs)] for c in plans]).mean(0)

    sampled = []
    real = training_module.sandwich

    def recording(*args, **kwargs):
        sampled.append(real(*args, **kwargs))
        return sampled[-1]

    monkeypatch.setattr(training_module, "sandwich", recording)
    before = measure()
    assert supernet.stages.n_stages == 3 and before.shape == (3,)
    history = train_supernet(supernet, splits, SupernetConfig(steps=6, batch_size=32, lr=0.02))
    after = measure()
    assert len(sampled) == history.steps == 6  # one sandwich per step, each with the full and smallest
    smallest = space.channels_from_ratios(np.full(len(space.groups), 0.1))
    assert all(np.array_equal(p[0], space.max_counts) and np.array_equal(p[1], smallest) for p in sampled)
    assert (after < before).all(), (before, after)


def test_proxy_scores_and_save_load_and_a_foreign_supernet_is_refused(digits_supernet, tmp_path):
    model, space, supernet = digits_supernet
    path = supernet.save(tmp_path / "supernet.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["meta"]["arch"] == "resnet20" and len(payload["order"]) == len(space.groups)
    sha = supernet.meta["checkpoint_sha256"]
    loaded = Supernet.load(path, model, space, arch="resnet20", checkpoint_sha256=sha)
    plan = space.uniform(0.5)
    x = torch.randn(2, 3, 32, 32)
    supernet.model.eval(), loaded.model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded.executor(x, plan), supernet.executor(x, plan), atol=1e-5)
    with pytest.raises(AutopruneError, match="another dense checkpoint") as info:
        Supernet.load(path, model, space, arch="resnet20", checkpoint_sha256="0" * 64)
    assert "\n" not in str(info.value)
    with pytest.raises(AutopruneError, match="trained for 'resnet20', not 'vgg11'"):
        Supernet.load(path, model, space, arch="vgg11", checkpoint_sha256=sha)

    splits = load_dataset("digits")
    recal = EvalBatches.from_dataset(splits.train_plain, 32, 64, seed=0)
    search = EvalBatches.from_dataset(splits.search, 32, 64)
    cpu = torch.device("cpu")
    sliced = create_proxy(
        "supernet", model, space, recal, search, cpu, supernet=str(path), checkpoint_sha256=sha
    )
    steps: list[float] = []
    score = sliced.score(plan, lambda step, value: steps.append(value))
    assert 0.0 <= score.accuracy <= 1.0 and len(steps) >= 4
    masked = create_proxy("supernet", model, space, recal, search, cpu, supernet=loaded, executor="masked")
    assert abs(masked.score(plan).accuracy - score.accuracy) < 1e-6  # the GPU path, run on the CPU here
    staged = create_proxy("supernet", model, space, recal, search, cpu, supernet=loaded, metric="stage-loss")
    losses: list[float] = []
    value = staged.score(plan, lambda step, v: losses.append(v))
    assert value.accuracy < 0 and value.accuracy == pytest.approx(-value.loss) and len(losses) == 2


def test_search_with_the_supernet_proxy_end_to_end(run_cli, tmp_path, digits_checkpoint):
    made = run_cli(
        "supernet", "--checkpoint", digits_checkpoint, "--dataset", "digits", "--steps", "2",
        "--batch-size", "16", "--threads", "1", "--device", "cpu", "--out", tmp_path / "s.pt",
    )  # fmt: skip
    assert made.code == 0, made.err
    assert "stage losses" in made.out
    run = tmp_path / "run"
    run.mkdir()
    (run / "supernet.pt").write_bytes((tmp_path / "s.pt").read_bytes())  # reused, not trained again
    args = [
        "search", "--arch", "resnet20", "--dataset", "digits", "--flops", "0.5", "--checkpoint",
        digits_checkpoint, "--prior", "uniform", "--trials", "2", "--proxy", "supernet", "--device", "cpu",
        "--recal-batches", "1", "--batch-size", "32", "--search-images", "64", "--study", "t",
    ]  # fmt: skip
    result = run_cli(*args, "--out", run)
    assert result.code == 0, result.err
    document = json.loads((run / "best_trial.json").read_text())
    assert document["format"] == "autoprune.plan/1"
    fresh = tmp_path / "fresh"  # no supernet.pt there: the search trains one first
    trained = run_cli(*args, "--supernet-steps", "1", "--out", fresh)
    assert trained.code == 0, trained.err
    assert (fresh / "supernet.pt").is_file() and (fresh / "best_trial.json").is_file()
    # a supernet of another checkpoint in the run folder is refused with one line
    model, _ = load_model(digits_checkpoint)
    space = PruningSpace.from_model(model, X32, arch="resnet20", num_classes=10)
    foreign = tmp_path / "other"
    foreign.mkdir()
    Supernet.from_dense(model, space, meta={"arch": "resnet20", "checkpoint_sha256": "f" * 64}).save(
        foreign / "supernet.pt"
    )
    refused = run_cli(*args, "--out", foreign)
    assert refused.code == 2
    assert "another dense checkpoint" in refused.err and len(refused.err.strip().splitlines()) == 1
    bad = run_cli(*args[:-2], "--proxy", "recal", "--proxy-metric", "stage-loss", "--out", tmp_path / "x")
    assert bad.code == 2 and "needs --proxy supernet" in bad.err
