"""Timing on the target device: the whole-model timer, the target's identity, the layer runner
that times many small layers round-robin, and stair detection (the channel period of a runtime's
kernels). See :mod:`autoprune.latency`."""

from __future__ import annotations

import importlib.util
import io
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoprune.errors import AutopruneError

RUNTIMES = ("torch", "onnxruntime")
ROUNDS = 5
"""Timing rounds: every grid point of a shape is timed once per round, in turn (so a burst of
load on a shared machine hits all points alike); a point's time is its minimum over rounds."""
INNER = 1
"""Back-to-back calls per timed sample on the CPU, after one untimed call (warm caches)."""
STAIRS = (32, 16, 8)
FLATNESS = 0.35
"""A stair period p is accepted when the rise of time inside stairs is at most this fraction
of the rise between stairs (see :func:`detect_stair`)."""


# -- whole-model timer ---------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def latency_ms(
    model: nn.Module,
    input_size: int,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    warmup: int = 2,
    repeats: int = 7,
    channels_last: bool = False,
    reduce: str = "median",
) -> float:
    """Milliseconds of one forward pass on a random batch (eval mode): ``reduce`` is
    ``median`` or ``min`` over ``repeats`` runs (the minimum is the better estimate of
    uncontended speed on a shared machine)."""
    device = torch.device(device)
    model = model.to(device).eval()
    x = torch.randn(batch_size, 3, input_size, input_size, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        model(x)
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return min(times) if reduce == "min" else statistics.median(times)


# -- target identity -----------------------------------------------------------------


def device_name(device: torch.device | str) -> str:
    """The CPU model (from /proc/cpuinfo) or the CUDA device's name."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def allocator() -> str:
    """The CPU memory allocator this process runs with, as far as it changes latency: a
    preloaded jemalloc or tcmalloc, else glibc with any ``MALLOC_*_`` thresholds set. glibc's
    defaults hand large activation buffers back to the OS after each use, so every call
    page-faults them anew: measured, mobilenetv2 at batch 32 ran ~1.8x slower than with
    ``MALLOC_MMAP_THRESHOLD_`` raised (benchmarks/RESULTS.md, Latency)."""
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in preload:
            return name
    tuned = [
        f"{k}={os.environ[k]}" for k in sorted(os.environ) if k.startswith("MALLOC_") and k.endswith("_")
    ]
    return " ".join(["glibc", *tuned])


def check_runtime(runtime: str) -> None:
    """One-line error unless ``runtime`` is known and installed."""
    if runtime not in RUNTIMES:
        raise AutopruneError(f"unknown --runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    if runtime == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
        raise AutopruneError("--runtime onnxruntime needs the onnxruntime package (pip install onnxruntime)")


class OrtModule:
    """``module`` exported to ONNX (opset 17, in memory) and run by ONNX Runtime on the CPU with
    ``threads`` intra-op threads and every graph optimization; called like the module, with the
    input as a NumPy array."""

    def __init__(self, module: nn.Module, x: torch.Tensor, threads: int) -> None:
        import onnxruntime as ort

        buffer = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, on purpose
            torch.onnx.export(
                module,
                (x,),
                buffer,
                input_names=["input"],
                output_names=["output"],
                opset_version=17,
                dynamo=False,
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {"input": x})


# -- layer runner --------------------------------------------------------------------


_ACT_MODULES: dict[str, Callable[[tuple[float, ...]], nn.Module]] = {
    "relu": lambda s: nn.ReLU(),
    "relu6": lambda s: nn.ReLU6(),
    "hardtanh": lambda s: nn.Hardtanh(*s) if s else nn.Hardtanh(),
    "hardswish": lambda s: nn.Hardswish(),
}


class Runner:
    """Builds a layer at given widths and times many such layers round-robin on one device."""

    def __init__(self, device: torch.device, batch_size: int, rounds: int, runtime: str = "torch") -> None:
        if runtime == "onnxruntime" and device.type != "cpu":
            raise AutopruneError(f"--runtime onnxruntime times on the CPU, not on {device}")
        self.device = device
        self.batch = batch_size
        self.rounds = rounds
        self.runtime = runtime
        self.gen = torch.Generator().manual_seed(0)

    def _runnable(self, module: nn.Module, x: torch.Tensor) -> tuple[Any, Any]:
        """What :meth:`time` calls: the module and its input on the device (channels_last on the
        CPU), or the module exported to ONNX Runtime and a NumPy input."""
        module, x = module.eval().to(self.device), x.to(self.device)
        if self.runtime == "onnxruntime":
            return OrtModule(module, x, torch.get_num_threads()), x.numpy()
        if self.device.type == "cpu" and x.dim() == 4:
            module = module.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        return module, x

    def build(self, spec: dict[str, Any], cin: int, cout: int) -> tuple[Any, Any]:
        layers: list[nn.Module] = []
        if spec["kind"] == "linear":
            layers.append(nn.Linear(cin, cout, bias=spec["bias"]))
            x = torch.randn(self.batch, *spec["lead"], cin, generator=self.gen)
        else:
            groups = cin if spec["kind"] == "depthwise" else spec["groups"]
            layers.append(
                nn.Conv2d(
                    cin,
                    cout,
                    tuple(spec["kernel"]),
                    tuple(spec["stride"]),
                    tuple(spec["padding"]),
                    tuple(spec["dilation"]),
                    groups,
                    bias=spec["bias"],
                )
            )
            if spec["bn"]:
                bn = nn.BatchNorm2d(cout)
                bn.running_var.uniform_(0.5, 2.0, generator=self.gen)
                layers.append(bn)
            x = torch.randn(self.batch, cin, *spec["hw"], generator=self.gen)
        if spec["act"]:
            layers.append(_ACT_MODULES[spec["act"][0]](tuple(spec["act"][1:])))
        return self._runnable(nn.Sequential(*layers), x)

    def whole(self, model: nn.Module, input_size: int) -> tuple[Any, Any]:
        """A whole network and a random input batch, as :meth:`time` takes them (prepared as
        the layers are: channels_last on the CPU, or exported to ONNX Runtime)."""
        return self._runnable(model, torch.randn(self.batch, 3, input_size, input_size, generator=self.gen))

    @torch.inference_mode()
    def time(self, cases: list[tuple[Any, Any]], factor: int = 1) -> list[float]:
        """Minimum ms of each case over ``factor * rounds`` rounds, the cases taken in turn each round."""
        for module, x in cases:
            module(x)
            module(x)
        best = [math.inf] * len(cases)
        cuda = self.device.type == "cuda"
        for _ in range(self.rounds * factor):
            for i, (module, x) in enumerate(cases):
                if cuda:
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    module(x)
                    end.record()
                    end.synchronize()
                    ms = start.elapsed_time(end)
                else:
                    module(x)  # warm: in a network the layer's input is fresh in cache
                    t0 = time.perf_counter()
                    for _ in range(INNER):
                        module(x)
                    ms = (time.perf_counter() - t0) * 1e3 / INNER
                best[i] = min(best[i], ms)
        return best


def detect_stair(widths: list[int], ms: list[float]) -> int:
    """The channel period of a latency staircase (1 when time grows smoothly).

    ``widths`` step evenly. For each candidate p in :data:`STAIRS` (a multiple of the step, at
    most half the range), points are grouped into stairs by ``ceil(w / p)``. Inside a stair the
    rise is the fastest time of its upper half minus that of its lower half (minima, so one
    slow outlier on a loaded machine does not count); p is a stair period when those rises
    sum to at most :data:`FLATNESS` times the rise from the first stair to the last. The
    largest such p wins.
    """
    w = np.asarray(widths)
    t = np.asarray(ms, dtype=np.float64)
    step = int(w[1] - w[0]) if len(w) > 1 else 1
    for p in STAIRS:
        if p % step or p <= step or 2 * p > w[-1]:
            continue
        stair = np.ceil(w / p).astype(int)
        full = [i for i in np.unique(stair) if np.sum(stair == i) == p // step]
        if len(full) < 2:
            continue
        within = 0.0
        for i in full:
            values = t[stair == i]
            half = len(values) // 2
            within += max(0.0, float(values[half:].min() - values[:half].min()))
        rise = float(t[stair == full[-1]].min() - t[stair == full[0]].min())
        if rise > 0 and within <= FLATNESS * rise:
            return p
    return 1
