"""The dense-model jobs: train one and save it, describe a checkpoint."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from autoprune.checkpoint import load_model, save_checkpoint
from autoprune.data import load_dataset
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
) -> DenseResult:
    """Train ``arch`` on ``dataset`` and save the checkpoint atomically to ``out``.

    Every input is checked before training starts (device, epochs, output path, dataset,
    model). A ``module:callable`` ``arch`` is built only with ``trust_code=True`` (the CLI's
    ``train --arch pkg:fn`` counts as the user naming it). On failure or Ctrl-C nothing is
    written: ``out`` keeps its previous contents and folders made for it are removed.
    """
    dev = resolve_device(device)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise AutopruneError(f"epochs must be a positive whole number, got {epochs!r}")
    check_writable_file(out, "checkpoint")
    splits = load_dataset(dataset, data_dir, input_size=input_size, seed=seed)
    torch.manual_seed(seed)
    model = create_model(arch, splits.num_classes, splits.input_size, trust_code=trust_code)
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
        )
    return DenseResult(Path(out), accuracy)


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
