"""Dense training, fine-tuning (optionally distilled) and evaluation."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from autoprune.data import DataSplits, make_loader
from autoprune.errors import AutopruneError
from autoprune.evaluation import Evaluation
from autoprune.evaluation import evaluate as evaluate_batches
from autoprune.progress import SILENT, Reporter


@dataclass(frozen=True)
class TrainConfig:
    """SGD with Nesterov momentum and a cosine schedule (per step, with a short warm-up)."""

    epochs: int = 15
    lr: float = 0.1
    batch_size: int = 64
    weight_decay: float = 5e-4
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    seed: int = 0
    kd_alpha: float = 0.9
    kd_temperature: float = 4.0


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu") -> Evaluation:
    """Top-1 accuracy and mean cross-entropy of ``model`` (in eval mode) over ``loader``."""
    return evaluate_batches(model, loader, device=device)


def train(
    model: nn.Module,
    splits: DataSplits,
    config: TrainConfig = TrainConfig(),
    *,
    device: torch.device | str = "cpu",
    teacher: nn.Module | None = None,
    reporter: Reporter = SILENT,
    stop: threading.Event | None = None,
) -> nn.Module:
    """Train ``model`` in place on ``splits.train``; with ``teacher``, distill (KD) from it.

    Ctrl-C (KeyboardInterrupt), or ``stop`` being set (checked after every batch, for
    callers that catch SIGINT themselves), ends training within one batch by raising
    KeyboardInterrupt; the reporter's phase is finished first and ``model`` is left
    partly trained. Nothing is written here: callers save only after this returns.
    """
    torch.manual_seed(config.seed)
    model.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    loader = make_loader(splits.train, config.batch_size, shuffle=True, seed=config.seed, drop_last=True)
    optimizer, scheduler = sgd_with_cosine(model, config, max(len(loader), 1))
    reporter.start("train", config.epochs * max(len(loader), 1))
    try:
        for epoch in range(config.epochs):
            seen, correct, loss_sum = 0, 0, 0.0
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                if teacher is not None:
                    loss = (1 - config.kd_alpha) * loss + config.kd_alpha * _distillation_loss(
                        logits, teacher, x, config.kd_temperature
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                seen += y.numel()
                correct += (logits.argmax(1) == y).sum().item()
                loss_sum += loss.item() * y.numel()
                reporter.advance(1, epoch=epoch + 1, loss=loss_sum / seen, acc=correct / seen)
                if stop is not None and stop.is_set():
                    raise KeyboardInterrupt
    finally:
        reporter.finish()
    model.eval()
    return model


def finetune_steps(
    model: nn.Module,
    batches: Iterable[Sequence[torch.Tensor]],
    steps: int,
    *,
    lr: float = 0.01,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Train ``model`` in place for ``steps`` SGD steps on ``batches`` ((images, labels) items,
    cycled when shorter), Nesterov momentum, cosine-decayed from ``lr`` without warm-up: the
    short fine-tune that re-ranks search candidates. Returns ``model`` in eval mode."""
    torch.manual_seed(seed)
    model.to(device).train()
    optimizer, scheduler = sgd_with_cosine(model, TrainConfig(epochs=1, lr=lr, warmup_epochs=0), steps)
    done = 0
    while done < steps:
        before = done
        for batch in batches:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise AutopruneError("fine-tuning needs (images, labels) training batches")
            x, y = batch[0].to(device), batch[1].to(device)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            done += 1
            if done == steps:
                break
        if done == before:
            raise AutopruneError("no training batches to fine-tune on")
    return model.eval()


def sgd_with_cosine(
    model: nn.Module, config: TrainConfig, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Nesterov SGD (no weight decay on biases and norms) with a per-step warm-up + cosine schedule."""
    total_steps = config.epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch) if config.epochs > 1 else 0
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    optimizer = torch.optim.SGD(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        momentum=config.momentum,
        nesterov=True,
    )

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(total_steps - warmup, 1)
        return 0.5 * (1 + math.cos(math.pi * t))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)


def _distillation_loss(logits: torch.Tensor, teacher: nn.Module, x: torch.Tensor, t: float) -> torch.Tensor:
    with torch.no_grad():
        target = F.softmax(teacher(x) / t, dim=1)
    return F.kl_div(F.log_softmax(logits / t, dim=1), target, reduction="batchmean") * t * t


def evaluate_dataset(
    model: nn.Module, dataset: Dataset, device: torch.device | str = "cpu", batch_size: int = 256
) -> Evaluation:
    """:func:`evaluate` over a whole dataset split, unshuffled."""
    return evaluate(model, make_loader(dataset, batch_size), device)
