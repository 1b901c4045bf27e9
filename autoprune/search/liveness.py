"""Fail and retry the trials of workers that died without a word (SIGKILL, OOM killer, power).

RDB storages (PostgreSQL, SQLite, MySQL) have Optuna's heartbeat: a running trial records one
every few seconds, and a trial silent for the grace period is failed and queued again by
``RetryHeartbeatStaleTrialCallback`` (see :mod:`autoprune.search.storage`). Journal storages
(the default file, Redis) have none, so a killed worker's trial would stay RUNNING forever.
For them each trial records who runs it, and a live process on the same host checks:

* :func:`record_owner` -- call first thing in the objective: stores host, boot id, pid
  namespace, pid and the process start time (``/proc/<pid>/stat``, so a recycled pid is not
  taken for the dead worker) as the trial system attr :data:`OWNER_KEY`;
* :func:`fail_dead_trials` -- for every RUNNING trial whose owner ran on this host and is
  gone, mark it FAIL and queue its parameters again, linked to it by the system attrs
  ``failed_trial``/``retry_history`` (Optuna's own retry markers, so both storage kinds read
  alike). Only the caller whose FAIL lands queues the retry, so a plan is retried once even
  when several workers check at the same time; a retry that dies too is not retried again
  (:data:`~autoprune.search.storage.MAX_RETRY`). On heartbeat storages it runs Optuna's stale
  check instead and returns what that failed.

Owners on other hosts cannot be checked from here: their trials are left alone.
"""

from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from autoprune.search.storage import MAX_RETRY

OWNER_KEY = "autoprune:owner"
FAILED_TRIAL_KEY = "failed_trial"  # the names RetryHeartbeatStaleTrialCallback uses
RETRY_HISTORY_KEY = "retry_history"


@dataclass(frozen=True)
class Owner:
    """Which process runs a trial; ``started`` is in clock ticks since boot (None off Linux)."""

    host: str
    boot: str
    pidns: str
    pid: int
    started: int | None

    def as_attr(self, trial_number: int) -> dict[str, Any]:
        return {
            "host": self.host,
            "boot": self.boot,
            "pidns": self.pidns,
            "pid": self.pid,
            "started": self.started,
            "trial": trial_number,
        }

    def same_machine(self, other: Owner) -> bool:
        """Whether ``other``'s pid can be looked up here (same host, boot and pid namespace)."""
        return (self.host, self.boot, self.pidns) == (other.host, other.boot, other.pidns)


def this_process() -> Owner:
    pid = os.getpid()
    return Owner(socket.gethostname(), _boot_id(), _pid_namespace(), pid, process_start_time(pid))


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, from ``/proc``; None if unknown or gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 2 (the command name) is in parentheses and may hold spaces or ')': split after the last.
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):  # a zombie or dead process has ended
        return None
    return int(fields[19])  # field 22 of the whole line


def is_alive(owner: Owner) -> bool:
    """Whether the process ``owner`` names still runs (same pid *and* same start time)."""
    if owner.started is not None:
        return process_start_time(owner.pid) == owner.started
    try:  # no /proc here: the pid alone, which a recycled pid can fool
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def record_owner(trial: optuna.Trial) -> None:
    """Mark ``trial`` as run by this process; call it before any other work in the objective."""
    trial.storage.set_trial_system_attr(trial._trial_id, OWNER_KEY, this_process().as_attr(trial.number))


def trial_owner(trial: FrozenTrial) -> Owner | None:
    """The recorded owner of ``trial``, or None (not recorded, or copied from a trial it retries)."""
    attr = trial.system_attrs.get(OWNER_KEY)
    if not isinstance(attr, dict) or attr.get("trial") != trial.number:
        return None
    try:
        started = attr.get("started")
        return Owner(
            str(attr["host"]),
            str(attr["boot"]),
            str(attr["pidns"]),
            int(attr["pid"]),
            None if started is None else int(started),
        )
    except (KeyError, TypeError, ValueError):
        return None


def owner_may_be_alive(trial: FrozenTrial) -> bool:
    """False only when ``trial``'s recorded owner ran on this machine and is gone (an owner on
    another host, or none recorded yet, may be alive)."""
    owner = trial_owner(trial)
    if owner is None:
        return True
    me = this_process()
    return not owner.same_machine(me) or owner.pid == me.pid or is_alive(owner)


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """FAIL the RUNNING trials whose worker died, queue each plan again once; returns their numbers.

    Journal storages: trials owned by a process on this host that is gone. Heartbeat storages:
    trials whose heartbeat is older than the grace period, retried by the storage's callback.
    Safe to call from several processes at once and as often as wanted.
    """
    storage = study._storage
    if is_heartbeat_enabled(storage):
        return _fail_stale(study, storage)
    me = this_process()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial_owner(trial)
        if owner is None or not owner.same_machine(me) or owner.pid == me.pid or is_alive(owner):
            continue
        if _fail(storage, trial._trial_id):
            failed.append(trial.number)
            retry_trial(study, storage.get_trial(trial._trial_id))
    return failed


def retry_trial(study: optuna.Study, failed: FrozenTrial, max_retry: int = MAX_RETRY) -> bool:
    """Queue ``failed``'s parameters as a WAITING trial linked to it; False past ``max_retry``.

    The same as Optuna's ``RetryHeartbeatStaleTrialCallback``, without the dead owner's record.
    """
    system_attrs: dict[str, Any] = {
        FAILED_TRIAL_KEY: failed.number,
        **{k: v for k, v in failed.system_attrs.items() if k != OWNER_KEY},
    }
    system_attrs[RETRY_HISTORY_KEY] = [*system_attrs.get(RETRY_HISTORY_KEY, []), failed.number]
    if len(system_attrs[RETRY_HISTORY_KEY]) > max_retry:
        return False
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=failed.params,
            distributions=failed.distributions,
            user_attrs=failed.user_attrs,
            system_attrs=system_attrs,
        )
    )
    return True


def retried_from(trial: FrozenTrial) -> int | None:
    """The number of the first failed trial that ``trial`` retries, or None if it is no retry."""
    return trial.system_attrs.get(FAILED_TRIAL_KEY)


def _fail(storage: BaseStorage, trial_id: int) -> bool:
    try:
        return storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except UpdateFinishedTrialError:  # another process failed (or the owner finished) it first
        return False


def _fail_stale(study: optuna.Study, storage: BaseStorage) -> list[int]:
    """Optuna's ``fail_stale_trials``, returning the trial numbers it failed."""
    assert isinstance(storage, BaseHeartbeat)
    callback = storage.get_heartbeat_stale_trial_callback()
    failed = []
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        if not _fail(storage, trial_id):
            continue
        trial = storage.get_trial(trial_id)
        failed.append(trial.number)
        if callback is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                callback(study, trial)
    return failed


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
