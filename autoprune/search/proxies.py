"""Proxy scores: a cheap, faithful estimate of how good a pruned candidate is.

A proxy turns a :class:`~autoprune.plan.Plan` into a score (higher is better)
and reports a value per evaluation batch, so a trial pruner can stop a weak
candidate early. ``recal`` is the one built in; others plug in behind
:class:`Proxy`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from autoprune.plan import Plan
from autoprune.recalibration import recalibrate_batchnorm
from autoprune.space import PruningSpace
from autoprune.surgery import apply_plan

ReportFn = Callable[[int, float], None]
"""Called with (batch index, that batch's accuracy); may raise ``optuna.TrialPruned``."""


@dataclass(frozen=True)
class ProxyScore:
    accuracy: float
    loss: float
    images: int


class Proxy(abc.ABC):
    """Scores plans of one space on ``device``; higher accuracy is better."""

    name: str
    device: torch.device

    @abc.abstractmethod
    def score(self, plan: Plan, report: ReportFn | None = None) -> ProxyScore:
        """Score ``plan``; call ``report`` after each evaluation batch."""


@dataclass
class EvalBatches:
    """Images held in memory as fixed batches, so every candidate sees exactly the same data."""

    batches: list[tuple[torch.Tensor, torch.Tensor]]

    @classmethod
    def from_dataset(
        cls, dataset: Dataset, batch_size: int, limit: int | None = None, seed: int | None = None
    ) -> EvalBatches:
        n = len(dataset) if limit is None else min(limit, len(dataset))
        if seed is None:
            order = torch.arange(n)
        else:
            order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
        xs, ys = zip(*(dataset[int(i)] for i in order), strict=True)
        x, y = torch.stack(xs), torch.as_tensor(ys)
        return cls(list(zip(x.split(batch_size), y.split(batch_size), strict=True)))

    @property
    def images(self) -> list[torch.Tensor]:
        return [x for x, _ in self.batches]

    def to(self, device: torch.device) -> EvalBatches:
        return EvalBatches([(x.to(device), y.to(device)) for x, y in self.batches])


@torch.inference_mode()
def score_batches(model: nn.Module, data: EvalBatches, report: ReportFn | None = None) -> ProxyScore:
    """Top-1 and cross-entropy over ``data``, reporting each batch's accuracy."""
    model.eval()
    correct, loss, total = 0, 0.0, 0
    for step, (x, y) in enumerate(data.batches):
        logits = model(x)
        hits = (logits.argmax(1) == y).sum().item()
        correct += hits
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        total += y.numel()
        if report is not None:
            report(step, hits / y.numel())
    return ProxyScore(correct / total, loss / total, total)


class RecalProxy(Proxy):
    """Inherit weights by importance, recalibrate BN on a few training batches, top-1 on the search split."""

    name = "recal"

    def __init__(
        self,
        model: nn.Module,
        space: PruningSpace,
        recal: EvalBatches,
        search: EvalBatches,
        *,
        device: torch.device,
        criterion: str = "l1",
    ) -> None:
        self.model = model.eval()
        self.space = space
        self.recal = recal.to(device)
        self.search = search.to(device)
        self.device = device
        self.criterion = criterion

    def score(self, plan: Plan, report: ReportFn | None = None) -> ProxyScore:
        pruned = apply_plan(self.model, plan, self.criterion, space=self.space).model.to(self.device)
        recalibrate_batchnorm(pruned, self.recal.images, self.device)
        return score_batches(pruned, self.search, report)
