"""GPU telemetry: silent and empty without a GPU or NVML; the NVML paths run against a fake pynvml.

Each no-NVML case runs twice, with ``pynvml`` not installed (its import made to fail) and
installed without the driver's library, so the suite means the same whether or not this
machine has NVML.
"""

from __future__ import annotations

import sys
import time
import types
import warnings

import pytest
import torch

from autoprune import telemetry
from autoprune.device import resolve_device
from autoprune.telemetry import GpuMonitor, best_cuda_device


class _FakeNvml(types.ModuleType):
    """Just enough of pynvml: devices with UUIDs, free memory and a utilization that rises per read."""

    def __init__(self, free: list[int], uuids: list[str]) -> None:
        super().__init__("pynvml")
        self.free, self.uuids = free, uuids
        self.util = 0
        self.initialized = 0
        self.handles_by_uuid: list[str] = []

    def nvmlInit(self):
        self.initialized += 1

    def nvmlShutdown(self):
        self.initialized -= 1

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.handles_by_uuid.append(uuid)
        return self.uuids.index(uuid)

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetMemoryInfo(self, handle):
        return types.SimpleNamespace(free=self.free[handle], total=2 * self.free[handle])

    def nvmlDeviceGetUtilizationRates(self, handle):
        self.util += 10
        return types.SimpleNamespace(gpu=self.util, memory=0)


class _BrokenNvml(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("pynvml")

    def nvmlInit(self):
        raise RuntimeError("NVML Shared Library Not Found")


@pytest.fixture(params=["not installed", "no driver library"])
def no_nvml(request, monkeypatch):
    """pynvml unimportable (``sys.modules`` entry None makes ``import`` raise), or importable but failing."""
    monkeypatch.setitem(sys.modules, "pynvml", None if request.param == "not installed" else _BrokenNvml())
    return request.param


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda as if three GPUs were visible, with a fixed peak allocation."""
    props = [types.SimpleNamespace(uuid=f"uuid-{i}") for i in range(3)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props[i])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda i=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda i=None: 96 * 2**20)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: ([5, 9, 7][i], 10))


@pytest.mark.parametrize("nvml", ["not installed", "no driver library", "present"])
def test_monitor_without_gpu_is_silent_and_empty(nvml, monkeypatch, recwarn, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a GPU machine
    fake = {"not installed": None, "no driver library": _BrokenNvml()}.get(nvml, _FakeNvml([1], ["GPU-0"]))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert telemetry.nvml_available() is (nvml == "present")
    with GpuMonitor() as monitor:
        sum(range(1000))
    with GpuMonitor("cpu", interval=0.01) as on_cpu:
        pass
    assert monitor.stats == {} and on_cpu.stats == {}
    assert not recwarn.list
    assert capsys.readouterr() == ("", "")


def test_monitor_lets_the_blocks_exception_through():
    with pytest.raises(ValueError, match="boom"), GpuMonitor() as monitor:
        raise ValueError("boom")
    assert monitor.stats == {}


def test_monitor_samples_utilization_through_nvml(fake_cuda, monkeypatch):
    nvml = _FakeNvml(free=[1, 2, 3], uuids=["GPU-uuid-0", "GPU-uuid-1", "GPU-uuid-2"])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    with GpuMonitor("cuda:1", interval=0.01) as monitor:
        time.sleep(0.1)
    stats = monitor.stats
    assert stats["gpu_peak_memory_mb"] == 96.0
    samples = nvml.util // 10  # one reading per sample, values 10, 20, ..., 10·n
    assert samples >= 3  # at entry, in the background thread, at exit
    assert stats["gpu_util_max"] == 10.0 * samples
    assert stats["gpu_util_mean"] == pytest.approx(5.0 * (samples + 1))
    assert nvml.handles_by_uuid == ["GPU-uuid-1"]  # torch's device 1 found by UUID, not index
    assert nvml.initialized == 0  # shut down again
    with GpuMonitor("cuda:1") as again:  # a monitor is reusable and each block starts fresh
        pass
    assert again.stats["gpu_util_max"] == nvml.util
    assert stats["gpu_util_max"] < again.stats["gpu_util_mean"] < again.stats["gpu_util_max"]


def test_monitor_with_cuda_but_no_nvml_keeps_memory_only(fake_cuda, no_nvml, recwarn):
    assert not telemetry.nvml_available()
    with GpuMonitor(0) as monitor:
        pass
    assert monitor.stats == {"gpu_peak_memory_mb": 96.0}
    assert not recwarn.list


def test_real_pynvml_is_silent(recwarn):
    """Whatever this machine has (pynvml or not, a driver or not), asking never warns or raises."""
    assert telemetry.nvml_available() in (True, False)
    assert telemetry._nvml() is None or torch.cuda.is_available()
    assert not recwarn.list


def test_best_cuda_device_uses_nvml_free_memory(fake_cuda, monkeypatch):
    nvml = _FakeNvml(free=[3, 1, 8], uuids=["GPU-uuid-0", "GPU-uuid-1", "GPU-uuid-2"])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert best_cuda_device() == torch.device("cuda", 2)  # NVML says 2; torch's mem_get_info would say 1
    assert resolve_device("auto") == torch.device("cuda", 2)
    assert nvml.initialized == 0


def test_best_cuda_device_falls_back_to_torch(fake_cuda, no_nvml):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert best_cuda_device() == torch.device("cuda", 1)
