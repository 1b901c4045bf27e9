"""Study storage, samplers and the dashboard: things that need no model."""

from __future__ import annotations

import json
import threading
import urllib.request
from urllib.parse import quote

import optuna
import pytest

from autoprune import AutopruneError
from autoprune.registry import SAMPLERS, TRIAL_PRUNERS
from autoprune.search.dashboard import dashboard_server
from autoprune.search.samplers import create_pruner, create_sampler
from autoprune.search.storage import (
    POOL_MAX_OVERFLOW,
    POOL_SIZE,
    heartbeat_settings,
    open_storage,
    redact,
    sqlalchemy_url,
)


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


def test_missing_postgres_driver_names_the_extra(tmp_path):
    with pytest.raises(AutopruneError, match=r"psycopg2.*pip install 'autoprune\[postgres\]'") as info:
        open_storage(tmp_path, "postgresql+psycopg2://autoprune:secret@127.0.0.1:1/none")
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://alice:secret@db.example:5432/runs", "postgresql://alice:***@db.example:5432/runs"),
        ("postgresql+psycopg://alice:s%40cr%3At@h/db", "postgresql+psycopg://alice:***@h/db"),
        ("postgresql://alice:se@cr/et@h/db?sslmode=require", "postgresql://alice:***@h/db?sslmode=require"),
        ("redis://:secret@h:6379/0", "redis://:***@h:6379/0"),
        (
            "postgresql://h/db?user=a&password=secret&sslmode=x",
            "postgresql://h/db?user=a&password=***&sslmode=x",
        ),
        ("postgresql://h/db?PASSWORD=secret", "postgresql://h/db?PASSWORD=***"),
        ("postgresql://h/db?sslpassword=secret;user=a", "postgresql://h/db?sslpassword=***;user=a"),
        ("host=h user=alice password=secret dbname=db", "host=h user=alice password=*** dbname=db"),
        ("host=h password='sec ret' dbname=db", "host=h password=*** dbname=db"),
        ("postgresql://alice@h/db", "postgresql://alice@h/db"),
        ("sqlite:////tmp/runs/db.sqlite", "sqlite:////tmp/runs/db.sqlite"),
        ("journal:/tmp/run/study.journal", "journal:/tmp/run/study.journal"),
    ],
)
def test_redact_hides_every_password_form(url, shown):
    assert redact(url) == shown
    assert "secret" not in redact(url) and "sec ret" not in redact(url)


def test_redact_hides_a_percent_encoded_password_in_both_forms():
    password = "p@ss:w/rd?&%"
    url = f"postgresql://alice:{quote(password, safe='')}@h:5432/db?password={quote(password, safe='')}"
    shown = redact(url)
    assert quote(password, safe="") not in shown and "p@ss" not in shown
    assert shown == "postgresql://alice:***@h:5432/db?password=***"


def test_postgres_urls_use_psycopg3():
    assert sqlalchemy_url("postgresql://a:b@h/db") == "postgresql+psycopg://a:b@h/db"
    assert sqlalchemy_url("postgres://a:b@h/db") == "postgresql+psycopg://a:b@h/db"
    assert sqlalchemy_url("postgresql+psycopg2://a@h/db") == "postgresql+psycopg2://a@h/db"
    assert sqlalchemy_url("sqlite:///x.db") == "sqlite:///x.db"


def test_heartbeat_settings_from_arguments_environment_and_defaults(monkeypatch):
    monkeypatch.delenv("AUTOPRUNE_HEARTBEAT_S", raising=False)
    monkeypatch.delenv("AUTOPRUNE_GRACE_S", raising=False)
    assert heartbeat_settings() == (60, 180)
    monkeypatch.setenv("AUTOPRUNE_HEARTBEAT_S", "2")
    monkeypatch.setenv("AUTOPRUNE_GRACE_S", "5")
    assert heartbeat_settings() == (2, 5)
    assert heartbeat_settings(1, 3) == (1, 3)
    with pytest.raises(AutopruneError, match="longer than the heartbeat"):
        heartbeat_settings(5, 5)


def test_postgres_storage_is_shared_between_handles(tmp_path, postgres_url):
    url = postgres_url.replace("postgresql+psycopg://", "postgresql://")  # what users type
    opened = open_storage(tmp_path, url, heartbeat_s=1, grace_s=3)
    assert opened.storage.engine.url.drivername == "postgresql+psycopg"
    pool = opened.storage.engine.pool
    assert pool.size() == POOL_SIZE and pool._max_overflow == POOL_MAX_OVERFLOW and pool._pre_ping
    assert opened.storage.heartbeat_interval == 1 and opened.storage.grace_period == 3
    name = f"pg-{tmp_path.name}"
    optuna.create_study(study_name=name, storage=opened.storage).optimize(
        lambda t: t.suggest_float("x", 0, 1), 3
    )
    other = open_storage(tmp_path / "elsewhere", postgres_url)
    assert len(optuna.load_study(study_name=name, storage=other.storage).trials) == 3
    assert opened.shown_url.count("***") == 1 and "S3cret" not in opened.shown_url


def test_postgres_wrong_password_is_a_one_line_error_without_it(tmp_path, postgres_server):
    wrong = postgres_server.url.replace(quote(postgres_server.password, safe=""), "wrong-secret-123")
    with pytest.raises(AutopruneError, match="cannot open storage") as info:
        open_storage(tmp_path, wrong)
    message = str(info.value)
    assert "wrong-secret-123" not in message and "\n" not in message
    assert "password authentication failed" in message


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
