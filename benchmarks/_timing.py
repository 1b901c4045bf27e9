"""Timing shared by the benchmark scripts (bench_apply, bench_kernels, bench_latency, gpu_check)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def time_cuda(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median GPU time of ``fn`` in milliseconds (CUDA events), after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def timed(fn, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """(median, minimum) wall time of ``fn`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


@torch.inference_mode()
def paired_latency(
    a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor, repeats: int
) -> tuple[list[float], list[float]]:
    """Every run's seconds of ``a`` and of ``b``, timed alternately so both see the same load."""
    a.eval(), b.eval()
    for _ in range(2):
        a(x), b(x)
    ta, tb = [], []
    for _ in range(repeats):
        for model, times in ((a, ta), (b, tb)):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return ta, tb


def paired_ratio(
    dense: torch.nn.Module, pruned: torch.nn.Module, x: torch.Tensor, rounds: int
) -> tuple[float, float]:
    """(ratio of minima, dense min ms) of pruned vs dense, timed alternately, channels_last."""
    a = dense.eval().to(memory_format=torch.channels_last)
    b = pruned.eval().to(memory_format=torch.channels_last)
    ta, tb = paired_latency(a, b, x.contiguous(memory_format=torch.channels_last), rounds)
    return min(tb) / min(ta), min(ta) * 1e3
