"""The study's trial cap: ``--trials N`` is the number of finished trials the whole study gets.

Finished = COMPLETE + PRUNED; a FAIL does not count (its retry does). The cap is stored in the
study's config, so a resumed search runs only the missing trials and every worker stops at it.
Several processes share the study, so "stop when N are finished" alone would overshoot: each
would start a trial while N − 1 are finished. Each trial therefore asks :meth:`TrialCap.admit`
first (right after recording its owner), which decides from the study's trials:

* finished ≥ cap: the trial is *surplus*;
* finished + the *pending* trials placed lower < cap: the trial is evaluated. Pending: WAITING,
  or RUNNING — also under a dead owner, whose trial is failed soon (at once on the journal by
  :func:`~autoprune.search.liveness.fail_dead_trials`, after the heartbeat grace on a database)
  and whose retry then takes its place; a trial whose owner was never recorded counts only for
  :data:`UNOWNED_GRACE_S`;
* otherwise a lower trial may still fill the cap: if one of them is WAITING (queued but not
  taken), this trial is surplus, so its process goes and takes that one (Optuna takes WAITING
  trials first); else it waits (polling every :data:`POLL_S`) until the lower trials end.

"Lower" is by *place*: a trial's number, or for the retry of a failed trial the failed trial's
number (the retry takes over the slot the failed trial held, so a retry queued late is not
crowded out by trials started after the failure). A trial only counts lower-placed ones, so the
lowest pending trial never waits, and any two concurrent evaluated trials were counted by the
higher one: the study ends with exactly ``cap`` finished trials. A surplus trial ends as FAIL
with the user attr ``surplus`` (never evaluated, left out of the outputs, never retried);
:class:`SurplusTrial` is the exception that ends it.
"""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoprune.search.liveness import fail_dead_trials, retried_from, trial_owner
from autoprune.search.outputs import SURPLUS_ATTR, is_surplus

__all__ = ["SURPLUS_ATTR", "SurplusTrial", "TrialCap", "finished_count", "is_surplus"]

POLL_S = 0.25
UNOWNED_GRACE_S = 60.0
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class SurplusTrial(Exception):
    """Ends a trial the cap leaves no room for (state FAIL, user attr ``surplus``)."""


class _QuietSurplus(logging.Filter):
    """Optuna logs every FAIL as a warning with a traceback; a surplus trial is no failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SurplusTrial" not in record.getMessage()


logging.getLogger("optuna.study._optimize").addFilter(_QuietSurplus())


def finished_count(study: optuna.Study) -> int:
    """COMPLETE + PRUNED trials of ``study``."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _place(trial: FrozenTrial) -> int:
    """Where ``trial`` stands in line: its number, or the failed trial's number for a retry."""
    origin = retried_from(trial)
    return trial.number if origin is None else min(trial.number, origin)


def _pending_below(trials: list[FrozenTrial], place: int, now: _dt.datetime) -> tuple[int, bool]:
    """(pending trials placed before ``place``, whether one of them is WAITING)."""
    count, waiting = 0, False
    for t in trials:
        if _place(t) >= place:
            continue
        if t.state == TrialState.WAITING:
            count, waiting = count + 1, True
        elif t.state == TrialState.RUNNING:  # a dead owner's trial is failed soon, its retry takes its place
            started = t.datetime_start
            if started is not None and trial_owner(t) is None:
                age = (now - started).total_seconds()
                if age > UNOWNED_GRACE_S:  # killed between asking and recording its owner
                    continue
            count += 1
    return count, waiting


class TrialCap:
    """Admission of trials under the study-wide cap (module docstring).

    ``cap``: a callable giving the current cap (re-read from the study: a resumed search may
    have changed it), None for no cap. ``should_stop()``: give up waiting (Ctrl-C, timeout).
    """

    def __init__(
        self,
        cap: Callable[[], int | None],
        should_stop: Callable[[], bool] = lambda: False,
        poll_s: float = POLL_S,
    ) -> None:
        self.cap = cap
        self.should_stop = should_stop
        self.poll_s = poll_s

    def reached(self, study: optuna.Study) -> bool:
        cap = self.cap()
        return cap is not None and finished_count(study) >= cap

    def admit(self, trial: optuna.Trial) -> None:
        """Return when ``trial`` may be evaluated; raise :class:`SurplusTrial` (after marking it)
        when the cap leaves no room for it."""
        study = trial.study
        while True:
            cap = self.cap()
            if cap is None:
                return
            trials = study.get_trials(deepcopy=False)
            finished = sum(t.state in FINISHED for t in trials)
            if finished >= cap:
                self._surplus(trial, f"the study has its {cap} trials")
            own = next(t for t in trials if t.number == trial.number)
            pending, waiting = _pending_below(trials, _place(own), _dt.datetime.now())
            if finished + pending < cap:
                return
            if waiting:
                self._surplus(trial, "a queued trial comes first")
            if self.should_stop():
                self._surplus(trial, "stopped while waiting for the cap")
            time.sleep(self.poll_s)
            fail_dead_trials(study)  # a dead owner's trial would hold the wait forever

    @staticmethod
    def _surplus(trial: optuna.Trial, why: str) -> None:
        trial.set_user_attr(SURPLUS_ATTR, True)
        raise SurplusTrial(f"trial {trial.number} not evaluated: {why}")
