"""Pretrained starts: torchvision's published weights and ``timm`` models.

``torchvision:<name>`` with ``weights=`` (an enum member name such as ``IMAGENET1K_V1``,
``DEFAULT``, or the full ``ResNet18_Weights.IMAGENET1K_V1``) loads the file torchvision
publishes for it. The file is looked for first in torch hub's cache
(``$TORCH_HOME/hub/checkpoints/<file name of the weights URL>``, as torchvision itself
caches it); when it is absent it is downloaded there, unless ``AUTOPRUNE_OFFLINE=1``, in
which case (or when the download fails) the error is one line naming the file expected.
The file is always read with ``torch.load(weights_only=True)``: it holds tensors, never code.

When ``num_classes`` differs from the weights' classes, the backbone is loaded and the
classifier head (the tensors whose first dimension is the weights' class count) is left
freshly initialized for ``num_classes`` classes.

``timm:<name>`` builds ``timm.create_model(name, num_classes=...)`` when timm is installed
(``pip install 'autoprune[timm]'``); ``weights=`` there means ``pretrained=True`` (timm's
own cache and download, with ``HF_HUB_OFFLINE=1`` set under ``AUTOPRUNE_OFFLINE=1``).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from autoprune.errors import AutopruneError

OFFLINE_ENV = "AUTOPRUNE_OFFLINE"
DOWNLOAD_TIMEOUT_S = 20.0


def offline() -> bool:
    """True when ``AUTOPRUNE_OFFLINE`` is set to something other than '', 0 or false."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def torchvision_weights(name: str, weights: str):
    """The ``WeightsEnum`` member ``weights`` names for torchvision model ``name``."""
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    members = [m for m in enum.__members__ if m != "DEFAULT"]
    prefix, _, member = weights.rpartition(".")
    if prefix and prefix != enum.__name__:
        raise AutopruneError(f"--weights {weights!r} are not {name}'s; valid: DEFAULT, {', '.join(members)}")
    try:
        return enum[member]
    except KeyError:
        raise AutopruneError(
            f"torchvision:{name} has no weights {weights!r}; valid: DEFAULT, {', '.join(members)}"
        ) from None


def cached_weights_path(url: str) -> Path:
    """Where torch hub caches the file of ``url`` (``$TORCH_HOME/hub/checkpoints/<file>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def weights_state_dict(weight) -> dict[str, torch.Tensor]:
    """The weights' tensors from the cache, downloaded there first unless offline."""
    path = cached_weights_path(weight.url)
    if not path.is_file():
        if offline():
            raise AutopruneError(
                f"weights {weight} are not in the cache: expected {path} ({OFFLINE_ENV}=1, no download); "
                f"copy {weight.url} there"
            )
        _download(weight, path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and format errors: a damaged or foreign file
        raise AutopruneError(
            f"weights file {str(path)!r} is corrupt or not a torch file ({type(exc).__name__})"
        ) from None
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise AutopruneError(f"weights file {str(path)!r} does not hold a state_dict")
    return payload


def _download(weight, path: Path) -> None:
    match = re.search(r"-([a-f0-9]+)\.", path.name)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(
            weight.url, str(path), match.group(1) if match else None, progress=False
        )
    except Exception as exc:  # URLError, timeouts, a hash mismatch (RuntimeError), a full disk
        reason = " ".join(str(getattr(exc, "reason", exc)).split())[:160]
        raise AutopruneError(
            f"cannot download weights {weight} ({type(exc).__name__}: {reason}); offline, place "
            f"{weight.url} at {path}"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def load_backbone(
    model: nn.Module, state: dict[str, torch.Tensor], head_classes: int, what: str
) -> list[str]:
    """Load ``state`` into ``model``; tensors whose first dimension is ``head_classes`` where the
    model's differs are the head, left as initialized. Returns the head's keys.

    Any other missing key or shape mismatch is an error naming the first offender; extra
    auxiliary-classifier keys (``aux...``) are ignored.
    """
    own = model.state_dict()
    head, load = [], {}
    for key, tensor in state.items():
        if key not in own:
            if key.startswith("aux"):
                continue
            raise AutopruneError(f"{what}: unexpected key {key!r} in the weights")
        if own[key].shape == tensor.shape:
            load[key] = tensor
        elif tensor.ndim and tensor.shape[0] == head_classes and own[key].shape[1:] == tensor.shape[1:]:
            head.append(key)
        else:
            raise AutopruneError(
                f"{what}: {key!r} has shape {tuple(tensor.shape)} in the weights, "
                f"{tuple(own[key].shape)} in the model"
            )
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise AutopruneError(f"{what}: the weights lack {missing[0]!r}")
    model.load_state_dict(load, strict=False)
    return head


def create_timm(name: str, num_classes: int, weights: str | None, kwargs: dict) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise AutopruneError(
            f"timm:{name} needs the timm package: pip install 'autoprune[timm]' (or pip install timm)"
        ) from None
    if weights not in (None, "DEFAULT"):
        name = f"{name}.{weights}"  # timm's pretrained tag
    previous = os.environ.get("HF_HUB_OFFLINE")
    if offline():
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return timm.create_model(name, pretrained=weights is not None, num_classes=num_classes, **kwargs)
    except Exception as exc:  # an unknown name, missing weights offline, a failed download
        detail = " ".join(str(exc).split())[:200]
        raise AutopruneError(f"cannot build timm:{name}: {type(exc).__name__}: {detail}") from None
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous
