"""What a run folder holds, refreshed after every trial: best_trial.json, trials.csv, summary.png.

``best_trial.json`` is a Plan (``"format": "autoprune.plan/1"``) plus the trial's
score, the budget, a pointer to the study and the dense checkpoint's hash, so
``autoprune apply best_trial.json`` takes it directly.

Every file is written atomically (temporary file in the same folder, fsync,
rename), per-trial charts included: :class:`AtomicFileSystemArtifactStore` is
Optuna's filesystem artifact store with that write.

summary.png costs 0.5-2 s to draw (matplotlib, measured on 2 shared CPU cores), as
much as a short trial; a :class:`SummaryPacer` redraws it after every trial while
drawing stays a small share of the run's time, and less often when trials are
faster than that. It is always redrawn when the search ends.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState

from autoprune.io import atomic_write, write_json, write_text
from autoprune.search.rerank import NO_RERANK, Rerank, finalists, reranked_best, stored_scores
from autoprune.space import PruningSpace

SURPLUS_ATTR = "surplus"
"""User attr of a trial the study's cap left no room for (:mod:`autoprune.search.cap`)."""
BEST_TRIAL = "best_trial.json"
TRIALS_CSV = "trials.csv"
SUMMARY_PNG = "summary.png"


@dataclass(frozen=True)
class StudyPointer:
    name: str
    storage: str


def is_surplus(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(SURPLUS_ATTR))


def completed(study: optuna.Study) -> list[FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "channels" in t.user_attrs
    ]


def within_budget(study: optuna.Study, flops_budget: float | None) -> list[FrozenTrial]:
    """The completed trials within the FLOPs budget (all of them but a Pareto study's extras)."""
    trials = completed(study)
    if flops_budget is None:
        return trials
    return [t for t in trials if t.user_attrs["flops_ratio"] <= flops_budget + 1e-9]


def best_trial(
    study: optuna.Study, flops_budget: float | None, rerank: Rerank = NO_RERANK
) -> FrozenTrial | None:
    """The most accurate completed trial within the FLOPs budget: the best re-ranked finalist
    once every finalist is re-ranked (:mod:`autoprune.search.rerank`), else the proxy's best."""
    trials = within_budget(study, flops_budget)
    if not trials:
        return None
    if rerank.top:
        best = reranked_best(trials, stored_scores(study, rerank), rerank.top)
        if best is not None:
            return best
    return finalists(trials, 1)[0]


def best_trial_document(
    trial: FrozenTrial, space: PruningSpace, pointer: StudyPointer, config: dict[str, Any]
) -> dict[str, Any]:
    plan = space.plan_from_channels(
        np.array([trial.user_attrs["channels"][g.id] for g in space.groups]),
        ratios=np.array([trial.user_attrs["keep_ratios"][g.id] for g in space.groups]),
    )
    document = {
        **plan.to_dict(),
        "score": {
            "proxy": config["proxy"],
            "accuracy": trial.values[0],  # with a score_fn (Python API): its value, and loss = -value
            "loss": trial.user_attrs.get("proxy_loss"),
            **({"score_fn": config["score_fn"]} if config.get("score_fn") else {}),
        },
        "budget": config["budget"],
        "cost": {k: trial.user_attrs[k] for k in ("flops", "params", "flops_ratio", "params_ratio")},
        "study": {"name": pointer.name, "storage": pointer.storage, "trial": trial.number},
        "checkpoint": config["checkpoint"],
        "checkpoint_sha256": config["checkpoint_sha256"],
    }
    if "latency_ms" in trial.user_attrs:  # predicted from the study's latency table
        document["cost"].update(
            latency_ms=trial.user_attrs["latency_ms"], latency_ratio=trial.user_attrs["latency_ratio"]
        )
    if config.get("latency_table"):
        document["latency_table"] = {
            "path": config["latency_table"],
            "sha256": config["latency_table_sha256"],
            **config.get("latency_target", {}),
        }
    return document


def trials_table(study: optuna.Study, space: PruningSpace, reranked: dict[int, float] | None = None) -> str:
    """One CSV row per finished or failed trial (not the surplus ones): score, cost and channels;
    ``latency_ratio`` (predicted) with a latency table, ``rerank_accuracy`` for the ``reranked``
    finalists' fine-tuned scores."""
    ids = [g.id for g in space.groups]
    reranked = reranked or {}
    out = io.StringIO()
    writer = csv.writer(out)
    # accuracy: a complete trial's score; partial_accuracy: where a pruned trial was stopped
    header = ["trial", "state", "accuracy", "partial_accuracy", "rerank_accuracy"]
    header += ["flops_ratio", "params_ratio", "latency_ratio", "seconds"]
    writer.writerow([*header, *ids])
    for t in study.get_trials(deepcopy=False):
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) or is_surplus(t):
            continue  # a surplus trial (the study's cap was reached) was never evaluated
        channels = t.user_attrs.get("channels", {})
        seconds = t.duration.total_seconds() if t.duration else ""
        value = t.values[0] if t.values else ""
        pruned = t.state == TrialState.PRUNED
        writer.writerow(
            [
                t.number,
                t.state.name.lower(),
                "" if pruned else value,
                value if pruned else "",
                reranked.get(t.number, ""),
                t.user_attrs.get("flops_ratio", ""),
                t.user_attrs.get("params_ratio", ""),
                t.user_attrs.get("latency_ratio", ""),
                f"{seconds:.2f}" if seconds != "" else "",
                *(channels.get(i, "") for i in ids),
            ]
        )
    return out.getvalue()


class SummaryPacer:
    """When to redraw summary.png: after every trial, as long as drawing takes at most
    ``share`` of the time since the previous drawing ended (so at most ``share``/(1+``share``)
    of the run), and always the first time.
    """

    def __init__(self, share: float = 0.25, clock: Callable[[], float] = time.monotonic) -> None:
        self.share = share
        self._clock = clock
        self._last_end: float | None = None
        self._last_cost = 0.0

    def due(self) -> bool:
        if self._last_end is None:
            return True
        return (self._clock() - self._last_end) * self.share >= self._last_cost

    def drawing(self) -> _Timed:
        """Context manager around one drawing, to learn what it costs."""
        return _Timed(self)


class _Timed:
    def __init__(self, pacer: SummaryPacer) -> None:
        self._pacer = pacer
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = self._pacer._clock()

    def __exit__(self, *exc: object) -> None:
        end = self._pacer._clock()
        self._pacer._last_cost = end - self._start
        self._pacer._last_end = end


def refresh_outputs(
    run_dir: Path,
    study: optuna.Study,
    space: PruningSpace,
    pointer: StudyPointer,
    config: dict[str, Any],
    *,
    with_summary: bool = True,
    pacer: SummaryPacer | None = None,
) -> FrozenTrial | None:
    """Rewrite best_trial.json and trials.csv, and summary.png when ``with_summary`` and
    ``pacer`` (if given) says it is due; returns the best trial. All writes are atomic."""
    rerank = Rerank.of(config)
    scores = stored_scores(study, rerank) if rerank.top else {}
    best = best_trial(study, config["budget"].get("flops"), rerank)
    if best is not None:
        document = best_trial_document(best, space, pointer, config)
        if best.number in scores:
            document["score"]["rerank"] = {
                "accuracy": scores[best.number],
                "steps": rerank.steps,
                "top": rerank.top,
            }
        write_json(run_dir / BEST_TRIAL, document)
    write_text(run_dir / TRIALS_CSV, trials_table(study, space, scores))
    if with_summary and best is not None:
        if pacer is None:
            _write_summary(run_dir / SUMMARY_PNG, study, space, best, config)
        elif pacer.due():
            with pacer.drawing():
                _write_summary(run_dir / SUMMARY_PNG, study, space, best, config)
    return best


def _write_summary(path: Path, study, space: PruningSpace, best: FrozenTrial, config: dict[str, Any]) -> None:
    from autoprune.search.charts import summary_chart  # matplotlib: imported only when drawing

    trials = completed(study)
    uniform = config.get("uniform_channels") or [g.channels for g in space.groups]
    summary_chart(
        path,
        [t.number for t in trials],
        [t.values[0] for t in trials],
        [g.id for g in space.groups],
        [best.user_attrs["channels"][g.id] for g in space.groups],
        uniform,
        [g.channels for g in space.groups],
    )


class AtomicFileSystemArtifactStore(FileSystemArtifactStore):
    """Optuna's filesystem artifact store whose writes are atomic (temporary file in the
    same folder, fsync, rename, mode from the umask): the dashboard never serves a
    half-written chart, and a failed upload leaves nothing behind.
    """

    def __init__(self, base_path: str | os.PathLike) -> None:
        super().__init__(Path(base_path))
        self._root = Path(base_path)

    def _target(self, artifact_id: str) -> Path:
        # The same containment rule as Optuna's store (an id is a relative path inside the base).
        root = os.path.abspath(self._root)
        target = os.path.abspath(self._root / artifact_id)
        if os.path.isabs(artifact_id) or os.path.commonpath([root, target]) != root:
            raise ValueError(f"Invalid artifact_id: {artifact_id}")
        return Path(target)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        def copy(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                shutil.copyfileobj(content_body, f)

        atomic_write(self._target(artifact_id), copy)
