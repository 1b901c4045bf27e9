"""The :class:`Sensitivity` value, its JSON form and validated loading.

See :mod:`autoprune.sensitivity` for the JSON layout (``autoprune.sensitivity/1``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoprune.errors import AutopruneError
from autoprune.io import read_json, write_json
from autoprune.registry import SENSITIVITY_METHODS as METHODS

if TYPE_CHECKING:
    from autoprune.space import PruningSpace

FORMAT = "autoprune.sensitivity/1"


@dataclass
class UnitSensitivity:
    """One unit's value: ``delta`` (mean over seeds), its spread and every seed's value.

    For sr-init and sbpf, ``delta`` is the top-1 drop acc0 - acc (larger = more
    sensitive) and ``loss_delta`` the cross-entropy rise; for bn-gamma, ``delta``
    is the mean |gamma| (larger = more important) and the loss fields are None.
    """

    id: str
    kind: str
    stage: int
    delta: float
    std: float
    per_seed: list[float]
    loss_delta: float | None = None
    loss_per_seed: list[float] | None = None
    removable: bool | None = None
    images: int = 0
    per_sigma: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.kind != "block":
            d.pop("removable")
        if self.per_sigma is None:
            d.pop("per_sigma")
        return d


@dataclass
class Sensitivity:
    """Per-unit sensitivity of one model (see the package docstring for the fields)."""

    method: str
    unit: str
    arch: str | None
    input_size: int | list[int] | None
    num_classes: int | None
    seeds: list[int]
    images: int
    acc0: float | None
    loss0: float | None
    units: list[UnitSensitivity]
    sigmas: list[float] | None = None
    images_available: int = 0
    adaptive: dict[str, Any] | None = None
    checkpoint_sha256: str | None = None
    model_sha256: str | None = None
    dataset: str | None = None
    split: str = "search"
    engine: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    # -- access --------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        return [u.id for u in self.units]

    def values(self) -> dict[str, float]:
        """Unit id -> mean value (``delta``)."""
        return {u.id: u.delta for u in self.units}

    def __getitem__(self, unit_id: str) -> UnitSensitivity:
        for u in self.units:
            if u.id == unit_id:
                return u
        raise KeyError(unit_id)

    def ranking(self) -> list[str]:
        """Unit ids from least to most sensitive (ties: smaller loss rise first, then network order)."""
        order = range(len(self.units))

        def key(i: int) -> tuple[float, float, int]:
            u = self.units[i]
            loss = u.loss_delta if u.loss_delta is not None and not math.isnan(u.loss_delta) else 0.0
            return (u.delta, loss, i)

        return [self.units[i].id for i in sorted(order, key=key)]

    # -- JSON ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "method": self.method,
            "unit": self.unit,
            "arch": self.arch,
            "input_size": self.input_size,
            "num_classes": self.num_classes,
            "dataset": self.dataset,
            "split": self.split,
            "seeds": list(self.seeds),
            "sigmas": None if self.sigmas is None else list(self.sigmas),
            "images": self.images,
            "images_available": self.images_available,
            "adaptive": self.adaptive,
            "acc0": self.acc0,
            "loss0": self.loss0,
            "checkpoint_sha256": self.checkpoint_sha256,
            "model_sha256": self.model_sha256,
            "engine": dict(self.engine),
            "seconds": round(self.seconds, 3),
            "units": [u.to_dict() for u in self.units],
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON atomically."""
        return write_json(path, _finite(self.to_dict()))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sensitivity:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise AutopruneError(
                f"not an autoprune sensitivity file (format {got!r}, expected {FORMAT!r}); "
                "make one with `autoprune sensitivity`"
            )
        try:
            units = [
                UnitSensitivity(
                    id=str(u["id"]),
                    kind=str(u["kind"]),
                    stage=int(u["stage"]),
                    delta=_num(u["delta"]),
                    std=_num(u["std"]),
                    per_seed=[_num(v) for v in u["per_seed"]],
                    loss_delta=None if u.get("loss_delta") is None else _num(u["loss_delta"]),
                    loss_per_seed=None
                    if u.get("loss_per_seed") is None
                    else [_num(v) for v in u["loss_per_seed"]],
                    removable=u.get("removable"),
                    images=int(u.get("images", 0)),
                    per_sigma=u.get("per_sigma"),
                )
                for u in d["units"]
            ]
            sens = cls(
                method=str(d["method"]),
                unit=str(d["unit"]),
                arch=d.get("arch"),
                input_size=d.get("input_size"),
                num_classes=d.get("num_classes"),
                seeds=[int(s) for s in d["seeds"]],
                images=int(d["images"]),
                acc0=d.get("acc0"),
                loss0=d.get("loss0"),
                units=units,
                sigmas=d.get("sigmas"),
                images_available=int(d.get("images_available", 0)),
                adaptive=d.get("adaptive"),
                checkpoint_sha256=d.get("checkpoint_sha256"),
                model_sha256=d.get("model_sha256"),
                dataset=d.get("dataset"),
                split=str(d.get("split", "search")),
                engine=dict(d.get("engine") or {}),
                seconds=float(d.get("seconds", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AutopruneError(f"malformed sensitivity file: {type(exc).__name__} {exc}") from None
        if sens.method not in METHODS:
            raise AutopruneError(f"sensitivity method {sens.method!r} unknown; valid: {', '.join(METHODS)}")
        return sens


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _finite(obj: Any) -> Any:
    """NaN and ±inf -> None so the file is strict JSON (json.dumps would write NaN/Infinity)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def load_sensitivity(
    path: str | os.PathLike,
    space: PruningSpace | None = None,
    *,
    unit: str | None = None,
    method: str | None = None,
) -> Sensitivity:
    """Read a sensitivity JSON; with ``space`` check it belongs to that model.

    Checks: the format; with ``space``, arch, number of classes and input size
    where both sides know them, and that every unit id of the file is a group
    (or block) of ``space`` and, for group files, that every group is covered;
    ``unit``/``method`` if given. Every failure is an AutopruneError whose one
    line says what differs.
    """
    path = Path(path)
    data = read_json(path, "sensitivity")
    try:
        sens = Sensitivity.from_dict(data)
        if unit is not None and sens.unit != unit:
            raise AutopruneError(f"it holds {sens.unit} units, {unit} units are needed (--unit {unit})")
        if method is not None and sens.method != method:
            raise AutopruneError(f"it was computed with {sens.method}, not {method}")
        if space is not None:
            check_against(sens, space)
    except AutopruneError as exc:
        raise AutopruneError(f"{path.name}: {exc}") from None
    return sens


def check_against(sens: Sensitivity, space: PruningSpace) -> None:
    """Raise AutopruneError unless ``sens`` was computed for the model ``space`` describes."""
    if sens.arch and space.arch and sens.arch != space.arch:
        raise AutopruneError(f"sens.json was computed for {sens.arch}, not {space.arch}")
    if sens.num_classes and space.num_classes and sens.num_classes != space.num_classes:
        raise AutopruneError(
            f"it was computed for {sens.num_classes} classes, the model has {space.num_classes}"
        )
    if sens.input_size and space.input_size and sens.input_size != space.input_size:
        raise AutopruneError(
            f"it was computed at input size {sens.input_size}, the model is traced at {space.input_size}"
        )
    valid = [b.name for b in space.blocks] if sens.unit == "block" else [g.id for g in space.groups]
    unknown = [i for i in sens.ids if i not in set(valid)]
    if unknown:
        raise AutopruneError(
            f"it names {len(unknown)} {sens.unit}(s) this model does not have, e.g. {unknown[0]!r} "
            f"(computed for another architecture?)"
        )
    if sens.unit == "group":
        missing = [i for i in valid if i not in set(sens.ids)]
        if missing:
            raise AutopruneError(
                f"it lacks {len(missing)} channel group(s) of this model, e.g. {missing[0]!r}"
            )
