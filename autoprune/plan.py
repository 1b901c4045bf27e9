"""A pruning plan: how many channels each group keeps (+ removed blocks), as versioned JSON.

The JSON form::

    {"format": "autoprune.plan/1", "arch": "mobilenetv2", "input_size": 32, "num_classes": 10,
     "channels": {"features.0.0": 24, ...}, "ratios": {"features.0.0": 0.75, ...} | null,
     "removed_blocks": ["features.5"]}

Reading accepts any dict with these keys and **ignores unknown top-level keys**, so a
``best_trial.json`` (a plan dict plus ``score``, ``budget``, ``study``,
``checkpoint_sha256``) loads as a plan directly. A dict without ``format`` but
with a ``"plan"`` dict inside is read from that key (for wrappers that nest it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from autoprune.errors import AutopruneError
from autoprune.io import read_json, write_json

FORMAT = "autoprune.plan/1"


class PlanChecker(Protocol):
    """What can check a plan against a model: a :class:`~autoprune.space.PruningSpace`."""

    def check_plan(self, plan: Plan) -> None: ...


@dataclass
class Plan:
    """Channels kept per group id; groups a plan omits keep all their channels."""

    channels: dict[str, int]
    ratios: dict[str, float] | None = None
    arch: str | None = None
    input_size: int | list[int] | None = None
    num_classes: int | None = None
    removed_blocks: list[str] = field(default_factory=list)

    # -- JSON --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "arch": self.arch,
            "input_size": self.input_size,
            "num_classes": self.num_classes,
            "channels": dict(self.channels),
            "ratios": None if self.ratios is None else dict(self.ratios),
            "removed_blocks": list(self.removed_blocks),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], space: PlanChecker | None = None) -> Plan:
        """Parse a plan dict (see the module docstring); with ``space``, also check it fits that model."""
        if not isinstance(d, Mapping):
            raise AutopruneError(f"a plan must be a JSON object, got {type(d).__name__}")
        if "format" not in d and isinstance(d.get("plan"), Mapping):
            d = d["plan"]
        fmt = d.get("format")
        if fmt != FORMAT:
            raise AutopruneError(
                f"not an autoprune plan (format {fmt!r}, expected {FORMAT!r}); "
                "plans come from `autoprune search` or PruningSpace.plan(...).save()"
            )
        plan = cls(
            channels=_int_map(d.get("channels"), "channels"),
            ratios=None if d.get("ratios") is None else _float_map(d["ratios"], "ratios"),
            arch=_opt_str(d.get("arch"), "arch"),
            input_size=_input_size(d.get("input_size")),
            num_classes=_opt_int(d.get("num_classes"), "num_classes"),
            removed_blocks=_str_list(d.get("removed_blocks", []), "removed_blocks"),
        )
        if space is not None:
            space.check_plan(plan)
        return plan

    def save(self, path: str | os.PathLike) -> Path:
        """Write the plan as JSON, atomically."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, space: PlanChecker | None = None) -> Plan:
        """Read a plan file; with ``space``, check it against the model.

        A ``best_trial.json`` loads directly: unknown top-level keys (``score``, ``budget``,
        ``study``, ``checkpoint_sha256``, ...) are ignored.
        """
        return cls.from_document(read_json(path, "plan"), path, space)

    @classmethod
    def from_document(cls, data: Any, path: str | os.PathLike, space: PlanChecker | None = None) -> Plan:
        """:meth:`from_dict` on the JSON already read from ``path``; errors name that file."""
        try:
            return cls.from_dict(data, space)
        except AutopruneError as exc:
            raise AutopruneError(f"plan file {str(path)!r}: {exc}") from None


# ------------------------------------------------------------------- field parsing


def _int_map(v: Any, what: str) -> dict[str, int]:
    if not isinstance(v, Mapping):
        raise AutopruneError(f"plan field {what!r} must be an object of group id -> integer")
    out = {}
    for k, n in v.items():
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n) or n != int(n):
            raise AutopruneError(f"plan {what}[{k!r}] must be an integer, got {n!r}")
        out[str(k)] = int(n)
    return out


def _float_map(v: Any, what: str) -> dict[str, float]:
    if not isinstance(v, Mapping):
        raise AutopruneError(f"plan field {what!r} must be an object of group id -> number")
    out = {}
    for k, r in v.items():
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r):
            raise AutopruneError(f"plan {what}[{k!r}] must be a number, got {r!r}")
        out[str(k)] = float(r)
    return out


def _opt_str(v: Any, what: str) -> str | None:
    if v is not None and not isinstance(v, str):
        raise AutopruneError(f"plan field {what!r} must be a string")
    return v


def _opt_int(v: Any, what: str) -> int | None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
        raise AutopruneError(f"plan field {what!r} must be an integer")
    return v


def _input_size(v: Any) -> int | list[int] | None:
    if v is None or (isinstance(v, int) and not isinstance(v, bool)):
        return v
    if isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        return list(v)
    raise AutopruneError(f"plan field 'input_size' must be an integer or a list of integers, got {v!r}")


def _str_list(v: Any, what: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise AutopruneError(f"plan field {what!r} must be a list of strings")
    return list(v)
