"""Which implementation runs an op: Triton on CUDA, numba on CPU where it won, torch otherwise.

Precedence: an explicit ``backend=`` argument (other than ``"auto"``), then the
``AUTOPRUNE_KERNELS`` environment variable, then the device of the input.
On CUDA, ``auto`` runs a Triton kernel only where ``benchmarks/gpu_check.py`` measured
it faster than torch/cuDNN on this GPU model, as recorded in the GPU dispatch table
(:func:`gpu_table_path`); unmeasured, the torch/cuDNN path runs. The same table says
whether the search proxy should run the masked executor (:func:`prefer_masked_proxy`).
A backend is used for an op and dtype it has a kernel for; otherwise the torch
path runs. Numba kernels exist only for the ops where they beat torch in
``benchmarks/bench_kernels.py`` (``benchmarks/RESULTS.md``): the BN epilogue, and
the depthwise conv, which ``auto`` uses only on planes of at least 32×32 (an
explicit ``numba`` uses it at any size). Asking for a backend on a device it
cannot run on is an :class:`AutopruneError`.

Triton and numba are imported only when one of their kernels is first used, so
``import autoprune.kernels`` stays cheap on machines without a GPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from autoprune.errors import AutopruneError

ENV_VAR = "AUTOPRUNE_KERNELS"
TABLE_ENV_VAR = "AUTOPRUNE_GPU_TABLE"
TABLE_FORMAT = "autoprune.gpu_dispatch/1"
BACKENDS: tuple[str, ...] = ("triton", "numba", "torch")
OPS: tuple[str, ...] = ("pointwise", "depthwise", "bn_act")

#: Ops with a numba CPU kernel, kept because it beat torch on the CPU (benchmarks/RESULTS.md).
#: The pointwise one lost to torch's conv over the kept channels and was removed.
NUMBA_OPS: frozenset[str] = frozenset({"depthwise", "bn_act"})
#: The numba depthwise kernel beat torch (oneDNN) only on large planes; ``auto`` uses it from here on.
NUMBA_DEPTHWISE_MIN_PIXELS = 32 * 32
_NUMBA_DTYPES = (torch.float32,)
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def requested_backend(backend: str | None = None) -> str:
    """``auto`` or one of :data:`BACKENDS`: the argument if given, else the environment variable."""
    if backend is not None and backend != "auto":
        source = f"backend={backend!r}"
        choice = backend
    else:
        choice = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
        source = f"{ENV_VAR}={os.environ.get(ENV_VAR)!r}"
    if choice not in ("auto", *BACKENDS):
        raise AutopruneError(f"invalid kernel backend {source}: use one of auto, {', '.join(BACKENDS)}")
    return choice


def triton_interpreting() -> bool:
    """True when ``TRITON_INTERPRET=1``: Triton kernels then run on CPU tensors (slowly), for tests."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on")


@cache
def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def gpu_table_path() -> Path:
    """Where the GPU dispatch table is read and written: ``$AUTOPRUNE_GPU_TABLE``, else
    ``$XDG_CACHE_HOME/autoprune/gpu_dispatch.json`` (``~/.cache/autoprune/gpu_dispatch.json``)."""
    explicit = os.environ.get(TABLE_ENV_VAR, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(cache_home) / "autoprune" / "gpu_dispatch.json"


_table_cache: dict[tuple[str, int], dict[str, Any]] = {}


def load_gpu_table(path: Path | None = None) -> dict[str, Any]:
    """The GPU dispatch table ``gpu_check.py`` wrote, or ``{}`` when absent or unreadable.

    Format (``"format": "autoprune.gpu_dispatch/1"``)::

        {"format": ..., "device_name": "NVIDIA H200", "measured": "2025-01-01T00:00:00Z",
         "ops": {"pointwise": {"float32": "triton" | "torch", "float16": ...}, ...},
         "proxy": {"prefer_masked": true | false}}

    Read again only when the file changes (keyed by its modification time).
    """
    path = path or gpu_table_path()
    try:
        key = (str(path), path.stat().st_mtime_ns)
    except OSError:
        return {}
    if key not in _table_cache:
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
        if not isinstance(table, dict) or table.get("format") != TABLE_FORMAT:
            table = {}
        _table_cache.clear()
        _table_cache[key] = table
    return _table_cache[key]


@cache
def _cuda_device_name(index: int) -> str | None:
    try:
        return torch.cuda.get_device_name(index)
    except Exception:  # no driver, bad index: the table cannot apply
        return None


def _table_for(device: torch.device | str | None) -> dict[str, Any]:
    """The table when it was measured on ``device``'s GPU model, else ``{}``."""
    device = torch.device(device if device is not None else "cuda")
    if device.type != "cuda":
        return {}
    table = load_gpu_table()
    if not table:
        return {}
    index = device.index if device.index is not None else 0
    return table if table.get("device_name") == _cuda_device_name(index) else {}


def triton_measured_faster(op: str, x: torch.Tensor) -> bool:
    """Whether the table records Triton beating torch/cuDNN for ``op`` at ``x``'s dtype on its GPU."""
    dtype = str(x.dtype).removeprefix("torch.")
    ops = _table_for(x.device).get("ops")
    return isinstance(ops, dict) and isinstance(ops.get(op), dict) and ops[op].get(dtype) == "triton"


def prefer_masked_proxy(device: torch.device | str) -> bool:
    """Whether the search proxy should run candidates through the masked executor on ``device``.

    False on the CPU (slicing the kept channels is the fast path there) and on a GPU until
    ``gpu_check.py`` measured the masked executor faster than rebuilding the sliced model
    on that GPU model.
    """
    proxy = _table_for(device).get("proxy")
    return isinstance(proxy, dict) and proxy.get("prefer_masked") is True


def _numba_wins(op: str, x: torch.Tensor) -> bool:
    """Whether the measured numba kernel beats torch for ``op`` on ``x`` (see RESULTS.md)."""
    if op not in NUMBA_OPS or x.dtype not in _NUMBA_DTYPES:
        return False
    return op != "depthwise" or x.shape[-2] * x.shape[-1] >= NUMBA_DEPTHWISE_MIN_PIXELS


def resolve_backend(op: str, x: torch.Tensor, backend: str | None = None) -> str:
    """The backend that runs ``op`` on ``x``: ``"triton"``, ``"numba"`` or ``"torch"``."""
    choice = requested_backend(backend)
    if choice == "auto":
        if x.is_cuda and x.dtype in _TRITON_DTYPES and _installed("triton") and triton_measured_faster(op, x):
            return "triton"
        if x.device.type == "cpu" and _numba_wins(op, x) and _installed("numba"):
            return "numba"
        return "torch"
    if choice == "triton":
        if not (x.is_cuda or (x.device.type == "cpu" and triton_interpreting())):
            raise AutopruneError(
                f"Triton kernels run on CUDA tensors, this one is on {x.device}: use backend torch or "
                "numba here (or set TRITON_INTERPRET=1 to interpret the Triton kernels on the CPU)"
            )
        if not _installed("triton"):
            raise AutopruneError("Triton kernels were requested but triton is not installed")
        return "triton" if x.dtype in _TRITON_DTYPES else "torch"
    if choice == "numba":
        if x.device.type != "cpu":
            raise AutopruneError(f"numba kernels run on CPU tensors, this one is on {x.device}")
        if not _installed("numba"):
            raise AutopruneError("numba kernels were requested but numba is not installed")
        return "numba" if op in NUMBA_OPS and x.dtype in _NUMBA_DTYPES else "torch"
    return "torch"


_TRITON_MODULES = ("triton_common", "triton_pointwise", "triton_depthwise", "triton_bn_act")


def triton_module(name: str) -> ModuleType:
    """Import one of this package's Triton modules, compiled for the current interpret mode.

    ``triton.jit`` decides at decoration time whether a kernel is compiled or interpreted,
    so when a module was imported under another ``TRITON_INTERPRET`` (tests flip it, and
    importing a module directly imports it under the current one) all of them are
    re-imported, the shared helpers first. Each records its mode as ``INTERPRETED``.
    """
    interpret = triton_interpreting()
    modules = [importlib.import_module(f"{__package__}.{m}") for m in _TRITON_MODULES]
    if any(getattr(m, "INTERPRETED", None) != interpret for m in modules):
        modules = [importlib.reload(m) for m in modules]
    return modules[_TRITON_MODULES.index(name)]


def numba_module(name: str) -> ModuleType:
    """Import one of this package's numba modules (compiles lazily on first call)."""
    return importlib.import_module(f"{__package__}.{name}")
