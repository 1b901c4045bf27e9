"""Top-1 accuracy and cross-entropy of a model over batches: the one evaluation loop.

Training, surgery's ``auto`` criterion and the search proxies all score a network
this way; :func:`device_of` is where a module's tensors live.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Evaluation", "ReportFn", "device_of", "evaluate"]

ReportFn = Callable[[int, float], None]
"""Called with (batch index, that batch's accuracy) after each batch; may raise to stop early."""


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    loss: float
    images: int


def device_of(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (else first buffer); the CPU when it has neither."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


@torch.inference_mode()
def evaluate(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[Sequence[torch.Tensor]],
    *,
    device: torch.device | str | None = None,
    report: ReportFn | None = None,
) -> Evaluation:
    """Top-1 accuracy and mean cross-entropy of ``model`` over ``batches``.

    ``model``: a module (run in eval mode, its mode restored afterwards) or any callable
    from images to logits. ``batches``: ``(images, labels, ...)`` items (a DataLoader,
    a list). ``device``: where to move each batch (None: leave it where it is).
    ``report``: see :data:`ReportFn`. An empty ``batches`` scores 0.
    """
    module = model if isinstance(model, nn.Module) else None
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    correct, loss, total = 0, 0.0, 0
    try:
        for step, batch in enumerate(batches):
            x, y = batch[0], batch[1]
            if device is not None:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = model(x)
            hits = (logits.argmax(1) == y).sum().item()
            correct += hits
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            total += y.numel()
            if report is not None:
                report(step, hits / y.numel())
    finally:
        if module is not None:
            module.train(was_training)
    return Evaluation(correct / max(total, 1), loss / max(total, 1), total)
