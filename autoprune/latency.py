"""Wall-clock inference latency, measured the same way everywhere it is reported."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


@torch.inference_mode()
def latency_ms(
    model: nn.Module,
    input_size: int,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    warmup: int = 2,
    repeats: int = 7,
) -> float:
    """Median milliseconds of one forward pass on a random batch (eval mode)."""
    model = model.to(device).eval()
    x = torch.randn(batch_size, 3, input_size, input_size, device=device)
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model(x)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
