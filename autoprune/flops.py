"""FLOPs as autoprune defines them: multiply-adds (MACs) of conv and linear layers.

One MAC is one multiply and one add; norms, activations, pooling and residual
adds are not counted (they are a few percent at most and scale with the same
channel counts). :func:`measured_macs` counts them on a real forward pass with
PyTorch's ``FlopCounterMode`` (which reports 2 FLOPs per MAC); the analytic
cost model in :mod:`autoprune.cost` is tested against it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

_COUNTED = ("convolution", "mm", "addmm", "bmm", "baddbmm")


def counted_macs(fn: Callable[[], Any]) -> int:
    """Conv + matmul multiply-adds FlopCounterMode sees while ``fn`` runs (no gradients)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    total = 0
    for op, count in counter.get_flop_counts()["Global"].items():
        name = str(op).split(".")[1] if "." in str(op) else str(op)
        if name in _COUNTED:
            total += count
    return total // 2


def measured_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Conv + linear multiply-adds of one eval-mode forward pass on ``example_input`` (batch 1 preferred)."""
    was_training = model.training
    model.eval()
    try:
        return counted_macs(lambda: model(example_input))
    finally:
        model.train(was_training)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
