"""The search job: dense model → space → prior → study → trials → outputs.

:func:`run_search` prepares a study (training the dense model and computing the
sensitivity prior if needed) and runs trials; :func:`run_worker` joins an
existing study from another process or machine. Everything a worker needs is
stored in the study's user attrs (``autoprune.config``), so the two share one
code path once the study exists. Files the config names (the dense checkpoint, a
``--sensitivity`` file) are stored relative to the run folder when inside it (else
absolute) with their sha256, and every process checks them before its first trial.

Dead workers: each trial records its owner first thing; every process fails and
requeues the trials of dead owners (:func:`~autoprune.search.liveness.fail_dead_trials`)
when it starts and after each of its trials.
"""

from __future__ import annotations

import shutil
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

from autoprune.budget import Budget, project_to_budget
from autoprune.checkpoint import file_sha256, load_model, versions
from autoprune.data import EvalBatches, load_dataset
from autoprune.device import resolve_device
from autoprune.errors import AutopruneError
from autoprune.jobs.checkpoint import DenseRecipe, ensure_checkpoint
from autoprune.jobs.latency import search_latency_table
from autoprune.jobs.paths import check_writable_dir
from autoprune.jobs.source import PYTHON_SOURCE, ModelSource
from autoprune.jobs.supernet import prepare_search_supernet, search_supernet_options
from autoprune.latency import LatencyModel, LatencyTable, with_table_rounding
from autoprune.prior import R_MIN, preferences_from_sensitivity, uniform_preferences
from autoprune.progress import SILENT, Reporter
from autoprune.registry import (
    CHANNEL_CRITERIA,
    PRIORS,
    PROXIES,
    PROXY_METRICS,
    SAMPLERS,
    SEARCH_SPACES,
    SENSITIVITY_METHODS,
    TRIAL_PRUNERS,
)
from autoprune.search.cap import SurplusTrial, TrialCap, finished_count, is_surplus
from autoprune.search.liveness import fail_dead_trials
from autoprune.search.objective import PlanObjective, SearchSpaceSpec, prior_log
from autoprune.search.outputs import StudyPointer, SummaryPacer, refresh_outputs
from autoprune.search.samplers import create_pruner, create_sampler
from autoprune.search.storage import JOURNAL_NAME, StudyStorage, open_storage
from autoprune.search_spaces import space_for
from autoprune.space import PruningSpace

CONFIG_ATTR = "autoprune.config"
optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class SearchConfig:
    """Everything ``autoprune search`` takes; defaults are the CLI's."""

    arch: str
    flops: float | None = None
    params: float | None = None
    latency: float | None = None  # of the dense model's latency in the latency table
    latency_table: str | None = None  # default with a latency budget: RUN_DIR/latency_table.json
    dataset: str = "cifar10"
    data_dir: str | None = None
    input_size: int | None = None
    checkpoint: str | None = None
    dense_epochs: int = 30
    sensitivity: str | None = None
    sensitivity_method: str = "sr-init"
    sensitivity_seeds: int = 3
    prior: str = "sensitivity"
    space: str = "group"
    sampler: str = "tpe"
    pruner: str = "wilcoxon"
    proxy: str = "recal"
    proxy_metric: str = "acc"
    supernet_steps: int | None = None
    criterion: str = "l1"
    trials: int = 100
    timeout: float | None = None
    seed: int | None = 0
    study: str | None = None
    storage: str | None = None
    out: str | None = None
    device: str = "auto"
    recal_batches: int = 8
    batch_size: int = 128
    search_images: int | None = None
    r_min: float = R_MIN
    extra: dict[str, Any] = field(default_factory=dict)
    train_missing: bool = False  # a missing --checkpoint path: train the dense model there (else an error)
    force: bool = False  # a --sensitivity file of another checkpoint, a foreign latency table
    trust_code: bool = False  # build a module:callable arch; never stored: each process decides
    weights: str | None = None  # a dense model trained first starts from these published weights

    def validate(self) -> Budget:
        for name, value, valid in (
            ("sampler", self.sampler, SAMPLERS),
            ("pruner", self.pruner, TRIAL_PRUNERS),
            ("proxy", self.proxy, PROXIES),
            ("prior", self.prior, PRIORS),
            ("space", self.space, SEARCH_SPACES),
            ("criterion", self.criterion, CHANNEL_CRITERIA),
            ("sensitivity-method", self.sensitivity_method, SENSITIVITY_METHODS),
        ):
            if value not in valid:
                raise AutopruneError(f"unknown --{name} {value!r}; valid: {', '.join(valid)}")
        if self.proxy_metric not in PROXY_METRICS:
            valid = ", ".join(PROXY_METRICS)
            raise AutopruneError(f"unknown --proxy-metric {self.proxy_metric!r}; valid: {valid}")
        if self.proxy_metric != "acc" and self.proxy != "supernet":
            raise AutopruneError(f"--proxy-metric {self.proxy_metric} needs --proxy supernet")
        check_trials(self.trials)
        if self.timeout is not None and not self.timeout > 0:
            raise AutopruneError(f"--timeout must be positive seconds, got {self.timeout}")
        budget = Budget(self.flops, self.params, self.latency)
        if self.latency_table is not None and not Path(self.latency_table).is_file():
            raise AutopruneError(f"latency table {self.latency_table!r} does not exist")
        resolve_device(self.device)  # before anything is created or computed
        check_writable_dir(self.run_dir(), "run folder")
        return budget

    def study_name(self) -> str:
        if self.study:
            return self.study
        parts = [self.arch.replace(":", "-").replace("/", "-"), self.dataset.split(":")[0]]
        if self.flops is not None:
            parts.append(f"flops{self.flops:g}")
        if self.params is not None:
            parts.append(f"params{self.params:g}")
        if self.latency is not None:
            parts.append(f"latency{self.latency:g}")
        if self.sampler == "nsga2":
            parts.append("pareto")
        return "-".join(parts)

    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.study_name()


@dataclass(frozen=True)
class SearchResult:
    run_dir: Path
    study_name: str
    storage: str
    trials_done: int
    best: optuna.trial.FrozenTrial | None
    interrupted: bool
    study: optuna.Study | None = None


MAX_TRIALS = 1_000_000


def check_trials(trials: int) -> None:
    if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= MAX_TRIALS:
        raise AutopruneError(f"--trials must be a whole number from 1 to {MAX_TRIALS:,}, got {trials!r}")


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
        resolve=lambda stored: _cli_source(stored, run_dir, config.device, config.trust_code),
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
        prepare=lambda: _source_config(config, budget, source, prior()),
        resolve=lambda stored: _checked_source(stored, source, config.study_name()),
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
    fresh_folder = _outermost_missing(run_dir)
    fresh_journal = config.storage is None and not (run_dir / JOURNAL_NAME).exists()
    opened = open_storage(run_dir, config.storage)
    name = config.study_name()
    stored = _stored_config(opened, name)
    resumed = stored is not None
    if stored is None:
        try:
            stored = prepare()
            study = _create_study(opened, name, stored, config)
        except BaseException:
            if fresh_folder is not None:  # a failed start leaves nothing behind
                shutil.rmtree(fresh_folder, ignore_errors=True)
            elif fresh_journal:  # the folder was there: remove only the journal this run made
                for made in (JOURNAL_NAME, JOURNAL_NAME + ".flock"):  # the journal and its lock file
                    (run_dir / made).unlink(missing_ok=True)
            raise
    else:
        _check_resume(stored, config, name, python=python)
        study = optuna.load_study(
            study_name=name,
            storage=opened.storage,
            sampler=create_sampler(config.sampler, config.seed),
            pruner=create_pruner(stored["pruner"]),
        )
    source = resolve(stored)  # its files checked before the cap changes or a word is said
    if resumed:
        stored = _set_cap(study, stored, config.trials, reporter)
    return _optimize(
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


def _outermost_missing(path: Path) -> Path | None:
    """The highest folder of ``path`` that does not exist yet (what creating it would add)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


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
    source = _cli_source(stored, Path(run_dir), device, trust_code)  # files checked before any word
    trials = _worker_limit(loaded, stored, trials, reporter)
    return _optimize(
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
    reporter.note(f"joining study {study.study_name!r}: {_progress(study, stored['trials'])}")
    return trials


def _worker_config(opened: StudyStorage, study: str) -> dict[str, Any]:
    """The stored config of the study a worker joins: one error line when there is none, or when
    the study was made from Python (its in-memory model cannot be rebuilt here)."""
    stored = _stored_config(opened, study)
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


def _stored_config(opened: StudyStorage, name: str) -> dict[str, Any] | None:
    try:
        study = optuna.load_study(study_name=name, storage=opened.storage)
    except KeyError:
        return None
    config = study.user_attrs.get(CONFIG_ATTR)
    if config is None and _half_created(study):
        return None  # a `search` killed while creating it: _create_study finishes the job
    if config is None:
        raise AutopruneError(f"study {name!r} in {opened.shown_url} was not created by autoprune")
    return config


def _half_created(study: optuna.Study) -> bool:
    """No config and no trial beyond the enqueued seeds: ``_create_study`` was cut short."""
    return all(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False))


def _check_resume(stored: dict[str, Any], config: SearchConfig, name: str, *, python: bool = False) -> None:
    if (stored.get("source") == PYTHON_SOURCE) != python:
        made, use = (
            ("autoprune.search() on an in-memory model", "resume it from Python")
            if not python
            else ("`autoprune search`", "resume it with `autoprune search`")
        )
        raise AutopruneError(f"study {name!r} was made by {made}; {use}, or use another study name")
    for key, now in (("arch", config.arch), ("dataset", config.dataset)):
        if stored[key] != now:
            raise AutopruneError(
                f"study {name!r} searches {key} {stored[key]!r}, not {now!r}; use another --study"
            )
    if stored["budget"] != Budget(config.flops, config.params, config.latency).to_dict():
        raise AutopruneError(
            f"study {name!r} has budget {stored['budget']}; use another --study for a new budget"
        )
    if config.checkpoint and not Path(config.checkpoint).is_file():
        raise AutopruneError(f"checkpoint {config.checkpoint!r} does not exist")
    if config.checkpoint and file_sha256(config.checkpoint) != stored["checkpoint_sha256"]:
        raise AutopruneError(f"study {name!r} was run on another checkpoint than {config.checkpoint}")
    table = config.latency_table
    if table and file_sha256(table) != stored.get("latency_table_sha256"):
        raise AutopruneError(f"study {name!r} was made with another latency table than {table}")


def _prepare(config: SearchConfig, budget: Budget, run_dir: Path, reporter: Reporter) -> dict[str, Any]:
    """Dense model, space and prior for a new study; returns the config stored in the study."""
    recipe = DenseRecipe(
        config.arch,
        config.dataset,
        config.data_dir,
        epochs=config.dense_epochs,
        seed=config.seed or 0,
        input_size=config.input_size,
        device=config.device,
        trust_code=config.trust_code,
        weights=config.weights,
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
    stored = _study_config(config, budget, space, preferences, table)
    stored.update(_latency_config(table, table_path, run_dir))
    stored.update(
        checkpoint=_stored_path(checkpoint, run_dir),
        checkpoint_sha256=sha,
        sensitivity=None if sensitivity is None else _stored_path(sensitivity, run_dir),
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


def _latency_config(table: LatencyTable | None, path: Path | None, run_dir: Path) -> dict[str, Any]:
    """What the study stores about its latency table: the file (with its hash) and its target."""
    if table is None or path is None:
        return {"latency_table": None, "latency_table_sha256": None}
    target = {
        "device_name": table.device_name,
        "device": table.device,
        "runtime": table.runtime,
        "threads": table.threads,
        "batch_size": table.batch_size,
        "dense_ms": table.dense_ms,
    }
    return {
        "latency_table": _stored_path(path, run_dir),
        "latency_table_sha256": file_sha256(path),
        "latency_target": target,
    }


def _study_config(
    config: SearchConfig,
    budget: Budget,
    space: PruningSpace,
    preferences: np.ndarray,
    table: LatencyTable | None = None,
) -> dict[str, Any]:
    """The config a new study stores, less the model's provenance (checkpoint, sizes)."""
    uniform = project_to_budget(
        space,
        uniform_preferences(len(space.groups)),
        flops=budget.flops,
        params=budget.params,
        latency=budget.latency,
        latency_model=None if table is None else LatencyModel(space, table),
        r_min=config.r_min,
    )
    stored = {k: v for k, v in asdict(config).items() if k not in _NOT_STORED}
    stored.update(
        budget=budget.to_dict(),
        group_ids=[g.id for g in space.groups],
        group_stages=[g.stage for g in space.groups],
        preferences=[float(p) for p in preferences],
        uniform_channels=[int(uniform.plan.channels[g.id]) for g in space.groups],
        versions=versions(),
    )
    return stored


def _source_config(
    config: SearchConfig, budget: Budget, source: ModelSource, sensitivity: Any
) -> dict[str, Any]:
    """The stored config of a new study on an in-memory model (no checkpoint to re-load)."""
    if config.proxy != "recal":
        raise AutopruneError(f"autoprune.search() scores with the recal proxy, not {config.proxy!r}")
    space = source.space
    if sensitivity is None:
        preferences = uniform_preferences(len(space.groups))
    else:
        preferences = _preferences(sensitivity, space)
    stored = _study_config(config, budget, space, preferences)
    prov = source.provenance
    stored.update(
        source=PYTHON_SOURCE,
        checkpoint=None,
        checkpoint_sha256=None,
        model_sha256=prov.get("model_sha256"),
        score_fn=prov.get("score_fn"),
        sensitivity=None,
        sensitivity_sha256=None,
        input_size=prov.get("input_size"),
        num_classes=prov.get("num_classes"),
    )
    return stored


def _checked_source(stored: dict[str, Any], source: ModelSource, name: str) -> ModelSource:
    """``source`` if it is the model the study was made with (state hash and groups)."""
    if stored.get("model_sha256") not in (None, source.provenance.get("model_sha256")):
        raise AutopruneError(
            f"study {name!r} was made with another model (its weights differ); pass the same "
            "model to resume it, or use another study name"
        )
    if stored["group_ids"] != [g.id for g in source.space.groups]:
        raise AutopruneError(
            f"study {name!r} has other channel groups than this model; use another study name"
        )
    return source


def _stored_path(path: Path, run_dir: Path) -> str:
    """``path`` relative to the run folder when inside it (workers elsewhere resolve it against
    their RUN_DIR), else absolute."""
    absolute = Path(path).resolve()
    try:
        return absolute.relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return str(absolute)


def _named_files(stored: dict[str, Any], run_dir: Path) -> dict[str, Path]:
    """The files the study's config names, resolved for this process; checked for hash.

    One :class:`AutopruneError` line when one is missing or differs from the study's.
    """
    found = {}
    named = (
        ("checkpoint", "dense checkpoint"),
        ("sensitivity", "sensitivity file"),
        ("latency_table", "latency table"),
    )
    for key, what in named:
        name, want = stored.get(key), stored.get(f"{key}_sha256")
        if not name or want is None:  # none, or a study from before files were hashed
            continue
        path = Path(name) if Path(name).is_absolute() else run_dir / name
        if not path.is_file():
            raise AutopruneError(
                f"the study's {what} {name} is missing (looked for {path.resolve()}); "
                "workers need the run folder's files"
            )
        if file_sha256(path) != want:
            raise AutopruneError(
                f"the study's {what} {path.resolve()} differs from the one the study was made with "
                f"(sha256 {want[:12]}...); workers need the same file"
            )
        found[key] = path.resolve()
    return found


_NOT_STORED = (
    "timeout",
    "study",
    "storage",
    "out",
    "device",
    "extra",
    "train_missing",
    "force",
    "trust_code",
)
"""SearchConfig fields that belong to one process, not to the study (``trials`` is the study's cap)."""


def _progress(study: optuna.Study, cap: int) -> str:
    return f"{finished_count(study)} of {cap} trials done"


def _set_cap(study: optuna.Study, stored: dict[str, Any], cap: int, reporter: Reporter) -> dict[str, Any]:
    """On resume: store ``cap`` (the search's --trials) as the study's cap, and say where it stands."""
    name, before = study.study_name, stored.get("trials")
    if before != cap:
        stored = {**stored, "trials": cap}
        study.set_user_attr(CONFIG_ATTR, stored)
        if before is not None:
            reporter.note(f"study {name!r}: the cap on trials is now {cap} (it was {before})")
    reporter.note(f"resuming study {name!r}: {_progress(study, cap)}")
    return stored


def _stored_cap(study: optuna.Study) -> int | None:
    cap = study.user_attrs.get(CONFIG_ATTR, {}).get("trials")
    return None if cap is None else int(cap)


def _space(model: torch.nn.Module, meta: dict[str, Any], table: LatencyTable | None = None) -> PruningSpace:
    """The model's space; with a latency table, each group rounded to the widths it prefers."""
    space = space_for(model, meta["arch"], meta["input_size"], meta["num_classes"])
    return space if table is None else with_table_rounding(space, table)


def _study_table(stored: dict[str, Any], run_dir: Path) -> LatencyTable | None:
    """The latency table the study names (hash-checked), or None."""
    path = _named_files(stored, run_dir).get("latency_table")
    return None if path is None else LatencyTable.load(path)


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
    return _preferences(sens, space)


def _preferences(sens: Any, space: PruningSpace) -> np.ndarray:
    """The prior's preferences (ε + normalized Δ) from a group sensitivity."""
    return preferences_from_sensitivity(np.array([sens[g.id].delta for g in space.groups]))


def _create_study(
    opened: StudyStorage, name: str, stored: dict[str, Any], config: SearchConfig
) -> optuna.Study:
    multi = config.sampler == "nsga2"
    study = optuna.create_study(
        study_name=name,
        storage=opened.storage,
        sampler=create_sampler(config.sampler, config.seed),
        pruner=create_pruner(config.pruner),
        directions=["maximize", "minimize"] if multi else ["maximize"],
        load_if_exists=True,  # only a half-created one gets here (see _stored_config)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        metric = "score" if stored.get("score_fn") else "proxy_accuracy"
        study.set_metric_names([metric, "flops_ratio"] if multi else [metric])
    for params in _spec(stored).seed_params():
        study.enqueue_trial(params, skip_if_exists=True)
    for key in ("arch", "dataset", "budget", "checkpoint_sha256", "versions"):
        study.set_user_attr(key, stored[key])
    study.set_user_attr(CONFIG_ATTR, stored)  # last: a study with it is complete
    return study


def _spec(stored: dict[str, Any]) -> SearchSpaceSpec:
    prefs = np.asarray(stored["preferences"])
    return SearchSpaceSpec(stored["group_ids"], stored["group_stages"], prior_log(prefs), stored["space"])


def _cli_source(
    stored: dict[str, Any], run_dir: Path, device_name: str, trust_code: bool = False
) -> ModelSource:
    """The model source of a CLI study, rebuilt from its stored config (the first process and
    workers alike): the checkpoint (hash-checked), its space, recal and search batches."""
    path = _named_files(stored, run_dir)["checkpoint"]
    model, ckpt = load_model(path, arch=stored["arch"], trust_code=trust_code)
    space = _space(model, ckpt.meta, _study_table(stored, run_dir))
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
    return ModelSource(model, space, recal, search, provenance=provenance)


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
    table = _study_table(stored, run_dir)
    return PlanObjective(
        source.space,
        _spec(stored),
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

    return TrialCap(lambda: _stored_cap(study), should_stop)


def _optimize(
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
    space, checkpoint = source.space, source.checkpoint
    opened.artifacts_dir.mkdir(parents=True, exist_ok=True)
    fail_dead_trials(study)  # trials of workers killed before this process started
    pointer = StudyPointer(study.study_name, opened.shown_url)  # never the password
    # best_trial.json names the checkpoint as found here, so `autoprune apply` works from anywhere.
    documented = {**stored, "checkpoint": None if checkpoint is None else str(checkpoint)}
    if stored.get("latency_table"):
        documented["latency_table"] = str(_named_files(stored, run_dir)["latency_table"])
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
    except KeyboardInterrupt:
        interrupted = True
    finally:
        reporter.finish()
        best = refresh_outputs(run_dir, study, space, pointer, documented, with_summary=True)
    interrupted = interrupted or (stop is not None and stop.is_set())
    return SearchResult(run_dir, study.study_name, opened.shown_url, done, best, interrupted, study)


def _expected(study: optuna.Study, limit: int | None) -> int | None:
    """How many trials this process should see finish: the cap's remainder, at most ``limit``."""
    cap = _stored_cap(study)
    left = None if cap is None else max(cap - finished_count(study), 0)
    return left if limit is None else (limit if left is None else min(limit, left))
