"""Adaptive sample size: stop when the ranking of the units is settled.

Every ``chunk`` images (from ``min_images`` on; the engine's own chunks may be
smaller) the ranking of the units is tested for stability by a paired bootstrap
over the images seen so far: ``resamples`` resamples of those images give
resampled per-unit drops, each is ranked, and its Spearman correlation with the
current ranking is taken. The ranking is *settled* when the ``quantile``
(default the 10th percentile) of those correlations reaches ``target`` (0.95):
a fresh sample of as many images would, nine times in ten, rank the units at
least that similarly. The run stops there or when the image budget is spent;
the JSON records the images used, the final stability and why it stopped. A
pairwise rule (stop when the 95 % intervals of neighbours separate) never stops
when two units are truly equal, and the bootstrap accounts for every pair at
once, with the images' pairing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from autoprune.errors import AutopruneError

if TYPE_CHECKING:
    from autoprune.sensitivity.job import Scores


@dataclass(frozen=True)
class Adaptive:
    """Adaptive sample size: see the module docstring."""

    chunk: int = 128
    min_images: int = 256
    target: float = 0.95
    quantile: float = 0.1
    resamples: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if (
            self.chunk < 1
            or self.min_images < 1
            or self.resamples < 2
            or not 0.0 <= self.quantile < 1.0
            or not -1.0 <= self.target <= 1.0
        ):
            raise AutopruneError(f"invalid adaptive settings {self}")


def adaptive_config(adaptive: bool | Adaptive | None) -> Adaptive | None:
    """The settings ``adaptive`` stands for (True: the defaults; False/None: off)."""
    if adaptive is True:
        return Adaptive()
    return adaptive or None


class Stopper:
    """The adaptive stopping rule (see the module docstring)."""

    def __init__(self, cfg: Adaptive) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.stability: float | None = None
        self.images = 0
        self.next_check = cfg.min_images

    def settled(self, scores: Scores) -> bool:
        n = int(scores.seen0)
        self.images = n
        if n < self.next_check:
            return False
        self.next_check = n + self.cfg.chunk
        drops = np.stack([scores.drops(i) for i in range(len(scores.index))])  # units x images
        self.stability = rank_stability(drops, self.cfg.resamples, self.cfg.quantile, self.rng)
        return self.stability >= self.cfg.target

    def record(self, budget: int) -> dict:
        return {
            **asdict(self.cfg),
            "stability": self.stability,
            "stopped": "settled" if self.images < budget else "budget",
        }


def rank_stability(drops: np.ndarray, resamples: int, quantile: float, rng: np.random.Generator) -> float:
    """``quantile`` of the Spearman correlations between the ranking of ``drops.mean(1)`` and
    the rankings of ``resamples`` paired bootstrap resamples of the images (columns)."""
    from scipy.stats import rankdata

    n = drops.shape[1]
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)  # B x n
    boot = drops @ weights.T / n  # units x B
    current = rankdata(drops.mean(axis=1))
    ranks = rankdata(boot, axis=0)
    corr = np.array([_pearson(current, ranks[:, b]) for b in range(resamples)])
    return float(np.quantile(corr, quantile))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two rank vectors; two constant rankings agree (1), one does not (0)."""
    a, b = a - a.mean(), b - b.mean()
    na, nb = float(np.sqrt((a * a).sum())), float(np.sqrt((b * b).sum()))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float((a * b).sum() / (na * nb))
