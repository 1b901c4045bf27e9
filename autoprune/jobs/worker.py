"""A worker: join an existing search study from another process or machine and run its trials.

Everything a worker needs is in the study's stored config (:mod:`~autoprune.jobs.study`); it
rebuilds the model like the first process (:func:`~autoprune.jobs.search.cli_source`, the
study's files hash-checked before its first trial) and runs trials with
:func:`~autoprune.jobs.trials.optimize` until the study's cap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from autoprune.device import resolve_device
from autoprune.errors import AutopruneError
from autoprune.jobs.search import cli_source
from autoprune.jobs.source import PYTHON_SOURCE
from autoprune.jobs.study import check_trials, progress, stored_config
from autoprune.jobs.trials import SearchResult, optimize
from autoprune.progress import SILENT, Reporter
from autoprune.search.samplers import create_pruner, create_sampler
from autoprune.search.storage import JOURNAL_NAME, StudyStorage, open_storage


def run_worker(
    run_dir: Path,
    *,
    storage: str | None = None,
    study: str | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    device: str = "auto",
    seed: int | None = None,
    reporter: Reporter = SILENT,
    stop: threading.Event | None = None,
    trust_code: bool = False,
    on_trials_start: Callable[[], None] | None = None,
) -> SearchResult:
    """Join an existing study (its config comes from the study) and run trials for it until the
    study has its stored number of trials (the cap ``autoprune search --trials`` set); ``trials``
    stops this process after that many of its own, earlier.

    ``storage`` is the real URL (the run folder's files only hold it redacted). A study whose
    arch is a ``module:callable`` builder needs ``trust_code=True`` from this caller: the
    stored config never grants it.
    """
    if trials is not None:
        check_trials(trials)
    resolve_device(device)
    if storage is None and not (Path(run_dir) / JOURNAL_NAME).is_file():
        raise AutopruneError(
            f"no study in {str(run_dir)!r}: expected {JOURNAL_NAME} there "
            "(a mistyped folder? or pass --storage URL)"
        )
    opened = open_storage(run_dir, storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(opened.storage, include_best_trial=False)]
    if study is None:
        if len(names) != 1:
            raise AutopruneError(
                f"{len(names)} studies in {opened.shown_url}; name one with --study ({', '.join(names)})"
            )
        study = names[0]
    stored = _worker_config(opened, study)
    loaded = optuna.load_study(
        study_name=study,
        storage=opened.storage,
        sampler=create_sampler(stored["sampler"], seed),
        pruner=create_pruner(stored["pruner"]),
    )
    source = cli_source(stored, Path(run_dir), device, trust_code)  # files checked before any word
    trials = _worker_limit(loaded, stored, trials, reporter)
    return optimize(
        loaded,
        opened,
        run_dir,
        stored,
        source,
        trials,
        timeout,
        device,
        reporter,
        stop,
        on_trials_start=on_trials_start,
    )


def _worker_limit(
    study: optuna.Study, stored: dict[str, Any], trials: int | None, reporter: Reporter
) -> int | None:
    """A worker's own limit: ``trials`` under the study's cap; a study from before the cap was
    stored has none, and then ``trials`` (default 100) counts this process's trials alone."""
    if stored.get("trials") is None:
        return trials or 100
    reporter.note(f"joining study {study.study_name!r}: {progress(study, stored['trials'])}")
    return trials


def _worker_config(opened: StudyStorage, study: str) -> dict[str, Any]:
    """The stored config of the study a worker joins: one error line when there is none, or when
    the study was made from Python (its in-memory model cannot be rebuilt here)."""
    stored = stored_config(opened, study)
    if stored is None:
        raise AutopruneError(
            f"no autoprune study {study!r} in {opened.shown_url}; start one with `autoprune search`"
        )
    if stored.get("source") == PYTHON_SOURCE:
        raise AutopruneError(
            f"study {study!r} was made by autoprune.search() on an in-memory model, which a worker "
            "cannot rebuild; run more trials from Python (the same out and study_name resume it)"
        )
    return stored
