"""Measured latency: a wall-clock timer, per-layer latency tables, and a vectorized latency model.

* :func:`latency_ms`: one forward pass of a whole model, timed the same way everywhere
  it is reported (minimum or median over repeats).
* :func:`build_latency_table`: every prunable layer of a model, i.e. each conv chain
  ``conv [→ BN] [→ activation]`` as :func:`autoprune.fx.conv_chains` finds it (and every
  linear layer), timed on the target device with the real runtime (torch eager;
  channels_last on the CPU, CUDA events on a GPU) at a small grid of (in, out) widths.
  Layers of identical shape share one set of timings. The grid along an axis is made
  of multiples of that axis's *stair*: the channel period of the runtime's kernels
  (oneDNN blocks output channels by 16 on AVX-512), found by a fine width scan of one
  representative layer per kind (1×1, k×k, depthwise, linear). The non-prunable
  remainder (pools, residual adds, the ops outside chains) is the dense model's
  measured latency minus the sum of its layers' times, at least 0.
* :class:`LatencyTable`: the table as JSON (``"format": "autoprune.latency_table/1"``) with
  the device name, runtime and versions, threads, batch size and date; a table made on
  another device or runtime is refused (:meth:`LatencyTable.check_target`) unless forced.
  Times are monotone in width by construction (cumulative max along each axis), and
  interpolation is monotone too: a width is first raised to the top of its stair, then
  interpolated linearly between grid points.
* :class:`LatencyModel`: the predicted latency of many plans at once, like
  :class:`autoprune.cost.CostModel`: a layer's in-width is its input groups' channels, its
  out-width its output groups', read from the space's resolved layers.
* :func:`table_round_to`: per group, the channel multiple the table's stairs prefer.
"""

from __future__ import annotations

import copy
import datetime as _dt
import importlib.util
import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from autoprune.errors import AutopruneError

if TYPE_CHECKING:
    from autoprune.space import PruningSpace

FORMAT = "autoprune.latency_table/1"
RUNTIMES = ("torch", "onnxruntime")
MAX_POINTS = 5
"""Grid points per axis at most (the full width and the first stair are always among them)."""
ROUNDS = 5
"""Timing rounds: every grid point of a shape is timed once per round, in turn (so a burst of
load on a shared machine hits all points alike); a point's time is its minimum over rounds."""
INNER = 1
"""Back-to-back calls per timed sample on the CPU, after one untimed call (warm caches)."""
SCAN_STEP = 4
SCAN_MAX = 64
SCAN_ROUNDS_FACTOR = 2
CALIBRATION_ROUNDS_FACTOR = 3
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


def check_runtime(runtime: str) -> None:
    """One-line error unless ``runtime`` is known and installed."""
    if runtime not in RUNTIMES:
        raise AutopruneError(f"unknown --runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    if runtime == "onnxruntime":
        if importlib.util.find_spec("onnxruntime") is None:
            raise AutopruneError(
                "--runtime onnxruntime needs the onnxruntime package (pip install onnxruntime)"
            )
        raise AutopruneError("--runtime onnxruntime is not implemented yet; use --runtime torch")


# -- the table -----------------------------------------------------------------------


@dataclass
class ShapeTiming:
    """Times (ms) of one layer shape on a grid of (in, out) widths; ``in_full``/``out_full`` are
    the dense widths, ``in_stair``/``out_stair`` the stair periods, ``tied``: depthwise (in = out)."""

    spec: dict[str, Any]
    ins: list[int]
    outs: list[int]
    ms: np.ndarray  # (len(ins), len(outs)), monotone along both axes
    in_stair: int = 1
    out_stair: int = 1

    @property
    def tied(self) -> bool:
        return self.spec["kind"] == "depthwise"

    @property
    def dense_ms(self) -> float:
        return float(self.ms[-1, -1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "ins": self.ins,
            "outs": self.outs,
            "in_stair": self.in_stair,
            "out_stair": self.out_stair,
            "ms": np.round(self.ms, 5).tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShapeTiming:
        ms = np.asarray(d["ms"], dtype=np.float64)
        if ms.shape != (len(d["ins"]), len(d["outs"])):
            raise ValueError("grid and times disagree")
        return cls(
            d["spec"],
            [int(v) for v in d["ins"]],
            [int(v) for v in d["outs"]],
            ms,
            int(d["in_stair"]),
            int(d["out_stair"]),
        )

    def interpolate(self, w_in: np.ndarray, w_out: np.ndarray) -> np.ndarray:
        """Times at widths (any equal shapes), monotone in both: stair ceiling, then bilinear."""
        w_out = _stair_ceil(w_out, self.out_stair, self.outs[-1])
        w_in = w_out if self.tied else _stair_ceil(w_in, self.in_stair, self.ins[-1])
        i0, i1, fi = _bracket(np.asarray(self.ins, dtype=np.float64), w_in)
        o0, o1, fo = _bracket(np.asarray(self.outs, dtype=np.float64), w_out)
        m = self.ms
        top = m[i0, o0] * (1 - fo) + m[i0, o1] * fo
        bottom = m[i1, o0] * (1 - fo) + m[i1, o1] * fo
        return top * (1 - fi) + bottom * fi


def _stair_ceil(w: np.ndarray, stair: int, full: int) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    return np.minimum(np.ceil(w / stair) * stair, full) if stair > 1 else w


def _bracket(grid: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(grid) == 1:
        zeros = np.zeros(np.shape(w), dtype=np.int64)
        return zeros, zeros, np.zeros(np.shape(w))
    hi = np.clip(np.searchsorted(grid, w, side="left"), 1, len(grid) - 1)
    lo = hi - 1
    frac = np.clip((w - grid[lo]) / (grid[hi] - grid[lo]), 0.0, 1.0)
    return lo, hi, frac


@dataclass
class LatencyTable:
    """Per-layer latency grids of one model on one device and runtime (see the module docstring)."""

    arch: str | None
    input_size: int
    device: str
    device_name: str
    runtime: str
    versions: dict[str, str]
    threads: int
    batch_size: int
    date: str
    dense_ms: float
    remainder_ms: float
    stairs: dict[str, dict[str, int]]
    layers: list[dict[str, Any]]  # {"name": module, "shape": key}, one per call, graph order
    shapes: dict[str, ShapeTiming]
    layer_scale: float = 1.0
    """Applied to every layer time when the layers alone exceeded the dense latency (then the
    remainder is 0 and the dense prediction still equals the measured dense latency)."""
    build_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    # -- json ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "arch": self.arch,
            "input_size": self.input_size,
            "device": self.device,
            "device_name": self.device_name,
            "runtime": self.runtime,
            "versions": self.versions,
            "threads": self.threads,
            "batch_size": self.batch_size,
            "date": self.date,
            "dense_ms": round(self.dense_ms, 5),
            "remainder_ms": round(self.remainder_ms, 5),
            "layer_scale": round(self.layer_scale, 6),
            "stairs": self.stairs,
            "build_s": round(self.build_s, 2),
            "layers": self.layers,
            "shapes": {k: s.to_dict() for k, s in self.shapes.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "latency table") -> LatencyTable:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise AutopruneError(f"{source} is not a latency table (format {got!r}, expected {FORMAT!r})")
        try:
            return cls(
                arch=d["arch"],
                input_size=int(d["input_size"]),
                device=str(d["device"]),
                device_name=str(d["device_name"]),
                runtime=str(d["runtime"]),
                versions=dict(d["versions"]),
                threads=int(d["threads"]),
                batch_size=int(d["batch_size"]),
                date=str(d["date"]),
                dense_ms=float(d["dense_ms"]),
                remainder_ms=float(d["remainder_ms"]),
                layer_scale=float(d.get("layer_scale", 1.0)),
                stairs={k: {a: int(p) for a, p in v.items()} for k, v in d["stairs"].items()},
                layers=[{"name": str(e["name"]), "shape": str(e["shape"])} for e in d["layers"]],
                shapes={k: ShapeTiming.from_dict(v) for k, v in d["shapes"].items()},
                build_s=float(d.get("build_s", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AutopruneError(f"{source} is malformed ({type(exc).__name__}: {exc})") from None

    def save(self, path: str | Path) -> Path:
        from autoprune.io import write_json

        path = Path(path)
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        from autoprune.io import read_json

        return cls.from_dict(read_json(path, "latency table"), str(path))

    # -- identity -----------------------------------------------------------------

    def check_target(
        self, device: torch.device | str, runtime: str = "torch", *, force: bool = False
    ) -> None:
        """Refuse (one line) a table measured on another device model or runtime, unless ``force``."""
        if force:
            return
        here = device_name(device)
        if self.device_name != here or self.runtime != runtime:
            raise AutopruneError(
                f"the latency table was measured on {self.device_name!r} with {self.runtime}, not on "
                f"{here!r} with {runtime}; build one here (autoprune latency-table) or pass --force"
            )

    def describe(self) -> str:
        return (
            f"{self.arch} at {self.input_size}px on {self.device_name} ({self.device}, {self.runtime}, "
            f"{self.threads} thread(s), batch {self.batch_size}), {self.date}"
        )


# -- building ------------------------------------------------------------------------


_ACT_MODULES: dict[str, Callable[[tuple[float, ...]], nn.Module]] = {
    "relu": lambda s: nn.ReLU(),
    "relu6": lambda s: nn.ReLU6(),
    "hardtanh": lambda s: nn.Hardtanh(*s) if s else nn.Hardtanh(),
    "hardswish": lambda s: nn.Hardswish(),
}


def _layer_specs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, dict[str, Any]]]:
    """(module name, spec) of every conv chain and linear layer, one per call, in graph order."""
    from autoprune.fx import ACTIVATION_TABLE, activation_of, conv_chains, propagate, trace
    from autoprune.fx.fusion import sole_user

    gm, _ = trace(model)
    values = propagate(gm, (example,))
    modules = dict(gm.named_modules())
    acts = {k.name for k in ACTIVATION_TABLE}
    found: list[tuple[int, str, dict[str, Any]]] = []
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    for chain in conv_chains(gm, norms=True, activations=acts):
        conv = modules[chain.conv.target]
        if not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            continue
        shape = tuple(values[chain.source].shape) if isinstance(chain.source, torch.fx.Node) else None
        if shape is None or len(shape) != 4:
            continue
        depthwise = conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1
        spec = {
            "kind": "depthwise" if depthwise else ("conv1x1" if conv.kernel_size == (1, 1) else "convkxk"),
            "cin": conv.in_channels,
            "cout": conv.out_channels,
            "kernel": list(conv.kernel_size),
            "stride": list(conv.stride),
            "padding": list(conv.padding),
            "dilation": list(conv.dilation),
            "groups": 0 if depthwise else conv.groups,
            "bias": conv.bias is not None,
            "hw": list(shape[2:]),
            "bn": chain.bn is not None,
            "act": None if chain.activation is None else [chain.activation.name, *chain.activation.scalars],
        }
        found.append((order[chain.conv], str(chain.conv.target), spec))
    for node in gm.graph.nodes:
        if node.op != "call_module" or type(modules.get(node.target)) is not nn.Linear:
            continue
        lin = modules[node.target]
        shape = (
            tuple(values[node.args[0]].shape) if node.args and isinstance(node.args[0], torch.fx.Node) else ()
        )
        user = sole_user(node)
        act = activation_of(user, modules) if user is not None else None
        spec = {
            "kind": "linear",
            "cin": lin.in_features,
            "cout": lin.out_features,
            "bias": lin.bias is not None,
            "lead": [int(s) for s in shape[1:-1]],
            "act": None if act is None or act.name not in acts else [act.name, *act.scalars],
        }
        found.append((order[node], str(node.target), spec))
    return [(name, spec) for _, name, spec in sorted(found, key=lambda t: t[0])]


def _spec_key(spec: dict[str, Any]) -> str:
    parts = [spec["kind"], f"{spec['cin']}>{spec['cout']}"]
    if spec["kind"] == "linear":
        parts.append(f"lead{'x'.join(map(str, spec['lead'])) or '-'}")
    else:
        parts += [
            f"k{'x'.join(map(str, spec['kernel']))}",
            f"s{'x'.join(map(str, spec['stride']))}",
            f"p{'x'.join(map(str, spec['padding']))}",
            f"d{'x'.join(map(str, spec['dilation']))}",
            f"g{spec['groups']}",
            f"hw{'x'.join(map(str, spec['hw']))}",
            "bn" if spec["bn"] else "nobn",
        ]
    parts.append("bias" if spec["bias"] else "nobias")
    parts.append(":".join(str(a) for a in spec["act"]) if spec["act"] else "noact")
    return " ".join(parts)


class _Runner:
    """Builds a layer at given widths and times many such layers round-robin on one device."""

    def __init__(self, device: torch.device, batch_size: int, rounds: int) -> None:
        self.device = device
        self.batch = batch_size
        self.rounds = rounds
        self.gen = torch.Generator().manual_seed(0)

    def build(self, spec: dict[str, Any], cin: int, cout: int) -> tuple[nn.Module, torch.Tensor]:
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
        module = nn.Sequential(*layers).eval().to(self.device)
        x = x.to(self.device)
        if self.device.type == "cpu" and x.dim() == 4:
            module = module.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        return module, x

    @torch.inference_mode()
    def time(self, cases: list[tuple[nn.Module, torch.Tensor]], factor: int = 1) -> list[float]:
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


def _axis_grid(full: int, stair: int, unit: int, max_points: int) -> list[int]:
    """Multiples of ``stair`` (and of ``unit``, for grouped convs) up to ``full``, thinned to
    ``max_points`` evenly spaced ones; the first stair and ``full`` are always in."""
    p = math.lcm(max(stair, 1), max(unit, 1))
    if full <= p:
        return [full]
    points = list(range(p, full + 1, p))
    if points[-1] != full:
        points.append(full)
    if len(points) > max_points:
        idx = np.unique(np.round(np.linspace(0, len(points) - 1, max_points)).astype(int))
        points = [points[i] for i in idx]
    return points


def build_latency_table(
    model: nn.Module,
    input_size: int,
    *,
    arch: str | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 1,
    threads: int | None = None,
    runtime: str = "torch",
    rounds: int = ROUNDS,
    max_points: int = MAX_POINTS,
    progress: Callable[[int, int], None] | None = None,
) -> LatencyTable:
    """Time every prunable layer of ``model`` on a width grid (see the module docstring).

    ``threads``: torch intra-op threads during the measurement (default: the current setting;
    restored afterwards). ``progress(done, total)`` is called after each layer shape.
    """
    check_runtime(runtime)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AutopruneError(f"--device {device} but CUDA is not available here")
    if batch_size < 1 or rounds < 1 or max_points < 2:
        raise AutopruneError("batch size and rounds must be >= 1, max_points >= 2")
    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    threads = threads or previous_threads
    torch.set_num_threads(threads)
    try:
        specs, stairs, shapes, dense = _measure_layers(
            model, input_size, _Runner(device, batch_size, rounds), max_points, progress
        )
    finally:
        torch.set_num_threads(previous_threads)
    layers = [{"name": name, "shape": _spec_key(spec)} for name, spec in specs]
    layer_sum = sum(shapes[e["shape"]].dense_ms for e in layers)
    versions = {"torch": torch.__version__}
    if device.type == "cuda":
        versions["cuda"] = str(torch.version.cuda)
    return LatencyTable(
        arch=arch,
        input_size=int(input_size),
        device=str(device),
        device_name=device_name(device),
        runtime=runtime,
        versions=versions,
        threads=threads,
        batch_size=batch_size,
        date=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        dense_ms=dense,
        remainder_ms=max(0.0, dense - layer_sum),
        layer_scale=min(1.0, dense / layer_sum) if layer_sum > 0 else 1.0,
        stairs=stairs,
        layers=layers,
        shapes=shapes,
        build_s=time.perf_counter() - started,
    )


def _measure_layers(
    model: nn.Module,
    input_size: int,
    runner: _Runner,
    max_points: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, dict[str, int]], dict[str, ShapeTiming], float]:
    """The layer specs of ``model``, the stairs, each distinct layer shape's width grid timed
    and calibrated against the dense model, and the dense latency."""
    model = copy.deepcopy(model).cpu().eval()
    example = torch.zeros(1, 3, input_size, input_size)
    specs = _layer_specs(model, example)
    unique: dict[str, dict[str, Any]] = {}
    for _, spec in specs:
        unique.setdefault(_spec_key(spec), spec)
    stairs = _measure_stairs(runner, list(unique.values()))
    shapes: dict[str, ShapeTiming] = {}
    for done, (key, spec) in enumerate(unique.items(), 1):
        shapes[key] = _time_shape(runner, spec, stairs, max_points)
        if progress is not None:
            progress(done, len(unique))
    dense, calibrated = _calibrate(runner, model.to(runner.device), input_size, unique)
    for key, ms in calibrated.items():  # the grids' shape from their own rounds, their level from here
        shapes[key].ms = shapes[key].ms * (ms / shapes[key].dense_ms)
    return specs, stairs, shapes, dense


def _calibrate(
    runner: _Runner, model: nn.Module, input_size: int, unique: dict[str, dict[str, Any]]
) -> tuple[float, dict[str, float]]:
    """The dense model and every dense layer shape timed in turn, in the same rounds (so the
    remainder, dense minus layers, compares times taken under the same machine load)."""
    x = torch.randn(runner.batch, 3, input_size, input_size, generator=runner.gen).to(runner.device)
    if runner.device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    keys = list(unique)
    cases = [(model, x)] + [runner.build(unique[k], unique[k]["cin"], unique[k]["cout"]) for k in keys]
    times = runner.time(cases, CALIBRATION_ROUNDS_FACTOR)
    return times[0], dict(zip(keys, times[1:], strict=True))


def _measure_stairs(runner: _Runner, specs: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per layer kind, the stair period of each axis, from a fine width scan of its largest layer."""
    stairs: dict[str, dict[str, int]] = {}
    for kind in ("conv1x1", "convkxk", "depthwise", "linear"):
        candidates = (
            [s for s in specs if s["kind"] == kind and s["groups"] in (0, 1)]
            if kind != "linear"
            else [s for s in specs if s["kind"] == kind]
        )
        if not candidates:
            continue
        # the kernels' channel blocking is the runtime's, not the model's: scan one layer of this
        # kind (the one with the most work per channel) at 4..64 channels, the other side 64 wide
        spec = max(candidates, key=lambda s: _spec_macs(s) / (s["cin"] * s["cout"]))
        # only the output axis: the input channels are the reduction of a conv (its time grows
        # smoothly with them, benchmarks/RESULTS.md), so the in axis keeps stair 1
        result: dict[str, int] = {"in": 1}
        for axis in ("out",):
            widths = list(range(SCAN_STEP, SCAN_MAX + 1, SCAN_STEP))
            cases = []
            for w in widths:
                if kind == "depthwise":
                    cases.append(runner.build(spec, w, w))
                elif axis == "out":
                    cases.append(runner.build(spec, SCAN_MAX, w))
                else:
                    cases.append(runner.build(spec, w, SCAN_MAX))
            result[axis] = detect_stair(widths, runner.time(cases, SCAN_ROUNDS_FACTOR))
        if kind == "depthwise":
            result["in"] = result["out"]
        stairs[kind] = result
    return stairs


def _spec_macs(spec: dict[str, Any]) -> float:
    if spec["kind"] == "linear":
        return float(spec["cin"] * spec["cout"])
    return float(spec["cin"] * spec["cout"] * np.prod(spec["kernel"]) * np.prod(spec["hw"]))


def _time_shape(
    runner: _Runner, spec: dict[str, Any], stairs: dict[str, dict[str, int]], max_points: int
) -> ShapeTiming:
    kind = spec["kind"]
    stair = stairs.get(kind, {"in": 1, "out": 1})
    unit = spec.get("groups", 1) if kind != "depthwise" else 1
    outs = _axis_grid(spec["cout"], stair["out"], unit or 1, max_points)
    if kind == "depthwise":
        ms = np.array([runner.time([runner.build(spec, w, w) for w in outs])])
        ins = [outs[-1]]
        ms = np.maximum.accumulate(ms, axis=1)
        return ShapeTiming(spec, ins, outs, ms, stair["out"], stair["out"])
    ins = _axis_grid(spec["cin"], stair["in"], unit or 1, max_points)
    cases = [runner.build(spec, i, o) for i in ins for o in outs]
    ms = np.array(runner.time(cases)).reshape(len(ins), len(outs))
    ms = np.maximum.accumulate(np.maximum.accumulate(ms, axis=0), axis=1)
    return ShapeTiming(spec, ins, outs, ms, stair["in"], stair["out"])


# -- prediction ----------------------------------------------------------------------


def _form(segs, n_groups: int) -> tuple[np.ndarray, float]:
    coef = np.zeros(n_groups)
    const = 0.0
    for gi, size, mult in segs or ():
        if gi >= 0:
            coef[gi] += mult
        else:
            const += size * mult
    return coef, const


class LatencyModel:
    """Predicted latency (ms) of plans of one space from a :class:`LatencyTable`, vectorized.

    ``latency_ms(channels)`` takes int counts (n_plans, n_groups) in ``space.groups`` order
    (a 1-D array is one plan) and an optional bool mask (n_plans, n_blocks) of removed blocks.
    The dense prediction equals the table's measured dense latency (unless the layers alone
    exceeded it, when the remainder is 0).
    """

    def __init__(self, space: PruningSpace, table: LatencyTable) -> None:
        self.space = space
        self.table = table
        g = len(space.groups)
        by_shape: dict[str, list[tuple[np.ndarray, float, np.ndarray, float, str]]] = {}
        for entry in table.layers:
            r = space.layers.get(entry["name"])
            shape = table.shapes[entry["shape"]]
            if r is None:
                raise AutopruneError(
                    f"the latency table names layer {entry['name']!r}, which this model does not have "
                    "(was the table built for another architecture?)"
                )
            a_out, c_out = _form(r.out, g) if r.out is not None else (np.zeros(g), float(shape.outs[-1]))
            a_in, c_in = _form(r.inp, g) if r.inp is not None else (np.zeros(g), float(shape.ins[-1]))
            full = space.max_counts.astype(np.float64)
            if shape.tied:
                a_in, c_in = a_out, c_out
            if a_out @ full + c_out != shape.outs[-1] or (
                not shape.tied and a_in @ full + c_in != shape.ins[-1]
            ):
                raise AutopruneError(
                    f"the latency table's layer {entry['name']!r} has other widths than this model's; "
                    "build the table for this model"
                )
            by_shape.setdefault(entry["shape"], []).append((a_in, c_in, a_out, c_out, entry["name"]))
        self._groups = []
        names = [b.name for b in space.blocks]
        for key, rows in by_shape.items():
            a_in = np.stack([r[0] for r in rows], axis=1)
            a_out = np.stack([r[2] for r in rows], axis=1)
            c_in = np.array([r[1] for r in rows])
            c_out = np.array([r[3] for r in rows])
            blocks = np.array(
                [[r[4] == b or r[4].startswith(b + ".") for r in rows] for b in names], dtype=np.float64
            ).reshape(len(names), len(rows))
            self._groups.append((table.shapes[key], a_in, c_in, a_out, c_out, blocks))
        self.remainder_ms = table.remainder_ms
        self.dense_ms = float(self.latency_ms(space.max_counts)[0])

    def latency_ms(self, channels: np.ndarray, removed: np.ndarray | None = None) -> np.ndarray:
        """Predicted ms per plan (float64, shape (n_plans,))."""
        n = np.atleast_2d(np.asarray(channels, dtype=np.float64))
        total = np.full(len(n), self.remainder_ms)
        dead_any = removed is not None and np.asarray(removed).any()
        for shape, a_in, c_in, a_out, c_out, blocks in self._groups:
            w_in = np.einsum("pg,ge->pe", n, a_in) + c_in
            w_out = np.einsum("pg,ge->pe", n, a_out) + c_out
            t = shape.interpolate(w_in, w_out)
            if dead_any:
                rm = np.atleast_2d(np.asarray(removed, dtype=np.float64))
                t = np.where(np.einsum("pb,be->pe", rm, blocks) > 0, 0.0, t)
            total += self.table.layer_scale * t.sum(axis=1)
        return total

    def ratio(self, channels: np.ndarray, removed: np.ndarray | None = None) -> np.ndarray:
        """Predicted latency as a fraction of the dense model's."""
        return self.latency_ms(channels, removed) / self.dense_ms


def table_round_to(space: PruningSpace, table: LatencyTable) -> dict[str, int]:
    """Per group, the channel multiple its layers' stairs prefer (the widths at the top of
    each flat stair, where more channels cost nothing more): the largest output stair period
    among the layers that produce it, halved until the group has at least two stairs."""
    prefer: dict[int, int] = {}
    for entry in table.layers:
        r = space.layers.get(entry["name"])
        shape = table.shapes.get(entry["shape"])
        if r is None or shape is None:
            continue
        for gi, _, _ in r.out or ():
            if gi >= 0:
                prefer[gi] = max(prefer.get(gi, 1), shape.out_stair)
    out = {}
    for gi, g in enumerate(space.groups):
        p = prefer.get(gi, g.round_to)
        while p > 1 and g.channels < 2 * p:
            p //= 2
        out[g.id] = max(p, 1)
    return out


def with_table_rounding(space: PruningSpace, table: LatencyTable) -> PruningSpace:
    """``space`` with each group's ``round_to`` chosen by :func:`table_round_to`."""
    chosen = table_round_to(space, table)
    return replace(space, groups=[replace(g, round_to=chosen[g.id]) for g in space.groups])
