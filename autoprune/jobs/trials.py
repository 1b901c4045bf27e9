"""Running a study's trials: the objective, the study's cap on trials, the optimize loop.

:func:`optimize` runs trials on a resolved model source until the study's cap (or this
process's own limit, the timeout, a stop), refreshing the run folder's outputs after each;
the first process, a resume and workers all run trials through it. :class:`SearchResult`
is what it returns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from autoprune.budget import Budget
from autoprune.device import resolve_device
from autoprune.evaluation import evaluate
from autoprune.jobs.source import ModelSource
from autoprune.jobs.study import named_files, spec, stored_cap, study_table
from autoprune.jobs.supernet import search_supernet_options
from autoprune.latency import LatencyModel
from autoprune.progress import Reporter
from autoprune.search.cap import SurplusTrial, TrialCap, finished_count, is_surplus
from autoprune.search.liveness import fail_dead_trials
from autoprune.search.objective import PlanObjective
from autoprune.search.outputs import StudyPointer, SummaryPacer, refresh_outputs, within_budget
from autoprune.search.rerank import Rerank, rerank_trials, stored_scores
from autoprune.search.storage import StudyStorage


@dataclass(frozen=True)
class SearchResult:
    run_dir: Path
    study_name: str
    storage: str
    trials_done: int
    best: optuna.trial.FrozenTrial | None
    interrupted: bool
    study: optuna.Study | None = None
    rerank_accuracy: float | None = None
    """The best trial's fine-tuned top-1 when the study re-ranks its finalists (``--rerank``)."""


def _objective(
    stored: dict[str, Any],
    source: ModelSource,
    device_name: str,
    artifacts: optuna.artifacts.FileSystemArtifactStore,
    run_dir: Path,
    cap: TrialCap | None = None,
) -> PlanObjective:
    """The trial objective of a study on ``source`` (same for the first process and workers)."""
    device = resolve_device(device_name)
    source.model.to(device).eval()
    options = search_supernet_options(stored, run_dir) if stored["proxy"] == "supernet" else {}
    proxy = source.proxy(stored["proxy"], device, stored["criterion"], **options)
    table = study_table(stored, run_dir)
    return PlanObjective(
        source.space,
        spec(stored),
        Budget(**stored["budget"]),
        proxy,
        r_min=stored["r_min"],
        artifact_store=artifacts,
        multi_objective=stored["sampler"] == "nsga2",
        admit=None if cap is None else cap.admit,
        latency_model=None if table is None else LatencyModel(source.space, table),
    )


def _trial_cap(study: optuna.Study, stop: threading.Event | None, timeout: float | None) -> TrialCap:
    """The study's cap; a trial waiting for room gives up on Ctrl-C or past ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout

    def should_stop() -> bool:
        late = deadline is not None and time.monotonic() > deadline
        return late or (stop is not None and stop.is_set())

    return TrialCap(lambda: stored_cap(study), should_stop)


def optimize(
    study: optuna.Study,
    opened: StudyStorage,
    run_dir: Path,
    stored: dict[str, Any],
    source: ModelSource,
    limit: int | None,
    timeout: float | None,
    device: str,
    reporter: Reporter,
    stop: threading.Event | None,
    *,
    on_trials_start: Callable[[], None] | None = None,
) -> SearchResult:
    """Run trials until the study's cap (or ``limit`` trials of this process, the timeout, a stop)."""
    cap = _trial_cap(study, stop, timeout)
    objective = _objective(stored, source, device, opened.artifacts, run_dir, cap)
    space = source.space
    opened.artifacts_dir.mkdir(parents=True, exist_ok=True)
    fail_dead_trials(study)  # trials of workers killed before this process started
    pointer = StudyPointer(study.study_name, opened.shown_url)  # never the password
    documented = _documented(stored, source, run_dir)
    pacer = SummaryPacer()
    done = 0
    best_value: list[float] = []

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal done
        if not is_surplus(trial):
            done += 1
            fail_dead_trials(study)  # requeued before this process asks for its next trial
            best = refresh_outputs(run_dir, study, space, pointer, documented, pacer=pacer)
            if best is not None:
                best_value[:] = [best.values[0]]
            info = {"trial": trial.number, "state": trial.state.name.lower()}
            reporter.advance(1, **(info | ({"best": best_value[0]} if best_value else {})))
        stopping = stop is not None and stop.is_set()
        if (limit is not None and done >= limit) or cap.reached(study) or stopping:
            study.stop()

    if on_trials_start is not None:
        on_trials_start()
    interrupted = False
    try:
        if not cap.reached(study):
            reporter.start(f"trials ({study.study_name})", _expected(study, limit))
            study.optimize(objective, timeout=timeout, callbacks=[after_trial], catch=(SurplusTrial,))
        if not (stop is not None and stop.is_set()):
            _rerank(study, stored, source, device, reporter)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        reporter.finish()
        best = refresh_outputs(run_dir, study, space, pointer, documented, with_summary=True)
    interrupted = interrupted or (stop is not None and stop.is_set())
    rerank = Rerank.of(stored)
    reranked = stored_scores(study, rerank).get(best.number) if best is not None and rerank.top else None
    return SearchResult(run_dir, study.study_name, opened.shown_url, done, best, interrupted, study, reranked)


def _documented(stored: dict[str, Any], source: ModelSource, run_dir: Path) -> dict[str, Any]:
    """The config best_trial.json is written from: the checkpoint and latency table as found
    here (not as stored relative to the run folder), so `autoprune apply` works from anywhere."""
    documented = {**stored, "checkpoint": None if source.checkpoint is None else str(source.checkpoint)}
    if stored.get("latency_table"):
        documented["latency_table"] = str(named_files(stored, run_dir)["latency_table"])
    return documented


def _rerank(
    study: optuna.Study, stored: dict[str, Any], source: ModelSource, device: str, reporter: Reporter
) -> None:
    """Fine-tune and score the study's finalists that have no re-rank score yet (if it re-ranks)."""
    rerank = Rerank.of(stored)
    if not rerank.top:
        return
    target = resolve_device(device)
    rerank_trials(
        study,
        within_budget(study, stored["budget"].get("flops")),
        rerank,
        model=source.model,
        space=source.space,
        criterion=stored["criterion"],
        train=source.train,
        score=source.score_fn
        or (lambda model: evaluate(model, source.search.batches, device=target).accuracy),
        device=target,
        reporter=reporter,
    )


def _expected(study: optuna.Study, limit: int | None) -> int | None:
    """How many trials this process should see finish: the cap's remainder, at most ``limit``."""
    cap = stored_cap(study)
    left = None if cap is None else max(cap - finished_count(study), 0)
    return left if limit is None else (limit if left is None else min(limit, left))
