"""Dense checkpoints: state_dict + metadata, written atomically, loaded weights-only."""

from __future__ import annotations

import hashlib
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

    import autoprune

    return {
        "autoprune": str(autoprune.__version__),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
    }


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **meta: Any) -> Path:
    """Save ``model``'s weights with ``meta`` (arch, dataset, num_classes, input_size, ...)."""
    payload = {
        "format": FORMAT,
        "meta": {**meta, "versions": versions()},
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
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        detail = (
            "it holds pickled objects, which autoprune never loads"
            if "Unsupported global" in str(exc)
            else type(exc).__name__
        )
        raise AutopruneError(f"{what} {str(path)!r} is corrupt or not a torch file ({detail})") from None


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load and validate an autoprune dense checkpoint."""
    payload = load_torch_file(path, "checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise AutopruneError(
            f"checkpoint {str(path)!r} is not an autoprune checkpoint (expected format {FORMAT}); "
            "create one with `autoprune train`"
        )
    return Checkpoint(payload["state_dict"], payload["meta"])


def load_model(path: str | os.PathLike, arch: str | None = None) -> tuple[nn.Module, Checkpoint]:
    """Rebuild the checkpoint's model and load its weights; ``arch`` must match if given."""
    from autoprune.models import create_model

    ckpt = load_checkpoint(path)
    if arch is not None and arch != ckpt.arch:
        raise AutopruneError(f"checkpoint {str(path)!r} holds a {ckpt.arch}, not a {arch}")
    meta = ckpt.meta
    model = create_model(ckpt.arch, meta["num_classes"], meta["input_size"], **meta.get("model_kwargs", {}))
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
