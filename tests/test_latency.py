"""Latency tables: JSON round trip, foreign tables refused, monotone interpolation, the
projection under a latency budget, and the CLI command."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from autoprune.budget import Budget, project_to_budget
from autoprune.errors import AutopruneError
from autoprune.latency import (
    LatencyModel,
    LatencyTable,
    detect_stair,
    with_table_rounding,
)
from autoprune.prior import uniform_preferences


@pytest.fixture(scope="module")
def resnet20(resnet20_latency):
    return resnet20_latency


def test_json_round_trip(resnet20, tmp_path):
    _, table, _ = resnet20
    path = table.save(tmp_path / "lut.json")
    again = LatencyTable.load(path)
    assert again.to_dict() == table.to_dict()
    assert table.threads == 1 and table.batch_size == 2 and table.device == "cpu"
    assert table.device_name and table.versions["torch"] == torch.__version__ and table.date
    assert len(table.layers) == 22 and table.dense_ms > 0  # 19 convs, 2 shortcut convs, fc


def test_foreign_table_refused(resnet20, tmp_path):
    _, table, _ = resnet20
    table.check_target("cpu")  # made here: accepted
    data = table.to_dict()
    data["device_name"] = "Some Other CPU"
    foreign = LatencyTable.from_dict(data)
    with pytest.raises(AutopruneError, match="measured on 'Some Other CPU'"):
        foreign.check_target("cpu")
    foreign.check_target("cpu", force=True)
    with pytest.raises(AutopruneError, match="onnxruntime"):
        table.check_target("cpu", runtime="onnxruntime")
    (tmp_path / "bad.json").write_text(json.dumps({"format": "nope"}))
    with pytest.raises(AutopruneError, match="not a latency table"):
        LatencyTable.load(tmp_path / "bad.json")


def test_interpolation_monotone(resnet20):
    _, table, space = resnet20
    for shape in table.shapes.values():
        assert np.all(np.diff(shape.ms, axis=0) >= 0) and np.all(np.diff(shape.ms, axis=1) >= 0)
        ins = np.arange(1, shape.ins[-1] + 1, dtype=np.float64)
        outs = np.arange(1, shape.outs[-1] + 1, dtype=np.float64)
        grid = shape.interpolate(ins[:, None] + 0 * outs[None, :], outs[None, :] + 0 * ins[:, None])
        assert np.all(np.diff(grid, axis=0) >= -1e-12) and np.all(np.diff(grid, axis=1) >= -1e-12)
    model = LatencyModel(space, table)
    assert model.dense_ms == pytest.approx(table.dense_ms)
    ratios = np.linspace(0.1, 1.0, 10)
    lat = model.latency_ms(space.channels_from_ratios(ratios[:, None] * np.ones(len(space.groups))))
    assert np.all(np.diff(lat) >= 0)


def test_detect_stair():
    widths = list(range(4, 68, 4))
    stairs = [1.0 + (w - 1) // 16 for w in widths]
    assert detect_stair(widths, stairs) == 16
    assert detect_stair(widths, [float(w) for w in widths]) == 1


def test_projection_meets_latency_budget(resnet20):
    _, table, space = resnet20
    space = with_table_rounding(space, table)
    model = LatencyModel(space, table)
    prefs = uniform_preferences(len(space.groups))
    smallest = model.ratio(space.channels_from_ratios(np.full(len(space.groups), 0.1)))[0]
    for target in (smallest + 0.3 * (1 - smallest), smallest + 0.7 * (1 - smallest)):
        proj = project_to_budget(space, prefs, latency=target, latency_model=model)
        assert proj.latency_ratio <= target + 1e-12
        assert proj.latency_ratio == pytest.approx(model.ratio(space.channels_vector(proj.plan))[0])
    both = project_to_budget(space, prefs, flops=0.5, latency=0.99, latency_model=model)
    assert both.flops_ratio <= 0.5 and both.latency_ratio <= 0.99
    with pytest.raises(AutopruneError, match="latency table"):
        project_to_budget(space, prefs, latency=0.5)
    with pytest.raises(AutopruneError, match="--latency"):
        Budget(latency=1.5)


def test_table_rounding_keeps_groups(resnet20):
    _, table, space = resnet20
    rounded = with_table_rounding(space, table)
    assert rounded.group_ids == space.group_ids
    assert all(g.channels >= 2 * g.round_to or g.round_to == 1 for g in rounded.groups)


def test_cli_latency_table(tmp_path):
    from click.testing import CliRunner

    from autoprune.cli import cli

    out = tmp_path / "lut.json"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "latency-table",
            "--arch",
            "resnet20",
            "--batch-size",
            "1",
            "--threads",
            "1",
            "--rounds",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert LatencyTable.load(out).arch == "resnet20"


def test_search_under_a_latency_budget_end_to_end(tmp_path, digits_checkpoint, run_cli):
    """`search --latency` (with --flops; latency 1: at batch 8 resnet20's remainder makes even
    the smallest plan 0.87-0.96 of dense on this loaded machine) builds and caches the table,
    every trial meets both budgets, best_trial.json and apply show the prediction, a foreign
    cached table is refused (rebuilt with --force), and a worker checks the table's sha256."""
    from optuna.trial import TrialState

    from autoprune.jobs import run_worker

    run = tmp_path / "run"
    base = ["search", "--arch", "resnet20", "--dataset", "digits", "--checkpoint", digits_checkpoint,
            "--prior", "uniform", "--pruner", "none", "--trials", "2", "--out", run, "--device", "cpu",
            "--recal-batches", "1", "--batch-size", "8", "--search-images", "16"]  # fmt: skip
    result = run_cli(*base, "--flops", "0.5", "--latency", "1", "--study", "lat")
    assert result.code == 0, result.err
    table = LatencyTable.load(run / "latency_table.json")
    assert table.batch_size == 8 and table.device == "cpu" and table.arch == "resnet20"
    study = optuna_study(run, "lat")
    stored = study.user_attrs["autoprune.config"]
    assert stored["latency_table"] == "latency_table.json" and len(stored["latency_table_sha256"]) == 64
    assert stored["budget"] == {"flops": 0.5, "params": None, "latency": 1}
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and all(
        t.user_attrs["latency_ratio"] <= 1 and t.user_attrs["flops_ratio"] <= 0.5 for t in done
    )
    with open(run / "trials.csv", newline="") as f:
        csv_ratios = {
            int(r["trial"]): float(r["latency_ratio"]) for r in csv.DictReader(f) if r["state"] == "complete"
        }
    assert csv_ratios == {t.number: t.user_attrs["latency_ratio"] for t in done}
    best = json.loads((run / "best_trial.json").read_text())
    assert 0 < best["cost"]["latency_ratio"] <= 1 and best["cost"]["latency_ms"] > 0
    assert table.fit is None  # the search's cached table is the per-layer one
    assert best["latency_table"]["sha256"] == stored["latency_table_sha256"]
    assert best["latency_table"]["path"].endswith("latency_table.json")
    assert "latency" in result.out and "predicted" in result.out

    applied = run_cli("apply", run / "best_trial.json", "--out", tmp_path / "pruned.pt")
    assert applied.code == 0, applied.err
    assert "predicted latency: by the search's latency table (cpu, " in applied.out
    assert f"{best['cost']['latency_ms']:.2f} ms" in applied.out

    data = table.to_dict()
    data["device_name"] = "Some Other CPU"
    (run / "latency_table.json").write_text(json.dumps(data))
    refused = run_cli(*base, "--latency", "1", "--study", "other")
    assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1, refused.err
    assert "another target" in refused.err and "--force" in refused.err
    assert "other" not in [s.study_name for s in optuna_summaries(run)]
    with pytest.raises(AutopruneError, match="latency table") as error:  # the table the study named changed
        run_worker(run, study="lat", trials=1, device="cpu")
    assert "\n" not in str(error.value)
    rebuilt = run_cli(*base, "--latency", "1", "--study", "other", "--force")
    assert rebuilt.code == 0, rebuilt.err
    assert "rebuilding the cached latency table" in rebuilt.out + rebuilt.err
    assert LatencyTable.load(run / "latency_table.json").device_name == table.device_name


def optuna_study(run, name):
    import optuna

    from autoprune.search.storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(run).storage)


def optuna_summaries(run):
    import optuna

    from autoprune.search.storage import open_storage

    return optuna.get_all_study_summaries(open_storage(run).storage, include_best_trial=False)
