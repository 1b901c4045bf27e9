"""The dense-model jobs: train one and save it, describe a checkpoint."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import Subset

from autoprune.checkpoint import check_state_dict, load_model, load_torch_file, save_checkpoint
from autoprune.data import DataSplits, load_dataset
from autoprune.device import resolve_device
from autoprune.errors import AutopruneError
from autoprune.flops import measured_macs, param_count
from autoprune.jobs.paths import check_writable_file, removed_on_failure
from autoprune.models import create_model
from autoprune.progress import SILENT, Reporter
from autoprune.train import TrainConfig, evaluate_dataset, train


@dataclass(frozen=True)
class DenseResult:
    path: Path
    accuracy: float


def train_dense(
    arch: str,
    dataset: str,
    out: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    epochs: int = 15,
    lr: float = 0.1,
    batch_size: int = 64,
    seed: int = 0,
    input_size: int | None = None,
    device: str = "auto",
    reporter: Reporter = SILENT,
    trust_code: bool = False,
    weights: str | None = None,
    train_images: int | None = None,
) -> DenseResult:
    """Train ``arch`` on ``dataset`` and save the checkpoint atomically to ``out``.

    Every input is checked before training starts (device, epochs, output path, dataset,
    model). A ``module:callable`` ``arch`` is built only with ``trust_code=True`` (the CLI's
    ``train --arch pkg:fn`` counts as the user naming it). ``weights`` starts from published
    weights (see :func:`autoprune.create_model`); ``train_images`` trains on a seeded subset
    of that many training images. On failure or Ctrl-C nothing is written: ``out`` keeps its
    previous contents and folders made for it are removed.
    """
    dev = resolve_device(device)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise AutopruneError(f"epochs must be a positive whole number, got {epochs!r}")
    check_writable_file(out, "checkpoint")
    splits = _subset(load_dataset(dataset, data_dir, input_size=input_size, seed=seed), train_images, seed)
    torch.manual_seed(seed)
    model = create_model(arch, splits.num_classes, splits.input_size, trust_code=trust_code, weights=weights)
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    with removed_on_failure(out):
        train(model, splits, config, device=dev, reporter=reporter)
        accuracy = evaluate_dataset(model, splits.test, dev).accuracy
        save_checkpoint(
            out,
            model,
            arch=arch,
            dataset=dataset,
            num_classes=splits.num_classes,
            input_size=splits.input_size,
            accuracy=accuracy,
            seed=seed,
            epochs=epochs,
            **({"weights": weights} if weights else {}),
            **({"train_images": len(splits.train)} if train_images else {}),
        )
    return DenseResult(Path(out), accuracy)


def _subset(splits: DataSplits, images: int | None, seed: int) -> DataSplits:
    """``splits`` with its training images cut to a seeded subset of ``images`` (None: all)."""
    if images is None:
        return splits
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise AutopruneError(f"--train-images must be a positive whole number, got {images!r}")
    n = len(splits.train)
    keep = sorted(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(images, n)].tolist())
    return replace(splits, train=Subset(splits.train, keep), train_plain=Subset(splits.train_plain, keep))


def describe_checkpoint(path: str | os.PathLike, *, trust_code: bool = False) -> dict[str, str]:
    """Arch, dataset, params, FLOPs (MACs) and accuracy of a dense checkpoint.

    A checkpoint naming a ``module:callable`` builder is rebuilt only with ``trust_code=True``.
    """
    model, ckpt = load_model(path, trust_code=trust_code)
    meta = ckpt.meta
    size = meta["input_size"]
    macs = measured_macs(model, torch.zeros(1, 3, size, size))
    return {
        "arch": ckpt.arch,
        "dataset": str(meta.get("dataset")),
        "classes": str(meta["num_classes"]),
        "input size": f"{size}x{size}",
        "params": f"{param_count(model):,}",
        "FLOPs (MACs)": f"{macs:,}",
        "test accuracy": f"{meta['accuracy']:.2%}" if "accuracy" in meta else "unknown",
        "torch": meta.get("versions", {}).get("torch", "?"),
    }


def import_weights(
    weights: str | os.PathLike,
    arch: str,
    out: str | os.PathLike,
    *,
    num_classes: int,
    input_size: int,
    dataset: str | None = None,
    trust_code: bool = False,
) -> Path:
    """Turn a plain state_dict file into an autoprune checkpoint of ``arch`` at ``out``.

    The file is read weights-only; a dict holding the tensors under ``state_dict`` or ``model``
    is accepted too (a ``module.`` prefix on every key, from DataParallel, is dropped). The
    tensors must fit the architecture exactly: a missing or unexpected key, or a shape
    mismatch, is one error naming the first offender. Nothing is written on failure.
    """
    check_writable_file(out, "--out")
    state = _plain_state_dict(load_torch_file(weights, "weights file"), weights)
    model = create_model(arch, num_classes, input_size, trust_code=trust_code)
    _check_fits(model.state_dict(), state, f"{weights} does not fit {arch} ({num_classes} classes)")
    model.load_state_dict(state)
    meta = {"dataset": dataset} if dataset else {}
    return save_checkpoint(
        out,
        model,
        arch=arch,
        num_classes=num_classes,
        input_size=input_size,
        imported_from=str(weights),
        **meta,
    )


def _plain_state_dict(payload: object, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    if isinstance(payload, dict):
        for key in ("state_dict", "model"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    try:
        state = check_state_dict(payload)
    except AutopruneError as exc:
        raise AutopruneError(f"weights file {str(path)!r}: {exc}") from None
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _check_fits(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], what: str) -> None:
    for key, tensor in state.items():
        if key not in own:
            raise AutopruneError(f"{what}: unexpected key {key!r}")
        if own[key].shape != tensor.shape:
            raise AutopruneError(
                f"{what}: {key!r} has shape {tuple(tensor.shape)} in the file, "
                f"{tuple(own[key].shape)} in the model"
            )
    for key in own:
        if key not in state:
            raise AutopruneError(f"{what}: missing key {key!r}")
