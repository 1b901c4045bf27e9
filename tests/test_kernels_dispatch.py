"""Which backend runs an op: device, measured winners (CPU: RESULTS.md; GPU: the dispatch table
gpu_check.py writes), the AUTOPRUNE_KERNELS override, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
import torch

from autoprune import AutopruneError
from autoprune.kernels import dispatch
from autoprune.kernels.dispatch import resolve_backend


def _fake_cuda_tensor(dtype=torch.float32):
    """Enough of a CUDA tensor for dispatch, which looks only at the device and the dtype."""
    return types.SimpleNamespace(
        is_cuda=True, device=torch.device("cuda", 0), dtype=dtype, shape=(1, 4, 8, 8)
    )


@pytest.fixture(autouse=True)
def _no_override(monkeypatch, tmp_path):
    monkeypatch.delenv("AUTOPRUNE_KERNELS", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("AUTOPRUNE_GPU_TABLE", str(tmp_path / "gpu_dispatch.json"))  # none yet
    monkeypatch.setattr(dispatch, "_cuda_device_name", lambda index: "Fake GPU")


def _write_table(tmp_path, **fields):
    table = {"format": dispatch.TABLE_FORMAT, "device_name": "Fake GPU", **fields}
    (tmp_path / "gpu_dispatch.json").write_text(json.dumps(table))


def test_auto_picks_measured_winners_and_torch_on_an_unmeasured_gpu(tmp_path):
    for op in dispatch.OPS:  # nothing measured: torch/cuDNN
        for dtype in (torch.float32, torch.float16, torch.float64):
            assert resolve_backend(op, _fake_cuda_tensor(dtype)) == "torch"
    _write_table(
        tmp_path,
        ops={"pointwise": {"float16": "triton", "float32": "torch"}, "depthwise": {"float32": "triton"}},
    )
    assert resolve_backend("pointwise", _fake_cuda_tensor(torch.float16)) == "triton"
    assert resolve_backend("pointwise", _fake_cuda_tensor()) == "torch"
    assert resolve_backend("depthwise", _fake_cuda_tensor()) == "triton"
    assert resolve_backend("depthwise", _fake_cuda_tensor(torch.float64)) == "torch"  # no kernel
    assert resolve_backend("bn_act", _fake_cuda_tensor()) == "torch"  # not in the table
    big, small = torch.empty(1, 2, 32, 32), torch.empty(1, 2, 8, 8)
    assert resolve_backend("bn_act", small) == "numba"
    assert resolve_backend("depthwise", big) == "numba"
    assert resolve_backend("depthwise", small) == "torch"  # numba lost to oneDNN on small planes
    assert resolve_backend("pointwise", big) == "torch"  # no numba kernel won
    assert resolve_backend("bn_act", small.half()) == "torch"


def test_gpu_table_applies_only_to_its_gpu_model_and_format(tmp_path, monkeypatch):
    _write_table(tmp_path, ops={"bn_act": {"float32": "triton"}}, proxy={"prefer_masked": True})
    assert resolve_backend("bn_act", _fake_cuda_tensor()) == "triton"
    assert dispatch.prefer_masked_proxy("cuda") and dispatch.prefer_masked_proxy(torch.device("cuda", 0))
    assert not dispatch.prefer_masked_proxy("cpu")  # slicing is the CPU's fast path
    monkeypatch.setattr(dispatch, "_cuda_device_name", lambda index: "Other GPU")
    assert resolve_backend("bn_act", _fake_cuda_tensor()) == "torch"
    assert not dispatch.prefer_masked_proxy("cuda")
    monkeypatch.setattr(dispatch, "_cuda_device_name", lambda index: "Fake GPU")
    (tmp_path / "gpu_dispatch.json").write_text("{not json")
    assert dispatch.load_gpu_table() == {} and not dispatch.prefer_masked_proxy("cuda")
    _write_table(tmp_path, format="something/9", proxy={"prefer_masked": True})
    assert not dispatch.prefer_masked_proxy("cuda")


def test_gpu_table_path(monkeypatch, tmp_path):
    assert dispatch.gpu_table_path() == tmp_path / "gpu_dispatch.json"
    monkeypatch.delenv("AUTOPRUNE_GPU_TABLE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert dispatch.gpu_table_path() == tmp_path / "cache" / "autoprune" / "gpu_dispatch.json"


def test_environment_overrides_auto_and_an_argument_overrides_the_environment(monkeypatch):
    x = torch.empty(1, 2, 32, 32)
    monkeypatch.setenv("AUTOPRUNE_KERNELS", "torch")
    assert resolve_backend("bn_act", x) == "torch"
    assert resolve_backend("bn_act", x, "auto") == "torch"
    assert resolve_backend("bn_act", x, "numba") == "numba"
    monkeypatch.setenv("AUTOPRUNE_KERNELS", " NUMBA ")
    assert resolve_backend("depthwise", torch.empty(1, 2, 4, 4)) == "numba"  # forced: used at any size
    assert resolve_backend("pointwise", x) == "torch"  # no numba kernel for this op


def test_invalid_override_is_a_user_error(monkeypatch):
    monkeypatch.setenv("AUTOPRUNE_KERNELS", "cuda")
    with pytest.raises(AutopruneError, match="AUTOPRUNE_KERNELS='cuda'.*auto, triton, numba, torch"):
        resolve_backend("bn_act", torch.empty(1, 1, 1, 1))
    with pytest.raises(AutopruneError, match="backend='fast'"):
        resolve_backend("bn_act", torch.empty(1, 1, 1, 1), "fast")


def test_backend_on_the_wrong_device_is_a_user_error(monkeypatch):
    with pytest.raises(AutopruneError, match="TRITON_INTERPRET=1"):
        resolve_backend("pointwise", torch.empty(1, 1, 1, 1), "triton")
    with pytest.raises(AutopruneError, match="numba kernels run on CPU tensors"):
        resolve_backend("bn_act", _fake_cuda_tensor(), "numba")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend("pointwise", torch.empty(1, 1, 1, 1), "triton") == "triton"


def test_importing_the_kernels_loads_neither_numba_nor_triton_kernels():
    code = (
        "import sys, autoprune.kernels, autoprune.executor\n"
        "loaded = [m for m in sys.modules if m == 'numba' or m.startswith(('autoprune.kernels.triton',"
        " 'autoprune.kernels.numba'))]\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
