"""The names every extension point accepts: one table each, shared by the library and the CLI.

The library validates with :meth:`Registry.check` and the CLI offers the same
tuples as ``click.Choice``, so the two cannot disagree. This module imports
nothing heavy (no torch, no optuna): the CLI reads it to build its options.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from autoprune.errors import AutopruneError


@dataclass(frozen=True)
class Registry:
    """The valid names of one extension point; ``kind`` names it in error messages."""

    kind: str
    names: tuple[str, ...]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __len__(self) -> int:
        return len(self.names)

    def check(self, name: str) -> str:
        """``name`` if it is registered, else an AutopruneError listing the valid names."""
        if name not in self.names:
            raise AutopruneError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names)}")
        return name

    def without(self, *names: str) -> Registry:
        return Registry(self.kind, tuple(n for n in self.names if n not in names))


CRITERIA = Registry("criterion", ("l1", "l2", "bn_gamma", "random", "auto"))
"""Weight inheritance: which channels a pruned group keeps. ``auto`` (AdaPruner) builds a
candidate per data-free criterion, recalibrates BN on data and keeps the most accurate."""

CHANNEL_CRITERIA = CRITERIA.without("auto")
"""The criteria that score channels from the weights alone (what a search trial can use)."""

AUTO_CANDIDATES = ("l1", "l2", "bn_gamma")
"""The criteria ``auto`` tries."""

SENSITIVITY_METHODS = Registry("sensitivity method", ("sr-init", "sbpf", "bn-gamma"))
SENSITIVITY_UNITS = Registry("sensitivity unit", ("block", "group"))

PROXIES = Registry("proxy", ("recal", "supernet"))
PROXY_METRICS = Registry("proxy metric", ("acc", "stage-loss"))
"""What the supernet proxy scores: recalibrated top-1, or minus the sum of normalized stage losses."""
SAMPLERS = Registry("sampler", ("tpe", "gp", "cmaes", "nsga2", "random"))
TRIAL_PRUNERS = Registry("trial pruner", ("wilcoxon", "median", "none"))
PRIORS = Registry("prior", ("sensitivity", "uniform"))
SEARCH_SPACES = Registry("search space", ("group", "stage"))
"""Per-group or per-stage multipliers around the prior."""

STORAGES = Registry("storage", ("journal", "sqlite", "postgresql", "mysql", "redis"))
"""Study storage URL schemes (no URL: a journal file in the run folder)."""

EXPORTS = Registry("export format", ("torchscript", "onnx"))
"""Deployable files ``apply`` writes beside the pruned checkpoint."""

MAX_TRIALS = 1_000_000
"""The largest ``--trials`` (the study-wide cap) the search and the CLI accept."""
