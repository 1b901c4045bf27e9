"""What to perturb: the method, its seeds and (SBPF) noise scales, and the variants they make.

A **variant** is one perturbation of a unit: one per seed for SR-init, one per
(seed, sigma) for SBPF. Every path scores the same variants in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from autoprune.errors import AutopruneError
from autoprune.sensitivity.result import METHODS
from autoprune.sensitivity.units import Initializer, Overrides, Unit, sbpf_overrides, sr_init_overrides

DEFAULT_SIGMAS = (0.1, 0.25, 0.5)


@dataclass(frozen=True)
class Perturbation:
    """``method``: sr-init, sbpf or bn-gamma (no data). ``seeds``: a count (seeds 0..n-1) or
    explicit seeds. ``sigmas``: SBPF's relative noise scales. ``initializer``: SR-init's
    redraw, default the architecture's own (:func:`autoprune.models.initializer_for`)."""

    method: str = "sr-init"
    seeds: int | Sequence[int] = 3
    sigmas: Sequence[float] = DEFAULT_SIGMAS
    initializer: Initializer | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise AutopruneError(f"unknown sensitivity method {self.method!r}; valid: {', '.join(METHODS)}")
        self.seed_list()  # raises on bad seeds
        sigmas = self.sigma_list()
        if self.method == "sbpf" and (not sigmas or any(not s > 0 or math.isinf(s) for s in sigmas)):
            raise AutopruneError(f"sbpf needs positive sigmas, got {sigmas}")

    def seed_list(self) -> list[int]:
        if isinstance(self.seeds, int):
            if self.seeds < 1:
                raise AutopruneError(f"seeds must be >= 1, got {self.seeds}")
            return list(range(self.seeds))
        out = [int(s) for s in self.seeds]
        if not out:
            raise AutopruneError("seeds must not be empty")
        if len(set(out)) != len(out):
            raise AutopruneError(f"seeds must be distinct, got {out}")
        return out

    def sigma_list(self) -> list[float]:
        return [float(s) for s in self.sigmas]

    def variants(self) -> list[Variant]:
        if self.method == "sr-init":
            return [Variant(s, None) for s in self.seed_list()]
        return [Variant(s, sigma) for s in self.seed_list() for sigma in self.sigma_list()]

    def overrides_for(self, ref: nn.Module, arch: str | None) -> Callable[[Unit, Variant], Overrides]:
        """The plain model's overrides of one (unit, variant) of ``ref``."""
        initializer = self.initializer
        if initializer is None:
            from autoprune.models import initializer_for

            initializer = initializer_for(arch or "")

        def overrides(u: Unit, v: Variant) -> Overrides:
            with torch.no_grad():
                if self.method == "sr-init":
                    return sr_init_overrides(ref, u, v.seed, initializer)
                return sbpf_overrides(ref, u, v.seed, float(v.sigma))

        return overrides


@dataclass(frozen=True)
class Variant:
    seed: int
    sigma: float | None
