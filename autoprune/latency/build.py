"""Building a latency table: the prunable layers of a model as layer specs, their stairs and
width grids, each distinct shape timed and calibrated against the dense model.
See :mod:`autoprune.latency`."""

from __future__ import annotations

import copy
import datetime as _dt
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from autoprune.errors import AutopruneError
from autoprune.latency.measure import ROUNDS, Runner, allocator, check_runtime, detect_stair, device_name
from autoprune.latency.table import LatencyTable, ShapeTiming

MAX_POINTS = 5
"""Grid points per axis at most (the full width and the first stair are always among them)."""
SCAN_STEP = 4
SCAN_MAX = 64
SCAN_ROUNDS_FACTOR = 2
CALIBRATION_ROUNDS_FACTOR = 3


# -- building ------------------------------------------------------------------------


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
            model, input_size, Runner(device, batch_size, rounds, runtime), max_points, progress
        )
    finally:
        torch.set_num_threads(previous_threads)
    layers = [{"name": name, "shape": _spec_key(spec)} for name, spec in specs]
    layer_sum = sum(shapes[e["shape"]].dense_ms for e in layers)
    versions = {"torch": torch.__version__}
    if runtime == "onnxruntime":
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    if device.type == "cpu":
        versions["allocator"] = allocator()
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
    runner: Runner,
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
    runner: Runner, model: nn.Module, input_size: int, unique: dict[str, dict[str, Any]]
) -> tuple[float, dict[str, float]]:
    """The dense model and every dense layer shape timed in turn, in the same rounds (so the
    remainder, dense minus layers, compares times taken under the same machine load)."""
    keys = list(unique)
    cases = [runner.whole(model, input_size)] + [
        runner.build(unique[k], unique[k]["cin"], unique[k]["cout"]) for k in keys
    ]
    times = runner.time(cases, CALIBRATION_ROUNDS_FACTOR)
    return times[0], dict(zip(keys, times[1:], strict=True))


def _measure_stairs(runner: Runner, specs: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
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
    runner: Runner, spec: dict[str, Any], stairs: dict[str, dict[str, int]], max_points: int
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
