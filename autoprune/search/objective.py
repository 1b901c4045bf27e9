"""One trial: sample preferences around the prior, project onto the budget, score with the proxy.

The trial's parameters are a prior weight λ ∈ [0, 1] and log-multipliers m ∈ [−w, w]
per group (``--space group``) or per resolution stage (``--space stage``):

    p_g = exp(λ · log(ε + ŝ_g) + m_g)

so λ = 1, m = 0 is exactly the sensitivity prior and λ = 0, m = 0 is exactly the
uniform plan (both are enqueued as the first trials). The preferences are then
projected onto the budget (:func:`autoprune.budget.project_to_budget`), so every
trial is feasible. With NSGA-II the FLOPs target itself is a parameter and the
trial returns (accuracy, FLOPs ratio) for a Pareto front.

Each trial first records which process runs it (:func:`autoprune.search.liveness.record_owner`),
so a trial whose worker is killed can be failed and retried.

Test hook (the one place it is documented): ``AUTOPRUNE_TEST_PAUSE_IN_TRIAL=SECONDS`` makes a
trial sleep that long right after its first report step, so a test can kill a worker in the
middle of the proxy at a known moment. Not for use outside tests.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna

from autoprune.budget import Budget, project_to_budget
from autoprune.cost import CostModel
from autoprune.latency import LatencyModel
from autoprune.search.charts import keep_ratio_chart
from autoprune.search.liveness import record_owner
from autoprune.search.proxies import Proxy
from autoprune.space import PruningSpace
from autoprune.telemetry import GpuMonitor

MULTIPLIER_RANGE = 1.0
PRIOR_WEIGHT = "prior_weight"
FLOPS_TARGET = "flops_target"
TEST_PAUSE_ENV = "AUTOPRUNE_TEST_PAUSE_IN_TRIAL"


@dataclass
class SearchSpaceSpec:
    """What the trial samples: per-group or per-stage multipliers around the prior."""

    group_ids: list[str]
    group_stages: list[int]
    prior_log: np.ndarray
    mode: str = "group"
    multiplier_range: float = MULTIPLIER_RANGE

    def param_names(self) -> list[str]:
        if self.mode == "group":
            return [f"m:{g}" for g in self.group_ids]
        return [f"m:stage{s}" for s in self._stages()]

    def has_prior(self) -> bool:
        return bool(np.any(self.prior_log != self.prior_log[0]))

    def preferences(self, trial: optuna.Trial) -> np.ndarray:
        w = self.multiplier_range
        weight = trial.suggest_float(PRIOR_WEIGHT, 0.0, 1.0) if self.has_prior() else 0.0
        if self.mode == "group":
            m = np.array([trial.suggest_float(name, -w, w) for name in self.param_names()])
        else:
            per_stage = {s: trial.suggest_float(f"m:stage{s}", -w, w) for s in self._stages()}
            m = np.array([per_stage[s] for s in self.group_stages])
        return np.exp(weight * self.prior_log + m)

    def seed_params(self) -> list[dict[str, float]]:
        """Params of the prior-at-budget and the uniform-at-budget trials."""
        zeros = dict.fromkeys(self.param_names(), 0.0)
        if not self.has_prior():
            return [zeros]
        return [{PRIOR_WEIGHT: 1.0, **zeros}, {PRIOR_WEIGHT: 0.0, **zeros}]

    def _stages(self) -> list[int]:
        return sorted(set(self.group_stages))


class PlanObjective:
    """The Optuna objective: preferences → projected plan → proxy score (+ user attrs, chart)."""

    def __init__(
        self,
        space: PruningSpace,
        spec: SearchSpaceSpec,
        budget: Budget,
        proxy: Proxy,
        *,
        r_min: float,
        artifact_store: optuna.artifacts.FileSystemArtifactStore | None,
        multi_objective: bool = False,
        admit: Callable[[optuna.Trial], None] | None = None,
        latency_model: LatencyModel | None = None,
    ) -> None:
        self.space = space
        self.admit = admit
        self.latency_model = latency_model
        self.spec = spec
        self.budget = budget
        self.proxy = proxy
        self.r_min = r_min
        self.cost = CostModel(space)
        self.artifact_store = artifact_store
        self.multi_objective = multi_objective
        smallest = space.channels_from_ratios(np.full((1, len(space.groups)), r_min))
        self.min_flops_ratio = float(self.cost.flops(smallest)[0] / self.cost.dense_flops)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        record_owner(trial)
        if self.admit is not None:  # the study's trial cap (autoprune.search.cap): may end it here
            self.admit(trial)
        prefs = self.spec.preferences(trial)
        flops = self.budget.flops
        if self.multi_objective:
            upper = flops if flops is not None else 1.0
            flops = trial.suggest_float(FLOPS_TARGET, min(self.min_flops_ratio * 1.01, upper), upper)
        projection = project_to_budget(
            self.space,
            prefs,
            flops=flops,
            params=self.budget.params,
            r_min=self.r_min,
            cost_model=self.cost,
            latency=self.budget.latency,
            latency_model=self.latency_model,
        )
        self._record(trial, projection)
        report = None if self.multi_objective else _reporter(trial)
        with GpuMonitor(self.proxy.device) as gpu:
            score = self.proxy.score(projection.plan, report)
        for key, value in gpu.stats.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("proxy_loss", score.loss)
        trial.set_user_attr("proxy_images", score.images)
        if self.multi_objective:
            return score.accuracy, projection.flops_ratio
        return score.accuracy

    def _record(self, trial: optuna.Trial, projection) -> None:
        space = self.space
        channels = projection.plan.channels
        kept = {g.id: channels[g.id] / g.channels for g in space.groups}
        trial.set_user_attr("channels", channels)
        trial.set_user_attr("keep_ratios", {k: round(v, 4) for k, v in kept.items()})
        trial.set_user_attr("flops", projection.flops)
        trial.set_user_attr("params", projection.params)
        trial.set_user_attr("flops_ratio", projection.flops_ratio)
        trial.set_user_attr("params_ratio", projection.params_ratio)
        trial.set_user_attr("alpha", projection.alpha)
        if projection.latency_ms is not None:  # predicted by the study's latency table
            trial.set_user_attr("latency_ms", projection.latency_ms)
            trial.set_user_attr("latency_ratio", projection.latency_ratio)
        # A guard: projection makes every trial feasible, so these are <= 0 unless something broke.
        if self.budget.flops is not None:
            trial.set_constraint("flops", projection.flops_ratio - self.budget.flops)
        if self.budget.params is not None:
            trial.set_constraint("params", projection.params_ratio - self.budget.params)
        if self.budget.latency is not None:
            trial.set_constraint("latency", projection.latency_ratio - self.budget.latency)
        if self.artifact_store is not None:
            self._upload_chart(trial, kept)

    def _upload_chart(self, trial: optuna.Trial, kept: dict[str, float]) -> None:
        groups = self.space.groups
        with tempfile.TemporaryDirectory() as tmp:
            path = keep_ratio_chart(
                Path(tmp) / f"keep_ratios_trial{trial.number}.png",
                [g.id for g in groups],
                [kept[g.id] for g in groups],
                [g.stage for g in groups],
                f"trial {trial.number}: kept fraction per group",
            )
            optuna.artifacts.upload_artifact(
                artifact_store=self.artifact_store,
                file_path=str(path),
                study_or_trial=trial,
                mimetype="image/png",
            )


def _reporter(trial: optuna.Trial):
    pause = float(os.environ.get(TEST_PAUSE_ENV) or 0)  # the test hook (module docstring)

    def report(step: int, value: float) -> None:
        trial.report(value, step)
        if step == 0 and pause > 0:
            time.sleep(pause)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at report step {step}")

    return report


def prior_log(preferences: np.ndarray) -> np.ndarray:
    """log p_g of the prior (zeros for the uniform prior)."""
    logs = np.log(np.asarray(preferences, dtype=np.float64))
    return logs - logs.max() if math.isfinite(logs.max()) else logs
