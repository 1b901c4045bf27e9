"""The dense-model jobs: train one and save it, describe a checkpoint."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from autoprune.checkpoint import load_model, save_checkpoint
from autoprune.data import load_dataset
from autoprune.device import resolve_device
from autoprune.flops import measured_macs, param_count
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
) -> DenseResult:
    """Train ``arch`` on ``dataset`` and save the checkpoint atomically to ``out``."""
    dev = resolve_device(device)
    splits = load_dataset(dataset, data_dir, input_size=input_size, seed=seed)
    torch.manual_seed(seed)
    model = create_model(arch, splits.num_classes, splits.input_size)
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
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


def describe_checkpoint(path: str | os.PathLike) -> dict[str, str]:
    """Arch, dataset, params, FLOPs (MACs) and accuracy of a dense checkpoint."""
    model, ckpt = load_model(path)
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
