"""The search job: dense model → space → prior → study → trials → outputs.

:func:`run_search` prepares a study (training the dense model and computing the
sensitivity prior if needed) and runs trials; :func:`run_search_on_source` does the same on
an in-memory model (the Python API). What the study stores and its checks are in
:mod:`~autoprune.jobs.study`, running trials under the study's cap in
:mod:`~autoprune.jobs.trials`, and a worker joining an existing study from another process
or machine in :mod:`~autoprune.jobs.worker` (it rebuilds the model with :func:`cli_source`).

Dead workers: each trial records its owner first thing; every process fails and
requeues the trials of dead owners (:func:`~autoprune.search.liveness.fail_dead_trials`)
when it starts and after each of its trials.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from autoprune.budget import Budget
from autoprune.checkpoint import file_sha256, load_model
from autoprune.data import EvalBatches, load_dataset, make_loader
from autoprune.device import resolve_device
from autoprune.errors import AutopruneError
from autoprune.jobs.checkpoint import DenseRecipe, ensure_checkpoint
from autoprune.jobs.latency import search_latency_table
from autoprune.jobs.paths import outermost_missing
from autoprune.jobs.source import ModelSource
from autoprune.jobs.study import (
    MAX_TRIALS,
    SearchConfig,
    check_resume,
    check_trials,
    checked_source,
    create_study,
    latency_config,
    named_files,
    sensitivity_preferences,
    set_cap,
    source_config,
    stored_config,
    stored_path,
    study_config,
    study_table,
)
from autoprune.jobs.supernet import prepare_search_supernet
from autoprune.jobs.trials import SearchResult, optimize
from autoprune.latency import LatencyTable, with_table_rounding
from autoprune.prior import uniform_preferences
from autoprune.progress import SILENT, Reporter
from autoprune.search.rerank import RERANK_BATCH
from autoprune.search.samplers import create_pruner, create_sampler
from autoprune.search.storage import JOURNAL_NAME, open_storage
from autoprune.search_spaces import space_for
from autoprune.space import PruningSpace

__all__ = [
    "MAX_TRIALS",
    "SearchConfig",
    "SearchResult",
    "check_trials",
    "cli_source",
    "run_search",
    "run_search_on_source",
]


def run_search(
    config: SearchConfig,
    reporter: Reporter = SILENT,
    stop: threading.Event | None = None,
    *,
    on_trials_start: Callable[[], None] | None = None,
) -> SearchResult:
    """Create or resume the study described by ``config`` and run ``config.trials`` trials.

    ``on_trials_start`` is called once setup (dense training, sensitivity prior) is done and the
    first trial is about to start: the CLI installs its finish-the-current-trial Ctrl-C handler
    there, so Ctrl-C during setup stops at once. ``SearchResult.storage`` is the redacted URL.
    """
    budget = config.validate()
    run_dir = config.run_dir()
    return _run_study(
        config,
        prepare=lambda: _prepare(config, budget, run_dir, reporter),
        resolve=lambda stored: cli_source(stored, run_dir, config.device, config.trust_code),
        reporter=reporter,
        stop=stop,
        on_trials_start=on_trials_start,
    )


def run_search_on_source(
    config: SearchConfig,
    source: ModelSource,
    prior: Callable[[], Any],
    reporter: Reporter = SILENT,
    stop: threading.Event | None = None,
) -> SearchResult:
    """:func:`run_search` on a resolved in-memory ``source`` (the Python API, :func:`autoprune.search`).

    The study and run folder are those of the CLI (journal, best_trial.json, trials.csv;
    the same ``config.study`` resumes it). ``prior()`` returns the sensitivity for the prior
    (a :class:`~autoprune.sensitivity.Sensitivity` of ``unit="group"``) or None (uniform); it
    is called only when the study is new. The study stores no checkpoint (``source: python``):
    workers and ``autoprune search`` refuse it, and a resume must pass the same model.
    """
    budget = config.validate()
    return _run_study(
        config,
        prepare=lambda: source_config(config, budget, source, prior()),
        resolve=lambda stored: checked_source(stored, source, config.study_name()),
        reporter=reporter,
        stop=stop,
        python=True,
    )


def _run_study(
    config: SearchConfig,
    *,
    prepare: Callable[[], dict[str, Any]],
    resolve: Callable[[dict[str, Any]], ModelSource],
    reporter: Reporter,
    stop: threading.Event | None,
    on_trials_start: Callable[[], None] | None = None,
    python: bool = False,
) -> SearchResult:
    """Create (``prepare()`` gives the stored config) or resume the study, then run its trials on
    the model ``resolve(stored)`` gives: what the CLI and the Python API share."""
    run_dir = config.run_dir()
    fresh_folder = outermost_missing(run_dir)
    fresh_journal = config.storage is None and not (run_dir / JOURNAL_NAME).exists()
    opened = open_storage(run_dir, config.storage)
    name = config.study_name()
    stored = stored_config(opened, name)
    resumed = stored is not None
    if stored is None:
        try:
            stored = prepare()
            study = create_study(opened, name, stored, config)
        except BaseException:
            if fresh_folder is not None:  # a failed start leaves nothing behind
                shutil.rmtree(fresh_folder, ignore_errors=True)
            elif fresh_journal:  # the folder was there: remove only the journal this run made
                for made in (JOURNAL_NAME, JOURNAL_NAME + ".flock"):  # the journal and its lock file
                    (run_dir / made).unlink(missing_ok=True)
            raise
    else:
        check_resume(stored, config, name, python=python)
        study = optuna.load_study(
            study_name=name,
            storage=opened.storage,
            sampler=create_sampler(config.sampler, config.seed),
            pruner=create_pruner(stored["pruner"]),
        )
    source = resolve(stored)  # its files checked before the cap changes or a word is said
    if resumed:
        stored = set_cap(study, stored, config.trials, reporter)
    return optimize(
        study,
        opened,
        run_dir,
        stored,
        source,
        None,
        config.timeout,
        config.device,
        reporter,
        stop,
        on_trials_start=on_trials_start,
    )


def _prepare(config: SearchConfig, budget: Budget, run_dir: Path, reporter: Reporter) -> dict[str, Any]:
    """Dense model, space and prior for a new study; returns the config stored in the study."""
    recipe = DenseRecipe.from_options(
        config, config.dataset, epochs=config.dense_epochs, input_size=config.input_size
    )
    checkpoint = ensure_checkpoint(
        config.checkpoint, run_dir / "dense.pt", recipe, reporter, train_missing=config.train_missing
    )
    model, ckpt = load_model(checkpoint, arch=config.arch, trust_code=config.trust_code)
    if ckpt.meta.get("dataset") not in (None, config.dataset):
        raise AutopruneError(
            f"checkpoint {checkpoint} was trained on {ckpt.meta['dataset']}, not {config.dataset}"
        )
    table, table_path = _latency_table(config, model, ckpt.meta, run_dir, reporter)
    space = _space(model, ckpt.meta, table)
    sha = file_sha256(checkpoint)
    preferences = _prior(config, model, space, ckpt.meta, sha, run_dir, reporter)
    sensitivity = Path(config.sensitivity) if config.sensitivity else None
    stored = study_config(config, budget, space, preferences, table)
    stored.update(latency_config(table, table_path, run_dir))
    stored.update(
        checkpoint=stored_path(checkpoint, run_dir),
        checkpoint_sha256=sha,
        sensitivity=None if sensitivity is None else stored_path(sensitivity, run_dir),
        sensitivity_sha256=None if sensitivity is None else file_sha256(sensitivity),
        input_size=ckpt.meta["input_size"],
        num_classes=ckpt.meta["num_classes"],
    )
    if config.proxy == "supernet":
        stored.update(prepare_search_supernet(config, checkpoint, sha, run_dir, reporter))
    return stored


def _latency_table(
    config: SearchConfig, model: torch.nn.Module, meta: dict[str, Any], run_dir: Path, reporter: Reporter
) -> tuple[LatencyTable | None, Path | None]:
    """The latency table of a new study: --latency-table, else with a latency budget the run
    folder's cached one (built first if missing), else none."""
    if config.latency is None and config.latency_table is None:
        return None, None
    return search_latency_table(
        model,
        config.arch,
        meta["input_size"],
        run_dir,
        given=config.latency_table,
        device=resolve_device(config.device),
        batch_size=config.batch_size,
        force=config.force,
        reporter=reporter,
    )


def _space(model: torch.nn.Module, meta: dict[str, Any], table: LatencyTable | None = None) -> PruningSpace:
    """The model's space; with a latency table, each group rounded to the widths it prefers."""
    space = space_for(model, meta["arch"], meta["input_size"], meta["num_classes"])
    return space if table is None else with_table_rounding(space, table)


def _prior(
    config: SearchConfig,
    model: torch.nn.Module,
    space: PruningSpace,
    meta: dict[str, Any],
    checkpoint_sha256: str,
    run_dir: Path,
    reporter: Reporter,
) -> np.ndarray:
    """Preferences (ε + normalized Δ per group) from a sensitivity file, computed, or uniform."""
    if config.prior == "uniform":
        return uniform_preferences(len(space.groups))
    from autoprune.sensitivity import (
        Execution,
        Perturbation,
        Provenance,
        compute_sensitivity,
        load_sensitivity,
    )

    if config.sensitivity:
        sens = load_sensitivity(config.sensitivity, space, unit="group")
        if sens.checkpoint_sha256 not in (None, checkpoint_sha256) and not config.force:
            raise AutopruneError(
                f"sensitivity file {config.sensitivity} was computed on another checkpoint "
                f"(sha256 {sens.checkpoint_sha256[:12]}..., this one {checkpoint_sha256[:12]}...); "
                "compute it again, or pass --force to use it anyway"
            )
    else:
        path = run_dir / "sensitivity.json"
        reporter.note(f"computing {config.sensitivity_method} sensitivity per channel group (-> {path})")
        splits = load_dataset(
            config.dataset, config.data_dir, input_size=meta["input_size"], seed=config.seed or 0
        )
        sens = compute_sensitivity(
            model,
            space,
            splits.search,
            unit="group",
            perturbation=Perturbation(config.sensitivity_method, seeds=config.sensitivity_seeds),
            execution=Execution(device=resolve_device(config.device)),
            provenance=Provenance(config.arch, config.dataset, checkpoint_sha256),
            reporter=reporter,
        )
        sens.save(path)
    return sensitivity_preferences(sens, space)


def cli_source(
    stored: dict[str, Any], run_dir: Path, device_name: str, trust_code: bool = False
) -> ModelSource:
    """The model source of a CLI study, rebuilt from its stored config (the first process and
    workers alike): the checkpoint (hash-checked), its space, recal and search batches."""
    path = named_files(stored, run_dir)["checkpoint"]
    model, ckpt = load_model(path, arch=stored["arch"], trust_code=trust_code)
    space = _space(model, ckpt.meta, study_table(stored, run_dir))
    if [g.id for g in space.groups] != stored["group_ids"]:
        raise AutopruneError(
            "this autoprune builds another pruning space than the study's; use the same version"
        )
    splits = load_dataset(
        stored["dataset"], stored["data_dir"], input_size=stored["input_size"], seed=stored["seed"] or 0
    )
    seed = stored["seed"] or 0
    recal = EvalBatches.from_dataset(
        splits.train_plain, stored["batch_size"], stored["recal_batches"] * stored["batch_size"], seed=seed
    )
    search = EvalBatches.from_dataset(splits.search, stored["batch_size"], stored["search_images"])
    provenance = {"checkpoint": path, "checkpoint_sha256": stored["checkpoint_sha256"]}
    train = make_loader(splits.train, RERANK_BATCH, shuffle=True, seed=seed, drop_last=True)
    return ModelSource(model, space, recal, search, train=train, provenance=provenance)
