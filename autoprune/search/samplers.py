"""The samplers and trial pruners ``--sampler`` and ``--pruner`` name."""

from __future__ import annotations

import warnings

import optuna
from optuna.exceptions import ExperimentalWarning

from autoprune.registry import SAMPLERS, TRIAL_PRUNERS


def create_sampler(name: str, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """TPE is multivariate (the per-group multipliers interact through the budget)."""
    SAMPLERS.check(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return _sampler(name, seed)


def _sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(multivariate=True, group=True, seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}")


def create_pruner(name: str) -> optuna.pruners.BasePruner:
    """``wilcoxon`` compares a trial's per-batch accuracies with the best trial's on the same batches."""
    TRIAL_PRUNERS.check(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return _pruner(name)


def _pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}")
