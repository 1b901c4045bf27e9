"""GPU telemetry through NVML (``pynvml``); silent where NVML is missing."""

from __future__ import annotations

import torch


def best_cuda_device() -> torch.device:
    """The visible CUDA device with the most free memory (device 0 without NVML)."""
    count = torch.cuda.device_count()
    if count <= 1:
        return torch.device("cuda", 0)
    free = [torch.cuda.mem_get_info(i)[0] for i in range(count)]
    return torch.device("cuda", max(range(count), key=free.__getitem__))
