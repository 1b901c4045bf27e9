"""What a run folder holds, refreshed after every trial: best_trial.json, trials.csv, summary.png.

``best_trial.json`` is a Plan (``"format": "autoprune.plan/1"``) plus the trial's
score, the budget, a pointer to the study and the dense checkpoint's hash, so
``autoprune apply best_trial.json`` takes it directly.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from autoprune.io import write_json, write_text
from autoprune.search.charts import summary_chart
from autoprune.space import PruningSpace

BEST_TRIAL = "best_trial.json"
TRIALS_CSV = "trials.csv"
SUMMARY_PNG = "summary.png"


@dataclass(frozen=True)
class StudyPointer:
    name: str
    storage: str


def completed(study: optuna.Study) -> list[FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "channels" in t.user_attrs
    ]


def best_trial(study: optuna.Study, flops_budget: float | None) -> FrozenTrial | None:
    """The most accurate completed trial (for Pareto studies: within the FLOPs budget, if any)."""
    trials = completed(study)
    if flops_budget is not None:
        trials = [t for t in trials if t.user_attrs["flops_ratio"] <= flops_budget + 1e-9]
    if not trials:
        return None
    return max(trials, key=lambda t: (t.values[0], -t.user_attrs.get("proxy_loss", 0.0)))


def best_trial_document(
    trial: FrozenTrial, space: PruningSpace, pointer: StudyPointer, config: dict[str, Any]
) -> dict[str, Any]:
    plan = space.plan_from_channels(
        np.array([trial.user_attrs["channels"][g.id] for g in space.groups]),
        ratios=np.array([trial.user_attrs["keep_ratios"][g.id] for g in space.groups]),
    )
    return {
        **plan.to_dict(),
        "score": {
            "proxy": config["proxy"],
            "accuracy": trial.values[0],
            "loss": trial.user_attrs.get("proxy_loss"),
        },
        "budget": config["budget"],
        "cost": {k: trial.user_attrs[k] for k in ("flops", "params", "flops_ratio", "params_ratio")},
        "study": {"name": pointer.name, "storage": pointer.storage, "trial": trial.number},
        "checkpoint": config["checkpoint"],
        "checkpoint_sha256": config["checkpoint_sha256"],
    }


def trials_table(study: optuna.Study, space: PruningSpace) -> str:
    """One CSV row per finished trial: score, cost and channels per group."""
    ids = [g.id for g in space.groups]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial", "state", "accuracy", "flops_ratio", "params_ratio", "seconds", *ids])
    for t in study.get_trials(deepcopy=False):
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            continue
        channels = t.user_attrs.get("channels", {})
        seconds = t.duration.total_seconds() if t.duration else ""
        value = t.values[0] if t.values else ""
        writer.writerow(
            [
                t.number,
                t.state.name.lower(),
                value,
                t.user_attrs.get("flops_ratio", ""),
                t.user_attrs.get("params_ratio", ""),
                f"{seconds:.2f}" if seconds != "" else "",
                *(channels.get(i, "") for i in ids),
            ]
        )
    return out.getvalue()


def refresh_outputs(
    run_dir: Path,
    study: optuna.Study,
    space: PruningSpace,
    pointer: StudyPointer,
    config: dict[str, Any],
    *,
    with_summary: bool,
) -> FrozenTrial | None:
    """Rewrite best_trial.json and trials.csv (and summary.png when asked); returns the best trial."""
    best = best_trial(study, config["budget"].get("flops"))
    if best is not None:
        write_json(run_dir / BEST_TRIAL, best_trial_document(best, space, pointer, config))
    write_text(run_dir / TRIALS_CSV, trials_table(study, space))
    if with_summary and best is not None:
        _write_summary(run_dir / SUMMARY_PNG, study, space, best, config)
    return best


def _write_summary(path: Path, study, space: PruningSpace, best: FrozenTrial, config: dict[str, Any]) -> None:
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
