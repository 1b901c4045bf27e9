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
from optuna.trial import TrialState

from autoprune import AutopruneError, create_model
from autoprune.budget import Budget, project_to_budget
from autoprune.checkpoint import load_model
from autoprune.cost import CostModel
from autoprune.flops import measured_macs, param_count
from autoprune.jobs import SearchConfig, run_search
from autoprune.plan import Plan
from autoprune.prior import preferences_from_sensitivity
from autoprune.search.objective import PlanObjective, SearchSpaceSpec, prior_log
from autoprune.search.proxies import Proxy, ProxyScore
from autoprune.search.samplers import create_sampler
from autoprune.search_spaces import space_for
from autoprune.sensitivity import load_sensitivity
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
    return run_search(_config(tmp_path, checkpoint, **overrides))


def _config(tmp_path: Path, checkpoint: Path, **overrides) -> SearchConfig:
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
    return config


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


def test_resume_runs_only_the_missing_trials(tmp_path, digits_checkpoint):
    _search(tmp_path, digits_checkpoint, trials=2)
    result = _search(tmp_path, digits_checkpoint, trials=5)  # --trials is the study's total
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
    config = _config(
        tmp_path, digits_checkpoint, trials=10, study="s", recal_batches=1, batch_size=128, search_images=64
    )
    result = run_search(config, stop=stop)
    assert result.trials_done == 1 and result.interrupted
    assert json.loads((tmp_path / "run" / "best_trial.json").read_text())["study"]["trial"] == 0


def test_two_processes_share_one_journal(tmp_path, digits_checkpoint):
    stop = threading.Event()
    stop.set()  # the search stores the cap of 5 and stops after its first trial
    run_search(_config(tmp_path, digits_checkpoint), stop=stop)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "autoprune.cli", "worker", str(tmp_path / "run"), "--device", "cpu"]
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
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 5  # the workers stop at the study's cap, together
    assert all(t.user_attrs.get("surplus") for t in trials if t not in finished)


def _search_cli(checkpoint: Path, out: Path) -> tuple:
    """``autoprune search`` of resnet20 on digits from ``checkpoint`` into ``out``: the CLI tests' start."""
    return ("search", "--arch", "resnet20", "--dataset", "digits", "--checkpoint", checkpoint, "--out", out)


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
    result = run_cli(*_search_cli(digits_checkpoint, tmp_path / "r"), "--device", "cpu", *args)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.err
    assert not (tmp_path / "r" / "best_trial.json").exists()


# ---------------------------------------------------------------- samplers, prior, modes


class _PlanScore(Proxy):
    """A cheap stand-in proxy: how close a plan's keep ratios are to a fixed target (no model)."""

    name = "test"
    device = torch.device("cpu")

    def __init__(self, space: PruningSpace) -> None:
        self.space = space
        self.target = np.random.default_rng(5).uniform(0.2, 1.0, len(space.groups))

    def score(self, plan: Plan, report=None) -> ProxyScore:
        kept = np.array([plan.channels[g.id] / g.channels for g in self.space.groups])
        return ProxyScore(float(1.0 - np.abs(kept - self.target).mean()), 0.0, 1)


@pytest.mark.parametrize("sampler", ["tpe", "gp", "cmaes", "nsga2", "random"])
def test_every_sampler_proposes_plans_other_than_the_first(sampler):
    """Past the two seeded trials (prior, uniform) each sampler moves: a sampler stuck on the
    enqueued point, or one whose parameters never reach the plan, would repeat trial 0."""
    space = built_space("resnet20")
    preferences = preferences_from_sensitivity(np.random.default_rng(3).uniform(0, 0.2, len(space.groups)))
    spec = SearchSpaceSpec(
        [g.id for g in space.groups], [g.stage for g in space.groups], prior_log(preferences)
    )
    multi = sampler == "nsga2"
    objective = PlanObjective(
        space,
        spec,
        Budget(0.5, None),
        _PlanScore(space),
        r_min=0.1,
        artifact_store=None,
        multi_objective=multi,
    )
    study = optuna.create_study(
        sampler=create_sampler(sampler, 0), directions=["maximize", "minimize"] if multi else ["maximize"]
    )
    for params in spec.seed_params():
        study.enqueue_trial(params)
    study.optimize(objective, n_trials=14)  # past TPE's and GP's 10 start-up trials
    plans = [t.user_attrs["channels"] for t in study.trials]
    assert plans[0] != plans[1]  # the prior is not the uniform plan
    assert all(p != plans[0] for p in plans[2:]), sampler
    assert len({json.dumps(p, sort_keys=True) for p in plans}) >= 12, sampler
    assert all(t.user_attrs["flops_ratio"] <= 0.5 for t in study.trials if not multi), sampler


def _study(run: Path, name: str = "t") -> optuna.Study:
    backend = optuna.storages.journal.JournalFileBackend(str(run / "study.journal"))
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend))


def test_sensitivity_prior_is_computed_and_seeds_the_prior_and_the_uniform_trials(
    tmp_path, digits_checkpoint
):
    _search(tmp_path, digits_checkpoint, prior="sensitivity", sensitivity_seeds=1, trials=3, pruner="none")
    run = tmp_path / "run"
    sens = load_sensitivity(run / "sensitivity.json")  # the prior path computed it
    assert (sens.method, sens.unit, sens.seeds) == ("sr-init", "group", [0])
    study = _study(run)
    stored = study.user_attrs["autoprune.config"]
    deltas = np.array([sens[g].delta for g in stored["group_ids"]])
    assert deltas.max() > 0  # a real prior, not the uniform fallback
    assert stored["preferences"] == pytest.approx(preferences_from_sensitivity(deltas).tolist())
    model, ckpt = load_model(digits_checkpoint)
    space = space_for(model, "resnet20", ckpt.meta["input_size"], ckpt.meta["num_classes"])
    at_budget = {
        name: project_to_budget(space, prefs, flops=0.5, r_min=stored["r_min"]).plan.channels
        for name, prefs in (
            ("prior", np.array(stored["preferences"])),
            ("uniform", np.ones(len(space.groups))),
        )
    }
    assert at_budget["prior"] != at_budget["uniform"]
    first, second, third = study.trials
    assert first.params["prior_weight"] == 1.0 and second.params["prior_weight"] == 0.0
    assert all(v == 0.0 for t in (first, second) for k, v in t.params.items() if k.startswith("m:"))
    assert first.user_attrs["channels"] == at_budget["prior"]
    assert second.user_attrs["channels"] == at_budget["uniform"]
    assert [second.user_attrs["channels"][g] for g in stored["group_ids"]] == stored["uniform_channels"]
    assert third.user_attrs["channels"] not in (at_budget["prior"], at_budget["uniform"])


def test_stage_space_samples_one_multiplier_per_stage(tmp_path, digits_checkpoint):
    _search(tmp_path, digits_checkpoint, space="stage", trials=3, pruner="none")
    study = _study(tmp_path / "run")
    stages = sorted(set(study.user_attrs["autoprune.config"]["group_stages"]))
    assert len(stages) >= 2
    for t in study.trials:
        assert set(t.params) == {f"m:stage{s}" for s in stages}  # uniform prior: no prior weight
        assert t.user_attrs["flops_ratio"] <= 0.5
    config = study.user_attrs["autoprune.config"]
    last = study.trials[-1].user_attrs["keep_ratios"]
    stage_of = dict(zip(config["group_ids"], config["group_stages"], strict=True))
    per_stage = {s: {r for g, r in last.items() if stage_of[g] == s} for s in stages}
    assert len(set().union(*per_stage.values())) > 1  # the stage multipliers reach the plan


def test_nsga2_from_the_cli_searches_accuracy_against_flops(run_cli, tmp_path, digits_checkpoint):
    result = run_cli(
        *_search_cli(digits_checkpoint, tmp_path / "run"),
        "--study",
        "p",
        "--device",
        "cpu",
        "--flops",
        "0.5",
        "--prior",
        "uniform",
        "--sampler",
        "nsga2",
        "--trials",
        "3",
        "--recal-batches",
        "1",
        "--search-images",
        "64",
    )
    assert result.code == 0, result.err
    study = _study(tmp_path / "run", "p")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert len(study.trials) == 3
    for t in study.trials:
        accuracy, flops_ratio = t.values
        assert 0.0 <= accuracy <= 1.0 and flops_ratio == t.user_attrs["flops_ratio"]
        assert flops_ratio <= t.params["flops_target"] <= 0.5  # the target itself is searched
    assert len({t.params["flops_target"] for t in study.trials}) > 1
    assert (tmp_path / "run" / "best_trial.json").is_file()


# ---------------------------------------------------------------- trial pruner


class _Quality(Proxy):
    """Fake proxy on the digits demo's search split shape (300 images, batches of 128): trial k
    gets image i right when its seeded draw u_k[i] < qualities[k]; scored by score_batches."""

    name = "test"
    device = torch.device("cpu")

    def __init__(self, qualities: list[float]) -> None:
        from autoprune.data import EvalBatches

        self.qualities = qualities
        self.calls = 0
        labels = torch.arange(300) % 10
        self.data = EvalBatches(list(zip(torch.arange(300).split(128), labels.split(128), strict=True)))

    def score(self, plan: Plan, report=None) -> ProxyScore:
        from autoprune.search.proxies import score_batches

        quality = self.qualities[self.calls]
        draws = torch.from_numpy(np.random.default_rng(self.calls).uniform(size=300))
        self.calls += 1

        def model(index: torch.Tensor) -> torch.Tensor:
            right = draws[index] < quality
            label = torch.where(right, index % 10, (index + 1) % 10)
            return torch.nn.functional.one_hot(label, 10).float()

        return score_batches(model, self.data, report)


def test_wilcoxon_pruner_stops_a_bad_trial_early_and_keeps_good_ones():
    """300 search images are 12 report steps (not 3 batches), enough for the Wilcoxon pruner."""
    from autoprune.search.proxies import MIN_REPORT_STEPS, report_images
    from autoprune.search.samplers import create_pruner

    assert report_images(300, 128) == 25 and MIN_REPORT_STEPS == 12
    assert report_images(5000, 128) == 128  # large splits keep one step per batch
    space = built_space("resnet20")
    ids, stages = [g.id for g in space.groups], [g.stage for g in space.groups]
    spec = SearchSpaceSpec(ids, stages, prior_log(np.ones(len(ids))))
    proxy = _Quality([0.9, 0.2, 0.9, 0.85])
    objective = PlanObjective(space, spec, Budget(0.5, None), proxy, r_min=0.1, artifact_store=None)
    study = optuna.create_study(direction="maximize", pruner=create_pruner("wilcoxon"))
    study.optimize(objective, n_trials=4)
    good, bad, *others = study.trials
    assert good.state == optuna.trial.TrialState.COMPLETE and len(good.intermediate_values) == 12
    assert bad.state == optuna.trial.TrialState.PRUNED
    assert len(bad.intermediate_values) <= 5  # stopped after a third of the images at most
    for trial in others:
        assert trial.state == optuna.trial.TrialState.COMPLETE, trial.intermediate_values
        assert len(trial.intermediate_values) == 12
