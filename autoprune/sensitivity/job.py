"""What every path evaluates (:class:`Job`) and where the per-image results go (:class:`Scores`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from autoprune.errors import AutopruneError
from autoprune.progress import Reporter
from autoprune.sensitivity.perturbation import Variant
from autoprune.sensitivity.rescore import Rescore
from autoprune.sensitivity.units import Overrides, Unit


class Scores:
    """Per-image correctness and cross-entropy: clean, and per unit and variant."""

    def __init__(self, units: list[Unit], n_variants: int, n_images: int) -> None:
        self.index = {u.id: i for i, u in enumerate(units)}
        self.correct0 = np.zeros(n_images, dtype=bool)
        self.loss0 = np.zeros(n_images, dtype=np.float32)
        self.correct = np.zeros((len(units), n_variants, n_images), dtype=bool)
        self.loss = np.zeros((len(units), n_variants, n_images), dtype=np.float32)
        self.seen = np.zeros(len(units), dtype=np.int64)
        self.seen0 = 0

    def clean(self, at: int, logits: torch.Tensor, y: torch.Tensor) -> None:
        c, loss = score(logits, y)
        self.correct0[at : at + len(c)] = c
        self.loss0[at : at + len(c)] = loss
        self.seen0 = max(self.seen0, at + len(c))

    def unit(self, unit_id: str, variant: int, at: int, logits: torch.Tensor, y: torch.Tensor) -> None:
        c, loss = score(logits, y)
        i = self.index[unit_id]
        self.correct[i, variant, at : at + len(c)] = c
        self.loss[i, variant, at : at + len(c)] = loss
        self.seen[i] = max(self.seen[i], at + len(c))

    def drops(self, i: int) -> np.ndarray:
        """Per-image accuracy drop of unit ``i`` (clean minus the mean over variants)."""
        n = int(self.seen[i])
        return self.correct0[:n].astype(np.float64) - self.correct[i, :, :n].mean(axis=0)


def score(logits: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-image top-1 correctness and cross-entropy of ``logits``."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise AutopruneError("sensitivity needs a model whose output is a (batch, classes) logits tensor")
    logits = logits.float()
    correct = (logits.argmax(1) == y).cpu().numpy()
    loss = F.cross_entropy(logits, y, reduction="none").cpu().numpy()
    return correct, loss


@dataclass(frozen=True)
class Job:
    """What both paths evaluate, and where the results go."""

    units: list[Unit]
    variants: list[Variant]
    perturb: Callable[[Unit, Variant], Overrides]
    dataset: Dataset
    order: list[int]
    chunk: int
    scores: Scores
    rescore: Rescore
    reporter: Reporter
