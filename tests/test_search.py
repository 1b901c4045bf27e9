"""Budget projection and the search service end to end (digits, resnet20)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from functools import cache
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autoprune import AutopruneError, create_model
from autoprune.budget import project_to_budget
from autoprune.checkpoint import load_model
from autoprune.cost import CostModel
from autoprune.flops import measured_macs, param_count
from autoprune.jobs import SearchConfig, run_search
from autoprune.plan import Plan
from autoprune.space import PruningSpace
from autoprune.surgery import apply_plan

BUILTINS = ("resnet20", "resnet32", "resnet56", "resnet110", "mobilenetv2", "vgg16")


@cache
def built_space(arch: str) -> PruningSpace:
    model = create_model(arch, 10, 32)
    return PruningSpace.from_model(model, torch.zeros(1, 3, 32, 32), arch=arch, num_classes=10)


@pytest.mark.parametrize("arch", BUILTINS)
@settings(max_examples=15, deadline=None, derandomize=True)
@given(data=st.data())
def test_projection_meets_the_budget_within_half_a_percent(arch, data):
    space = built_space(arch)
    n = len(space.groups)
    logs = data.draw(st.lists(st.floats(-3, 3), min_size=n, max_size=n))
    target = data.draw(st.floats(0.3, 0.95))
    kind = data.draw(st.sampled_from(["flops", "params"]))
    projection = project_to_budget(space, np.exp(logs), **{kind: target})
    ratio = projection.flops_ratio if kind == "flops" else projection.params_ratio
    assert ratio <= target
    assert ratio >= target * 0.995
    assert projection.steps <= 40
    cost = CostModel(space)
    channels = np.array([[projection.plan.channels[g.id] for g in space.groups]])
    assert cost.flops(channels)[0] == projection.flops


def test_projected_plan_is_exact_on_the_built_model():
    space = built_space("mobilenetv2")
    model = create_model("mobilenetv2", 10, 32)
    projection = project_to_budget(space, np.ones(len(space.groups)), flops=0.67)
    pruned = apply_plan(model, projection.plan, space=space).model
    assert measured_macs(pruned, torch.zeros(1, 3, 32, 32)) == projection.flops
    assert param_count(pruned) == projection.params


def test_both_budgets_at_once_respect_each():
    space = built_space("resnet56")
    projection = project_to_budget(space, np.ones(len(space.groups)), flops=0.6, params=0.4)
    assert projection.flops_ratio <= 0.6 and projection.params_ratio <= 0.4
    assert max(projection.flops_ratio / 0.6, projection.params_ratio / 0.4) >= 0.995


def test_a_budget_below_the_smallest_network_names_the_smallest_ratio():
    space = built_space("resnet20")
    with pytest.raises(AutopruneError, match=r"smallest achievable 0\.\d+"):
        project_to_budget(space, np.ones(len(space.groups)), flops=0.001)


@pytest.mark.parametrize("value", [0, 1.5, float("nan"), -0.2])
def test_budget_must_be_a_fraction(value):
    with pytest.raises(AutopruneError, match="fraction"):
        project_to_budget(built_space("resnet20"), np.ones(len(built_space("resnet20").groups)), flops=value)


def _search(tmp_path: Path, checkpoint: Path, **overrides) -> object:
    config = SearchConfig(
        arch="resnet20",
        dataset="digits",
        flops=0.5,
        checkpoint=str(checkpoint),
        prior="uniform",
        trials=5,
        seed=0,
        out=str(tmp_path / "run"),
        study="t",
        device="cpu",
        recal_batches=2,
        batch_size=64,
        search_images=128,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return run_search(config)


def test_a_short_search_writes_a_plan_that_applies_within_budget(tmp_path, digits_checkpoint):
    result = _search(tmp_path, digits_checkpoint)
    run = tmp_path / "run"
    assert result.trials_done == 5
    for name in ("best_trial.json", "trials.csv", "summary.png", "study.journal"):
        assert (run / name).is_file(), name
    document = json.loads((run / "best_trial.json").read_text())
    assert document["format"] == "autoprune.plan/1"
    assert document["study"]["name"] == "t" and document["budget"]["flops"] == 0.5
    model, _ = load_model(digits_checkpoint)
    space = PruningSpace.from_model(model, torch.zeros(1, 3, 32, 32), arch="resnet20", num_classes=10)
    plan = Plan.load(run / "best_trial.json", space)
    pruned = apply_plan(model, plan, space=space).model
    dense_macs = measured_macs(model, torch.zeros(1, 3, 32, 32))
    assert measured_macs(pruned, torch.zeros(1, 3, 32, 32)) <= 0.5 * dense_macs
    study = optuna.load_study(
        study_name="t",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(run / "study.journal"))
        ),
    )
    first = study.trials[0]
    assert {"channels", "keep_ratios", "flops", "params", "flops_ratio"} <= set(first.user_attrs)
    assert len(list((run / "artifacts").iterdir())) >= 5  # one keep-ratio chart per trial
    lines = (run / "trials.csv").read_text().splitlines()
    assert len(lines) == 6 and lines[0].startswith("trial,state,accuracy")


def test_resume_adds_trials_to_the_same_study(tmp_path, digits_checkpoint):
    _search(tmp_path, digits_checkpoint, trials=2)
    result = _search(tmp_path, digits_checkpoint, trials=3)
    assert result.trials_done == 3
    lines = (tmp_path / "run" / "trials.csv").read_text().splitlines()
    assert len(lines) == 1 + 5


def test_resume_refuses_another_budget(tmp_path, digits_checkpoint):
    _search(tmp_path, digits_checkpoint, trials=1)
    with pytest.raises(AutopruneError, match="budget"):
        _search(tmp_path, digits_checkpoint, trials=1, flops=0.7)


def test_stop_request_ends_after_the_current_trial(tmp_path, digits_checkpoint):
    stop = threading.Event()
    stop.set()
    config = SearchConfig(
        arch="resnet20",
        dataset="digits",
        flops=0.5,
        checkpoint=str(digits_checkpoint),
        prior="uniform",
        trials=10,
        out=str(tmp_path / "run"),
        study="s",
        device="cpu",
        recal_batches=1,
        search_images=64,
    )
    result = run_search(config, stop=stop)
    assert result.trials_done == 1 and result.interrupted
    assert json.loads((tmp_path / "run" / "best_trial.json").read_text())["study"]["trial"] == 0


def test_two_processes_share_one_journal(tmp_path, digits_checkpoint):
    _search(tmp_path, digits_checkpoint, trials=1)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "autoprune.cli",
        "worker",
        str(tmp_path / "run"),
        "--trials",
        "2",
        "--device",
        "cpu",
    ]
    workers = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)
    ]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err.decode()[-2000:]
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "run" / "study.journal"))
    )
    trials = optuna.load_study(study_name="t", storage=storage).trials
    assert len(trials) == 5
    assert all(
        t.state == optuna.trial.TrialState.COMPLETE or t.state == optuna.trial.TrialState.PRUNED
        for t in trials
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--flops", "0"), "fraction"),
        (("--flops", "1.5"), "fraction"),
        (("--flops", "nan"), "fraction"),
        (("--flops", "0.5", "--sampler", "annealing"), "annealing"),
        (("--flops", "0.5", "--storage", "postgresql://u:pw@127.0.0.1:1/x"), "storage"),
        ((), "budget"),
    ],
)
def test_bad_search_input_is_one_line_and_exit_2(run_cli, tmp_path, digits_checkpoint, args, message):
    result = run_cli(
        "search",
        "--arch",
        "resnet20",
        "--dataset",
        "digits",
        "--checkpoint",
        digits_checkpoint,
        "--out",
        tmp_path / "r",
        "--device",
        "cpu",
        *args,
    )
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.err
    assert not (tmp_path / "r" / "best_trial.json").exists()
