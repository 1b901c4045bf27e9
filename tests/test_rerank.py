"""Re-ranking the search's finalists by a short fine-tune (autoprune.search.rerank)."""

from __future__ import annotations

import copy
import csv
import json
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
import torch
from torch import nn

from autoprune.checkpoint import load_model
from autoprune.data import EvalBatches, load_dataset, make_loader
from autoprune.errors import AutopruneError
from autoprune.evaluation import evaluate
from autoprune.jobs import SearchConfig, run_search
from autoprune.search.rerank import RERANK_BATCH, Rerank, finalists, reranked_best, stored_scores
from autoprune.search_spaces import space_for
from autoprune.surgery import apply_plan
from autoprune.train import finetune_steps


def _trial(number: int, value: float, channels: dict[str, int]) -> SimpleNamespace:
    return SimpleNamespace(number=number, values=[value], user_attrs={"channels": channels})


def test_finalists_are_the_best_distinct_plans_by_proxy():
    trials = [
        _trial(0, 0.5, {"a": 8}),
        _trial(1, 0.9, {"a": 16}),
        _trial(2, 0.9, {"a": 16}),  # the same plan again: not a second finalist
        _trial(3, 0.7, {"a": 24}),
    ]
    assert [t.number for t in finalists(trials, 2)] == [1, 3]
    assert [t.number for t in finalists(trials, 10)] == [1, 3, 0]


def test_the_reranked_best_needs_every_finalist_scored():
    trials = [_trial(0, 0.9, {"a": 8}), _trial(1, 0.8, {"a": 16}), _trial(2, 0.1, {"a": 24})]
    assert reranked_best(trials, {0: 0.5}, 2) is None  # finalist 1 not scored yet
    assert reranked_best(trials, {0: 0.5, 1: 0.6}, 2).number == 1  # the fine-tune overrules the proxy
    assert reranked_best(trials, {0: 0.5, 1: 0.6, 2: 0.99}, 2).number == 1  # 2 is no finalist


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"top": -1}, "--rerank"), ({"top": 101}, "--rerank"), ({"top": 2, "steps": 0}, "--rerank-steps")],
)
def test_bad_rerank_settings_are_refused(kwargs, message):
    with pytest.raises(AutopruneError, match=message):
        Rerank(**kwargs)


def test_finetune_steps_cycles_short_data_and_refuses_unlabelled_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    batches = [(torch.randn(2, 4), torch.tensor([0, 1])) for _ in range(3)]
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(m.training))
    finetune_steps(model, batches, 7)
    assert calls == [True] * 7 and not model.training
    with pytest.raises(AutopruneError, match="labels"):
        finetune_steps(model, [torch.randn(2, 4)], 1)
    with pytest.raises(AutopruneError, match="no training batches"):
        finetune_steps(model, [], 1)


def _config(tmp_path, checkpoint, **overrides) -> SearchConfig:
    base = dict(
        arch="resnet20", dataset="digits", flops=0.5, checkpoint=str(checkpoint), prior="uniform",
        trials=4, seed=0, out=str(tmp_path / "run"), study="r", device="cpu", recal_batches=2,
        batch_size=64, search_images=128, pruner="none", rerank=2, rerank_steps=3,
    )  # fmt: skip
    return SearchConfig(**(base | overrides))


def test_a_reranked_search_names_the_finalist_with_the_best_fine_tuned_top1(
    tmp_path, digits_checkpoint, one_thread
):
    result = run_search(_config(tmp_path, digits_checkpoint))
    study = result.study
    rerank = Rerank(2, 3)
    scores = stored_scores(study, rerank)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    chosen = finalists(completed, 2)
    assert sorted(scores) == sorted(t.number for t in chosen)
    document = json.loads((tmp_path / "run" / "best_trial.json").read_text())
    best = max(chosen, key=lambda t: scores[t.number])
    assert result.best.number == best.number and result.rerank_accuracy == scores[best.number]
    assert document["study"]["trial"] == best.number
    assert document["score"]["rerank"] == {"accuracy": scores[best.number], "steps": 3, "top": 2}
    with open(tmp_path / "run" / "trials.csv", newline="") as f:
        rows = {int(r["trial"]): r for r in csv.DictReader(f)}
    assert {n: float(rows[n]["rerank_accuracy"]) for n in scores} == scores
    assert all(r["rerank_accuracy"] == "" for n, r in rows.items() if n not in scores)

    # the stored score is reproduced by pruning, fine-tuning and scoring the plan by hand
    model, _ = load_model(digits_checkpoint)
    space = space_for(model, "resnet20", 32, 10)
    plan = space.plan_from_channels(np.array([best.user_attrs["channels"][g.id] for g in space.groups]))
    pruned = apply_plan(copy.deepcopy(model), plan, "l1", space=space).model
    splits = load_dataset("digits", None, input_size=32, seed=0)
    finetune_steps(pruned, make_loader(splits.train, RERANK_BATCH, shuffle=True, seed=0, drop_last=True), 3)
    search = EvalBatches.from_dataset(splits.search, 64, 128)
    assert evaluate(pruned, search.batches).accuracy == scores[best.number]

    # a resume with more trials keeps the scores it has and re-ranks the new finalists only
    again = run_search(_config(tmp_path, digits_checkpoint, trials=6))
    kept = stored_scores(again.study, rerank)
    assert all(kept[n] == s for n, s in scores.items())
    final = finalists([t for t in again.study.trials if t.state == optuna.trial.TrialState.COMPLETE], 2)
    assert {t.number for t in final} <= set(kept)


def test_the_cli_re_ranks_and_refuses_a_bad_count(run_cli, tmp_path, digits_checkpoint, one_thread):
    base = ["search", "--arch", "resnet20", "--dataset", "digits", "--checkpoint", digits_checkpoint,
            "--flops", "0.5", "--prior", "uniform", "--trials", "2", "--pruner", "none", "--device", "cpu",
            "--recal-batches", "1", "--batch-size", "32", "--search-images", "64",
            "--out", tmp_path / "run"]  # fmt: skip
    bad = run_cli(*base, "--rerank", "101")
    assert bad.code == 2 and bad.err.strip().startswith("error:") and "--rerank" in bad.err
    assert len(bad.err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    done = run_cli(*base, "--rerank", "1", "--rerank-steps", "2")
    assert done.code == 0, done.err
    assert "chosen by the re-rank: top-1" in done.out
    document = json.loads((tmp_path / "run" / "best_trial.json").read_text())
    assert document["score"]["rerank"]["steps"] == 2 and document["score"]["rerank"]["top"] == 1
