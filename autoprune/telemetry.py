"""GPU telemetry through NVML (``pynvml``) and torch; silent where either is missing.

:class:`GpuMonitor` wraps one unit of work (a search trial) and records its peak
GPU memory (torch's allocator) and mean GPU utilization (NVML, sampled in a
background thread). :func:`best_cuda_device` is what ``--device auto`` picks.
Nothing here raises or prints because telemetry is unavailable: without CUDA the
figures are simply absent, without NVML only the NVML ones are.
"""

from __future__ import annotations

import contextlib
import threading
from types import ModuleType, TracebackType
from typing import Any

import torch


def _nvml() -> ModuleType | None:
    """The initialized ``pynvml`` module, or None when the package or the driver library is missing."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # ImportError, NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, ...
        return None


def _nvml_shutdown(nvml: ModuleType) -> None:
    with contextlib.suppress(Exception):
        nvml.nvmlShutdown()


def nvml_available() -> bool:
    """Whether NVML answers here (``pynvml`` installed and the driver's library loaded)."""
    nvml = _nvml()
    if nvml is None:
        return False
    _nvml_shutdown(nvml)
    return True


def _nvml_handle(nvml: ModuleType, index: int) -> Any:
    """The NVML handle of torch's CUDA device ``index``.

    Matched by UUID because ``CUDA_VISIBLE_DEVICES`` renumbers torch's devices but not
    NVML's; by index when the UUID is unknown.
    """
    uuid = None
    with contextlib.suppress(Exception):
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    if uuid is not None:
        try:
            text = str(uuid)
            return nvml.nvmlDeviceGetHandleByUUID(text if text.startswith("GPU-") else f"GPU-{text}")
        except Exception:
            pass
    return nvml.nvmlDeviceGetHandleByIndex(index)


def best_cuda_device() -> torch.device:
    """The visible CUDA device with the most free memory (NVML's count when it is available)."""
    count = torch.cuda.device_count()
    if count <= 1:
        return torch.device("cuda", 0)
    free: list[int] | None = None
    nvml = _nvml()
    if nvml is not None:
        try:
            free = [int(nvml.nvmlDeviceGetMemoryInfo(_nvml_handle(nvml, i)).free) for i in range(count)]
        except Exception:
            free = None
        finally:
            _nvml_shutdown(nvml)
    if free is None:
        free = [torch.cuda.mem_get_info(i)[0] for i in range(count)]
    return torch.device("cuda", max(range(count), key=free.__getitem__))


def _cuda_index(device: torch.device | str | int | None) -> int | None:
    """Torch's CUDA index for ``device``, or None when it is not a usable CUDA device."""
    try:
        if not torch.cuda.is_available():
            return None
        if device is None:
            return torch.cuda.current_device()
        if isinstance(device, int):
            return device
        device = torch.device(device)
        if device.type != "cuda":
            return None
        return device.index if device.index is not None else torch.cuda.current_device()
    except Exception:
        return None


class GpuMonitor:
    """Record a block's peak GPU memory and mean GPU utilization.

        with GpuMonitor(device) as monitor:
            run_trial()
        for key, value in monitor.stats.items():
            trial.set_user_attr(key, value)

    ``stats`` is filled when the block exits: ``gpu_peak_memory_mb`` (torch's peak
    allocation on the device during the block) when CUDA is available, and
    ``gpu_util_mean`` / ``gpu_util_max`` (percent, sampled every ``interval`` seconds
    and once at each end) when NVML also is. It stays empty on a machine without a
    GPU. Exceptions from the block propagate; telemetry itself never raises.
    """

    def __init__(self, device: torch.device | str | int | None = None, interval: float = 0.2) -> None:
        self.device = device
        self.interval = interval
        self.stats: dict[str, float] = {}
        self._index: int | None = None
        self._nvml: ModuleType | None = None
        self._handle: Any = None
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        with contextlib.suppress(Exception):
            self._samples.append(float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> GpuMonitor:
        self.stats = {}
        self._samples = []
        self._index = _cuda_index(self.device)
        if self._index is None:
            return self
        with contextlib.suppress(Exception):
            torch.cuda.reset_peak_memory_stats(self._index)
        self._nvml = _nvml()
        if self._nvml is not None:
            try:
                self._handle = _nvml_handle(self._nvml, self._index)
            except Exception:
                _nvml_shutdown(self._nvml)
                self._nvml = None
        if self._nvml is not None:
            self._sample()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="autoprune-gpu-monitor", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._index is None:
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if self._nvml is not None:
            self._sample()
            _nvml_shutdown(self._nvml)
            self._nvml = None
            self._handle = None
        with contextlib.suppress(Exception):
            self.stats["gpu_peak_memory_mb"] = torch.cuda.max_memory_allocated(self._index) / 2**20
        if self._samples:
            self.stats["gpu_util_mean"] = sum(self._samples) / len(self._samples)
            self.stats["gpu_util_max"] = max(self._samples)
