"""Resolve ``--device`` strings to a :class:`torch.device`."""

from __future__ import annotations

import re

import torch

from autoprune.errors import AutopruneError

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N`` into a device, checking that it exists.

    ``auto`` picks CUDA when available (the GPU with the most free memory, see
    :func:`autoprune.telemetry.best_cuda_device`) and the CPU otherwise.
    """
    if isinstance(spec, torch.device):
        return spec
    spec = spec.strip().lower()
    if not _DEVICE_RE.match(spec):
        raise AutopruneError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        from autoprune.telemetry import best_cuda_device

        return best_cuda_device()
    if not torch.cuda.is_available():
        raise AutopruneError(f"device {spec!r} requested but CUDA is not available here; use --device cpu")
    index = int(spec.split(":")[1]) if ":" in spec else 0
    if index >= torch.cuda.device_count():
        raise AutopruneError(
            f"device {spec!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible"
        )
    return torch.device("cuda", index)
