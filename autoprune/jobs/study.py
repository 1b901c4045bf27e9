"""What a search study stores, and how it is checked.

:class:`SearchConfig` (everything ``autoprune search`` takes) and the config a new study
stores from it in its user attrs (:data:`CONFIG_ATTR`), so that every process of the study
(the first one, a resume, workers) shares one code path once the study exists. Files the
config names (the dense checkpoint, a ``--sensitivity`` file, a latency table) are stored
relative to the run folder when inside it (else absolute) with their sha256, and checked
before a process's first trial (:func:`named_files`). Also the study's cap on trials
(:func:`set_cap`, :func:`stored_cap`), the resume checks and creating the study.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

from autoprune import registry
from autoprune.budget import Budget, project_to_budget
from autoprune.checkpoint import file_sha256, versions
from autoprune.device import resolve_device
from autoprune.errors import AutopruneError
from autoprune.jobs.paths import check_writable_dir
from autoprune.jobs.source import PYTHON_SOURCE, ModelSource
from autoprune.latency import LatencyModel, LatencyTable
from autoprune.prior import R_MIN, preferences_from_sensitivity, uniform_preferences
from autoprune.progress import Reporter
from autoprune.registry import MAX_TRIALS
from autoprune.search.cap import finished_count
from autoprune.search.objective import SearchSpaceSpec, prior_log
from autoprune.search.rerank import Rerank
from autoprune.search.samplers import create_pruner, create_sampler
from autoprune.search.storage import StudyStorage
from autoprune.space import PruningSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)

CHOICES = {
    "sampler": registry.SAMPLERS,
    "pruner": registry.TRIAL_PRUNERS,
    "proxy": registry.PROXIES,
    "prior": registry.PRIORS,
    "space": registry.SEARCH_SPACES,
    "criterion": registry.CHANNEL_CRITERIA,
    "sensitivity-method": registry.SENSITIVITY_METHODS,
    "proxy-metric": registry.PROXY_METRICS,
}
"""The options of :class:`SearchConfig` that name a registered choice: option -> its registry
(the field is the option's name with ``_`` for ``-``)."""


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
    rerank: int = 0  # finalists re-ranked by a short fine-tune (autoprune.search.rerank); 0: off
    rerank_steps: int = Rerank.steps
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
        for name, valid in CHOICES.items():
            value = getattr(self, name.replace("-", "_"))
            if value not in valid:
                raise AutopruneError(f"unknown --{name} {value!r}; valid: {', '.join(valid)}")
        if self.proxy_metric != "acc" and self.proxy != "supernet":
            raise AutopruneError(f"--proxy-metric {self.proxy_metric} needs --proxy supernet")
        check_trials(self.trials)
        Rerank(self.rerank, self.rerank_steps)
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


def check_trials(trials: int) -> None:
    if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= MAX_TRIALS:
        raise AutopruneError(f"--trials must be a whole number from 1 to {MAX_TRIALS:,}, got {trials!r}")


CONFIG_ATTR = "autoprune.config"


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


def stored_config(opened: StudyStorage, name: str) -> dict[str, Any] | None:
    try:
        study = optuna.load_study(study_name=name, storage=opened.storage)
    except KeyError:
        return None
    config = study.user_attrs.get(CONFIG_ATTR)
    if config is None and _half_created(study):
        return None  # a `search` killed while creating it: create_study finishes the job
    if config is None:
        raise AutopruneError(f"study {name!r} in {opened.shown_url} was not created by autoprune")
    return config


def _half_created(study: optuna.Study) -> bool:
    """No config and no trial beyond the enqueued seeds: ``create_study`` was cut short."""
    return all(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False))


def check_resume(stored: dict[str, Any], config: SearchConfig, name: str, *, python: bool = False) -> None:
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


def study_config(
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


def latency_config(table: LatencyTable | None, path: Path | None, run_dir: Path) -> dict[str, Any]:
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
        "latency_table": stored_path(path, run_dir),
        "latency_table_sha256": file_sha256(path),
        "latency_target": target,
    }


def source_config(
    config: SearchConfig, budget: Budget, source: ModelSource, sensitivity: Any
) -> dict[str, Any]:
    """The stored config of a new study on an in-memory model (no checkpoint to re-load)."""
    if config.proxy != "recal":
        raise AutopruneError(f"autoprune.search() scores with the recal proxy, not {config.proxy!r}")
    space = source.space
    if sensitivity is None:
        preferences = uniform_preferences(len(space.groups))
    else:
        preferences = sensitivity_preferences(sensitivity, space)
    stored = study_config(config, budget, space, preferences)
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


def checked_source(stored: dict[str, Any], source: ModelSource, name: str) -> ModelSource:
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


def sensitivity_preferences(sens: Any, space: PruningSpace) -> np.ndarray:
    """The prior's preferences (ε + normalized Δ) from a group sensitivity."""
    return preferences_from_sensitivity(np.array([sens[g.id].delta for g in space.groups]))


def stored_path(path: Path, run_dir: Path) -> str:
    """``path`` relative to the run folder when inside it (workers elsewhere resolve it against
    their RUN_DIR), else absolute."""
    absolute = Path(path).resolve()
    try:
        return absolute.relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return str(absolute)


def named_files(stored: dict[str, Any], run_dir: Path) -> dict[str, Path]:
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


def progress(study: optuna.Study, cap: int) -> str:
    return f"{finished_count(study)} of {cap} trials done"


def set_cap(study: optuna.Study, stored: dict[str, Any], cap: int, reporter: Reporter) -> dict[str, Any]:
    """On resume: store ``cap`` (the search's --trials) as the study's cap, and say where it stands."""
    name, before = study.study_name, stored.get("trials")
    if before != cap:
        stored = {**stored, "trials": cap}
        study.set_user_attr(CONFIG_ATTR, stored)
        if before is not None:
            reporter.note(f"study {name!r}: the cap on trials is now {cap} (it was {before})")
    reporter.note(f"resuming study {name!r}: {progress(study, cap)}")
    return stored


def stored_cap(study: optuna.Study) -> int | None:
    cap = study.user_attrs.get(CONFIG_ATTR, {}).get("trials")
    return None if cap is None else int(cap)


def study_table(stored: dict[str, Any], run_dir: Path) -> LatencyTable | None:
    """The latency table the study names (hash-checked), or None."""
    path = named_files(stored, run_dir).get("latency_table")
    return None if path is None else LatencyTable.load(path)


def create_study(
    opened: StudyStorage, name: str, stored: dict[str, Any], config: SearchConfig
) -> optuna.Study:
    multi = config.sampler == "nsga2"
    study = optuna.create_study(
        study_name=name,
        storage=opened.storage,
        sampler=create_sampler(config.sampler, config.seed),
        pruner=create_pruner(config.pruner),
        directions=["maximize", "minimize"] if multi else ["maximize"],
        load_if_exists=True,  # only a half-created one gets here (see stored_config)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        metric = "score" if stored.get("score_fn") else "proxy_accuracy"
        study.set_metric_names([metric, "flops_ratio"] if multi else [metric])
    for params in spec(stored).seed_params():
        study.enqueue_trial(params, skip_if_exists=True)
    for key in ("arch", "dataset", "budget", "checkpoint_sha256", "versions"):
        study.set_user_attr(key, stored[key])
    study.set_user_attr(CONFIG_ATTR, stored)  # last: a study with it is complete
    return study


def spec(stored: dict[str, Any]) -> SearchSpaceSpec:
    prefs = np.asarray(stored["preferences"])
    return SearchSpaceSpec(stored["group_ids"], stored["group_stages"], prior_log(prefs), stored["space"])
