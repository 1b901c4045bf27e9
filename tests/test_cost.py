"""Cost model (vectorized FLOPs/params) and Plan JSON validation."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

import autoprune
from autoprune.budget import plan_cost
from autoprune.cost import CostModel
from autoprune.errors import AutopruneError
from autoprune.flops import measured_macs, param_count
from autoprune.plan import Plan
from autoprune.space import PruningSpace
from autoprune.surgery import apply_plan

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mnv2() -> tuple[torch.nn.Module, PruningSpace]:
    model = autoprune.create_model("mobilenetv2", 10, 32).eval()
    return model, PruningSpace.from_model(model, torch.randn(1, 3, 32, 32), arch="mobilenetv2")


def test_vectorized_cost_equals_one_by_one(mnv2) -> None:
    _, space = mnv2
    cm = CostModel(space)
    rng = np.random.default_rng(0)
    plans = space.channels_from_ratios(rng.uniform(0.1, 1.0, (50, len(space.groups))))
    flops, params = cm.cost(plans)
    assert flops.dtype == params.dtype == np.int64 and flops.shape == (50,)
    for i in (0, 17, 49):
        plan = space.plan_from_channels(plans[i])
        assert plan_cost(space, plan, cm) == (flops[i], params[i])
    assert (flops <= cm.dense_flops).all() and (flops >= cm.min_flops).all()


def test_dense_and_minimum_cost_match_real_models(mnv2) -> None:
    model, space = mnv2
    x = torch.randn(1, 3, 32, 32)
    cm = CostModel(space)
    assert (cm.dense_flops, cm.dense_params) == (measured_macs(model, x), param_count(model))
    smallest = space.plan_from_channels(space.min_counts)
    pruned = apply_plan(model, smallest, space=space).model
    assert (cm.min_flops, cm.min_params) == (measured_macs(pruned, x), param_count(pruned))
    assert cm.min_flops < 0.1 * cm.dense_flops


def test_removed_blocks_lower_the_cost(mnv2) -> None:
    _, space = mnv2
    cm = CostModel(space)
    full = space.max_counts[None, :].repeat(2, 0)
    removed = np.zeros((2, len(space.blocks)), dtype=bool)
    removed[1, [i for i, b in enumerate(space.blocks) if b.removable][0]] = True
    flops, params = cm.cost(full, removed)
    assert flops[0] == cm.dense_flops and flops[1] < flops[0] and params[1] < params[0]


def test_thousand_plans_in_a_few_milliseconds(mnv2) -> None:
    _, space = mnv2
    cm = CostModel(space)
    plans = space.channels_from_ratios(np.random.default_rng(1).uniform(0.1, 1.0, (1000, len(space.groups))))
    best = np.inf
    for _ in range(5):
        t = time.perf_counter()
        cm.flops(plans)
        cm.params(plans)
        best = min(best, time.perf_counter() - t)
    assert best < 0.010, f"{best * 1e3:.1f} ms for 1000 plans (FLOPs + params)"


# ------------------------------------------------------------------------- plans


def test_plan_json_round_trip_and_best_trial(mnv2, tmp_path) -> None:
    _, space = mnv2
    plan = space.uniform(0.5, removed_blocks=[space.removable_blocks[0].name])
    d = plan.to_dict()
    assert d["format"] == "autoprune.plan/1" and d["arch"] == "mobilenetv2"
    assert d["input_size"] == 32 and d["num_classes"] == 10
    path = plan.save(tmp_path / "plan.json")
    assert Plan.load(path, space) == plan
    trial = {**d, "score": 0.91, "budget": {"flops": 0.5}, "study": "runs/x", "checkpoint_sha256": "ab"}
    (tmp_path / "best_trial.json").write_text(json.dumps(trial))
    assert Plan.load(tmp_path / "best_trial.json", space) == plan
    assert Plan.from_dict({"plan": d, "score": 1.0}) == plan


def _bad(space: PruningSpace, **changes) -> dict:
    d = space.uniform(0.5).to_dict()
    d.update(changes)
    return d


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "autoprune.plan/9"}, "not an autoprune plan"),
        ({"channels": {"no.such.layer": 8}}, "does not have: 'no.such.layer'"),
        ({"channels": {"features.2.conv.0.0": 0}}, r"out of range \[1, 96\]"),
        ({"channels": {"features.2.conv.0.0": 97}}, "out of range"),
        ({"channels": {"features.2.conv.0.0": 9.5}}, "must be an integer"),
        ({"arch": "resnet20"}, "the plan is for 'resnet20'"),
        ({"input_size": 64}, "input size 64"),
        ({"num_classes": 100}, "100 classes"),
        ({"removed_blocks": ["features.2"]}, "not a residual block"),
        ({"channels": [1, 2]}, "group id -> integer"),
    ],
)
def test_bad_plans_give_clear_errors(mnv2, changes, message) -> None:
    _, space = mnv2
    with pytest.raises(AutopruneError, match=message):
        Plan.from_dict(_bad(space, **changes), space)


def test_shape_changing_block_cannot_be_removed() -> None:
    space = PruningSpace.from_model(autoprune.create_model("resnet20"), torch.randn(1, 3, 32, 32))
    with pytest.raises(AutopruneError, match="'layer2.0' changes the tensor shape"):
        space.uniform(1.0, removed_blocks=["layer2.0"])


def test_bad_plan_files(mnv2, tmp_path) -> None:
    _, space = mnv2
    with pytest.raises(AutopruneError, match="does not exist"):
        Plan.load(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(AutopruneError, match="not valid JSON"):
        Plan.load(tmp_path / "broken.json")
    (tmp_path / "other.json").write_text(json.dumps(_bad(space, arch="vgg16")))
    with pytest.raises(AutopruneError, match="other.json.*'vgg16'"):
        Plan.load(tmp_path / "other.json", space)


def test_space_plan_arguments(mnv2) -> None:
    _, space = mnv2
    with pytest.raises(AutopruneError, match="unknown channel groups"):
        space.plan({"nope": 0.5})
    with pytest.raises(AutopruneError, match="keep ratios"):
        space.plan([0.5])
    with pytest.raises(AutopruneError, match=r"in \(0, 1\]"):
        space.uniform(1.5)
    partial = space.plan({"features.2.conv.0.0": 0.5})
    assert partial.channels["features.2.conv.0.0"] == 48
    assert partial.channels["features.3.conv.0.0"] == 144
    assert partial.ratios["features.2.conv.0.0"] == 0.5
