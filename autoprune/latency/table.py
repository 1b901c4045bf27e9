"""The latency table: per-layer-shape timing grids with their monotone interpolation, and the
table's JSON format (``"format": "autoprune.latency_table/1"``) with its target identity.
See :mod:`autoprune.latency`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoprune.errors import AutopruneError
from autoprune.latency.measure import allocator, device_name

FORMAT = "autoprune.latency_table/1"
KINDS = ("conv1x1", "convkxk", "depthwise", "linear")
"""The layer kinds a table times (a layer spec's ``kind``)."""


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


@dataclass(frozen=True)
class LatencyFit:
    """A table's whole-network fit (:mod:`autoprune.latency.fit`): predicted ms = ``remainder_ms``
    + Σ ``scale[kind]`` × that kind's layer times; ``measured_ms`` of the ``plans`` timed networks
    (the dense one first) and the median relative error on them before and after the fit."""

    scale: dict[str, float]
    remainder_ms: float
    plans: int
    measured_ms: tuple[float, ...] = ()
    error_before: float | None = None
    error_after: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "scale": {k: round(v, 6) for k, v in self.scale.items()},
            "remainder_ms": round(self.remainder_ms, 5),
            "plans": self.plans,
            "measured_ms": [round(m, 5) for m in self.measured_ms],
            "error_before": None if self.error_before is None else round(self.error_before, 5),
            "error_after": None if self.error_after is None else round(self.error_after, 5),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyFit:
        scale = {str(k): float(v) for k, v in d["scale"].items()}
        if any(k not in KINDS or not v >= 0 for k, v in scale.items()) or not float(d["remainder_ms"]) >= 0:
            raise ValueError("a fit's scales and remainder must be non-negative, per known layer kind")
        return cls(
            scale,
            float(d["remainder_ms"]),
            int(d["plans"]),
            tuple(float(m) for m in d.get("measured_ms", ())),
            None if d.get("error_before") is None else float(d["error_before"]),
            None if d.get("error_after") is None else float(d["error_after"]),
        )


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
    fit: LatencyFit | None = None
    """The whole-network fit, when one was measured; it then replaces ``layer_scale`` and
    ``remainder_ms`` in predictions."""

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
            "fit": None if self.fit is None else self.fit.to_dict(),
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
                fit=None if d.get("fit") is None else LatencyFit.from_dict(d["fit"]),
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
        made_with, now = self.versions.get("allocator"), allocator()
        if torch.device(device).type == "cpu" and made_with not in (None, now):
            raise AutopruneError(
                f"the latency table was measured with the {made_with!r} memory allocator, this process "
                f"runs {now!r} (it changes CPU latency); build one here or pass --force"
            )

    def describe(self) -> str:
        return (
            f"{self.arch} at {self.input_size}px on {self.device_name} ({self.device}, {self.runtime}, "
            f"{self.threads} thread(s), batch {self.batch_size}"
            + (f", {self.versions['allocator']} allocator" if "allocator" in self.versions else "")
            + f"), {self.date}"
        )
