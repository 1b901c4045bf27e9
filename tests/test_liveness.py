"""Dead workers' trials: SIGKILLed processes on the journal (pid check) and on PostgreSQL (heartbeat)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import optuna
import pytest
from optuna.trial import TrialState

from autoprune.search.liveness import (
    OWNER_KEY,
    fail_dead_trials,
    is_alive,
    process_start_time,
    record_owner,
    retried_from,
    this_process,
    trial_owner,
)
from autoprune.search.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)

# A worker: joins the study, claims one trial, says its number on stdout, then hangs until killed.
WORKER = """
import os, sys, time
from pathlib import Path
import optuna
from autoprune.search.liveness import record_owner
from autoprune.search.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
opened = open_storage(Path(sys.argv[1]), os.environ.get("TEST_STORAGE_URL") or None)
study = optuna.load_study(study_name=sys.argv[2], storage=opened.storage)

def objective(trial):
    record_owner(trial)
    trial.suggest_float("x", 0.0, 1.0)
    print(trial.number, flush=True)
    time.sleep(600)

study.optimize(objective, n_trials=1)
"""


def _objective(trial: optuna.Trial) -> float:
    record_owner(trial)
    return trial.suggest_float("x", 0.0, 1.0)


def kill_a_worker(
    run_dir, study_name: str, url: str | None = None, heartbeat: tuple[int, int] | None = None
) -> int:
    """Start WORKER, wait until it runs a trial, SIGKILL it; returns the trial's number."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TEST_STORAGE_URL": url or ""}
    if heartbeat:
        env.update(AUTOPRUNE_HEARTBEAT_S=str(heartbeat[0]), AUTOPRUNE_GRACE_S=str(heartbeat[1]))
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(run_dir), study_name], stdout=subprocess.PIPE, text=True, env=env
    )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=120)
    try:
        assert line and line[0].strip().isdigit(), f"worker did not start a trial (exit {proc.poll()})"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    return int(line[0])


def _states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in study.get_trials(deepcopy=False)]


def test_killed_journal_worker_is_failed_and_its_plan_retried_once(tmp_path):
    opened = open_storage(tmp_path)
    study = optuna.create_study(study_name="s", storage=opened.storage)
    number = kill_a_worker(tmp_path, "s")
    assert _states(study) == [TrialState.RUNNING]  # what the journal alone would keep forever
    dead = study.trials[number]
    assert trial_owner(dead) is not None and trial_owner(dead).pid != os.getpid()

    assert fail_dead_trials(study) == [number]
    assert fail_dead_trials(study) == []  # a second look (or a second worker) queues nothing more
    other_worker = optuna.load_study(study_name="s", storage=open_storage(tmp_path).storage)
    assert fail_dead_trials(other_worker) == []
    assert _states(study) == [TrialState.FAIL, TrialState.WAITING]
    retry = study.trials[1]
    assert retried_from(retry) == number and retry.params == dead.params
    assert OWNER_KEY not in retry.system_attrs  # the dead owner's record is not carried over

    study.optimize(_objective, n_trials=1)
    done = study.trials[1]
    assert done.state == TrialState.COMPLETE and done.value == dead.params["x"]
    assert trial_owner(done).pid == os.getpid()


def test_a_dead_retry_is_not_retried_again(tmp_path):
    study = optuna.create_study(study_name="s", storage=open_storage(tmp_path).storage)
    first = study.ask()
    first.suggest_float("x", 0.0, 1.0)
    _claim_for_a_dead_process(study, first)
    assert fail_dead_trials(study) == [first.number]
    retry = study.ask()  # takes the queued retry; its process dies too
    assert retried_from(study.trials[retry.number]) == first.number
    _claim_for_a_dead_process(study, retry)
    assert fail_dead_trials(study) == [retry.number]
    assert _states(study) == [TrialState.FAIL, TrialState.FAIL]


def _claim_for_a_dead_process(study: optuna.Study, trial: optuna.Trial) -> None:
    """Record as the trial's owner a pid that is live now but was another process's (a recycled pid)."""
    me = this_process()
    ghost = replace(me, pid=os.getppid(), started=process_start_time(os.getppid()) - 1)
    assert not is_alive(ghost) and is_alive(me)
    study._storage.set_trial_system_attr(trial._trial_id, OWNER_KEY, ghost.as_attr(trial.number))


def test_live_foreign_and_unclaimed_trials_are_left_alone(tmp_path):
    study = optuna.create_study(study_name="s", storage=open_storage(tmp_path).storage)
    mine = study.ask()
    record_owner(mine)  # this process: alive
    study.ask()  # RUNNING with no owner yet (between ask and record_owner): unknown, left alone
    elsewhere = study.ask()
    me = this_process()
    study._storage.set_trial_system_attr(
        elsewhere._trial_id, OWNER_KEY, replace(me, host="other-host", pid=1).as_attr(elsewhere.number)
    )
    assert fail_dead_trials(study) == []
    assert _states(study) == [TrialState.RUNNING] * 3


def test_process_start_time_ignores_zombies():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    started = process_start_time(proc.pid)
    deadline = time.monotonic() + 30
    while process_start_time(proc.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # exited but not yet reaped: a zombie counts as gone
    assert started is not None and process_start_time(proc.pid) is None
    proc.wait()


def test_killed_postgres_worker_is_failed_by_heartbeat_and_retried_once(tmp_path, postgres_url):
    heartbeat = (1, 3)
    opened = open_storage(tmp_path, postgres_url, heartbeat_s=heartbeat[0], grace_s=heartbeat[1])
    study = optuna.create_study(study_name=f"hb-{tmp_path.name}", storage=opened.storage)

    def fail_after_grace() -> list[int]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            failed = fail_dead_trials(study)
            if failed:
                return failed
            time.sleep(0.5)
        return []

    first = kill_a_worker(tmp_path, study.study_name, postgres_url, heartbeat)
    started = time.monotonic()
    assert fail_after_grace() == [first]
    assert time.monotonic() - started > heartbeat[1] - heartbeat[0] - 1  # not before the grace period
    assert fail_dead_trials(study) == []
    assert _states(study) == [TrialState.FAIL, TrialState.WAITING]
    assert retried_from(study.trials[1]) == first
    assert study.trials[1].params == study.trials[first].params

    with pytest.warns(UserWarning, match="Heartbeat"):  # ask(), not optimize(): no heartbeat thread
        retry = study.ask()  # takes the queued retry, beats once, then goes silent like a killed worker
    assert retry.number == 1 and retry.params == study.trials[first].params
    opened.storage.record_heartbeat(retry._trial_id)
    assert fail_after_grace() == [retry.number]
    assert _states(study) == [TrialState.FAIL, TrialState.FAIL]  # retried once, not again

    study.optimize(_objective, n_trials=1)  # a live worker's trial is untouched by the stale check
    assert fail_dead_trials(study) == []
    assert _states(study)[-1] == TrialState.COMPLETE


@pytest.mark.parametrize("seconds", ["0", "x"])
def test_bad_heartbeat_settings_are_user_errors(tmp_path, monkeypatch, seconds):
    from autoprune import AutopruneError

    monkeypatch.setenv("AUTOPRUNE_HEARTBEAT_S", seconds)
    with pytest.raises(AutopruneError, match="AUTOPRUNE_HEARTBEAT_S|heartbeat interval"):
        open_storage(tmp_path, f"sqlite:///{tmp_path / 'db.sqlite'}")
