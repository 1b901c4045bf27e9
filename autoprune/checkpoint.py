"""Dense checkpoints: state_dict + metadata, written atomically, loaded weights-only."""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.errors import AutopruneError
from autoprune.io import atomic_write
from autoprune.version import __version__

FORMAT = "autoprune.checkpoint/1"


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def arch(self) -> str:
        return self.meta["arch"]


def versions() -> dict[str, str]:
    import torchvision

    return {
        "autoprune": __version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
    }


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **meta: Any) -> Path:
    """Save ``model``'s weights with ``meta`` (arch, dataset, num_classes, input_size, ...).

    ``meta`` is checked as :func:`load_checkpoint` will check it, so a checkpoint that
    could not be loaded back is never written.
    """
    full_meta = {**meta, "versions": versions()}
    try:
        check_meta(full_meta)
    except AutopruneError as exc:
        raise AutopruneError(f"cannot save checkpoint {str(path)!r}: {exc}") from None
    payload = {
        "format": FORMAT,
        "meta": full_meta,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_torch_file(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise AutopruneError(f"{what} {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (
        RuntimeError,
        pickle.UnpicklingError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        KeyError,  # a legacy (non-zip) load of a text file fails on an unknown persistent id
        IndexError,
        UnicodeDecodeError,
    ) as exc:
        detail = (
            "it holds pickled objects, which autoprune never loads"
            if "Unsupported global" in str(exc)
            else type(exc).__name__
        )
        raise AutopruneError(f"{what} {str(path)!r} is corrupt or not a torch file ({detail})") from None


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load and validate an autoprune dense checkpoint (nothing in it is ever run)."""
    payload = load_torch_file(path, "checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise AutopruneError(
            f"checkpoint {str(path)!r} is not an autoprune checkpoint (expected format {FORMAT}); "
            "create one with `autoprune train`"
        )
    try:
        meta = check_meta(payload.get("meta"))
        state_dict = check_state_dict(payload.get("state_dict"))
    except AutopruneError as exc:
        raise AutopruneError(f"checkpoint {str(path)!r}: {exc}") from None
    return Checkpoint(state_dict, meta)


def check_meta(meta: Any) -> dict[str, Any]:
    """``meta`` if it is valid checkpoint metadata, else AutopruneError naming what is wrong.

    Required: ``arch`` (a model name), ``num_classes`` and ``input_size`` (positive
    ints). Optional: ``model_kwargs`` (see :func:`check_model_kwargs`), ``dataset``
    (a string), ``accuracy`` (a number). No stored number may be NaN or infinite.
    """
    if not isinstance(meta, dict):
        raise AutopruneError(f"its metadata is {type(meta).__name__}, not a mapping (a damaged file?)")
    missing = [k for k in ("arch", "num_classes", "input_size") if k not in meta]
    if missing:
        raise AutopruneError(f"its metadata lacks {', '.join(missing)} (not written by `autoprune train`?)")
    if not isinstance(meta["arch"], str) or not meta["arch"]:
        raise AutopruneError(f"its metadata 'arch' must be a model name, not {_show(meta['arch'])}")
    for key in ("num_classes", "input_size"):
        if not _is_int(meta[key]) or meta[key] < 1:
            raise AutopruneError(f"its metadata {key!r} must be a positive integer, not {_show(meta[key])}")
    if meta.get("dataset") is not None and not isinstance(meta["dataset"], str):
        raise AutopruneError(f"its metadata 'dataset' must be a string, not {_show(meta['dataset'])}")
    if "accuracy" in meta and not _is_number(meta["accuracy"]):
        raise AutopruneError(f"its metadata 'accuracy' must be a number, not {_show(meta['accuracy'])}")
    check_finite(meta, "its metadata")
    if "model_kwargs" in meta:
        check_model_kwargs(meta["model_kwargs"])
    return meta


def check_model_kwargs(kwargs: Any) -> dict[str, Any]:
    """Stored model arguments: a mapping of names to plain JSON scalars (str, int, float, bool, None).

    Anything else (lists, tensors, other objects) is refused, as are NaN/inf and the
    names :func:`autoprune.create_model` sets itself.
    """
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise AutopruneError(f"its model_kwargs must be a mapping, not {_show(kwargs)}")
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise AutopruneError(f"its model_kwargs has a key {_show(key)} that is not an argument name")
        if key in ("num_classes", "input_size", "trust_code"):
            raise AutopruneError(f"its model_kwargs may not set {key!r}")
        if value is not None and not isinstance(value, (str, bool, int, float)):
            raise AutopruneError(
                f"its model_kwargs[{key!r}] is {_show(value)}; only plain values "
                "(string, integer, number, true/false, null) are accepted"
            )
        check_finite(value, f"its model_kwargs[{key!r}]")
    return dict(kwargs)


def check_state_dict(state_dict: Any) -> dict[str, torch.Tensor]:
    """A mapping of parameter names to tensors, else AutopruneError."""
    if not isinstance(state_dict, dict):
        raise AutopruneError(f"its weights are {type(state_dict).__name__}, not a state_dict")
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise AutopruneError(f"its state_dict entry {_show(key)} is not a named tensor")
    return state_dict


def check_finite(value: Any, where: str) -> None:
    """AutopruneError if ``value`` (or any number nested in its dicts/lists/tuples) is NaN or infinite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise AutopruneError(f"{where} holds {value!r}; stored numbers must be finite")
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(v, f"{where}[{k!r}]" if isinstance(k, str) else where)
    elif isinstance(value, (list, tuple)):
        for v in value:
            check_finite(v, where)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value: Any) -> str:
    """A short, one-line description of a stored value for error messages."""
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return repr(text).replace("\n", " ")
    return f"a {type(value).__name__}"


def load_model(
    path: str | os.PathLike, arch: str | None = None, *, trust_code: bool = False
) -> tuple[nn.Module, Checkpoint]:
    """Rebuild the checkpoint's model and load its weights; ``arch`` must match if given.

    A checkpoint whose ``arch`` is a ``module:callable`` builder is rebuilt only with
    ``trust_code=True`` (see :func:`autoprune.create_model`): the name comes from the
    file, and building it would run that module's code.
    """
    from autoprune.models import create_model

    ckpt = load_checkpoint(path)
    if arch is not None and arch != ckpt.arch:
        raise AutopruneError(f"checkpoint {str(path)!r} holds a {ckpt.arch}, not a {arch}")
    meta = ckpt.meta
    try:
        model = create_model(
            ckpt.arch,
            meta["num_classes"],
            meta["input_size"],
            trust_code=trust_code,
            **(meta.get("model_kwargs") or {}),
        )
    except AutopruneError as exc:
        raise AutopruneError(f"checkpoint {str(path)!r}: {exc}") from None
    try:
        model.load_state_dict(ckpt.state_dict)
    except RuntimeError as exc:
        raise AutopruneError(
            f"checkpoint {str(path)!r} does not fit {ckpt.arch}: {str(exc).splitlines()[0]}"
        ) from None
    return model, ckpt


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
