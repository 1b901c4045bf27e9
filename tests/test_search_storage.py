"""Study storage, samplers and the dashboard: things that need no model."""

from __future__ import annotations

import json
import threading
import urllib.request

import optuna
import pytest

from autoprune import AutopruneError
from autoprune.registry import SAMPLERS, TRIAL_PRUNERS
from autoprune.search.dashboard import dashboard_server
from autoprune.search.samplers import create_pruner, create_sampler
from autoprune.search.storage import open_storage


def test_default_storage_is_a_journal_in_the_run_folder(tmp_path):
    opened = open_storage(tmp_path / "run")
    optuna.create_study(study_name="s", storage=opened.storage).optimize(
        lambda t: t.suggest_float("x", 0, 1), 2
    )
    assert (tmp_path / "run" / "study.journal").is_file()
    again = open_storage(tmp_path / "run")
    assert len(optuna.load_study(study_name="s", storage=again.storage).trials) == 2


def test_sqlite_url(tmp_path):
    opened = open_storage(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
    optuna.create_study(study_name="s", storage=opened.storage)
    assert (tmp_path / "db.sqlite").is_file()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://autoprune:secret@127.0.0.1:1/none", "cannot open storage|database driver"),
        ("sqlite:////nonexistent-dir/x/db.sqlite", "cannot open storage"),
        ("ftp://host/x", "unsupported storage URL"),
    ],
)
def test_unusable_storage_urls_are_one_line_errors(tmp_path, url, message):
    with pytest.raises(AutopruneError, match=message) as info:
        open_storage(tmp_path, url)
    assert "secret" not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", SAMPLERS.names)
def test_every_sampler_runs(name):
    directions = ["maximize", "minimize"] if name == "nsga2" else ["maximize"]
    study = optuna.create_study(directions=directions, sampler=create_sampler(name, seed=0))

    def objective(trial):
        x = trial.suggest_float("x", -1, 1)
        y = trial.suggest_float("y", -1, 1)
        return (x + y, x * x) if name == "nsga2" else -(x * x + y * y)

    study.optimize(objective, n_trials=4)
    assert len(study.trials) == 4


@pytest.mark.parametrize("name", TRIAL_PRUNERS.names)
def test_every_pruner_builds(name):
    assert isinstance(create_pruner(name), optuna.pruners.BasePruner)


def test_dashboard_serves_the_study_on_loopback(tmp_path):
    opened = open_storage(tmp_path)
    optuna.create_study(study_name="demo-study", storage=opened.storage).optimize(
        lambda t: t.suggest_float("x", 0, 1), 1
    )
    server, url = dashboard_server(tmp_path, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        api = url.replace("/dashboard/", "/api/studies")
        with urllib.request.urlopen(api, timeout=10) as reply:
            studies = json.load(reply)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["demo-study"]
    finally:
        server.shutdown()
        server.server_close()


def test_dashboard_without_a_study_is_a_user_error(tmp_path):
    with pytest.raises(AutopruneError, match="no study"):
        dashboard_server(tmp_path, port=0)
