"""Whole jobs the CLI runs, as library calls that return values."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from autoprune.checkpoint import load_model, save_checkpoint
from autoprune.data import load_dataset, make_loader
from autoprune.device import resolve_device
from autoprune.errors import AutopruneError
from autoprune.flops import measured_macs, param_count
from autoprune.io import read_json
from autoprune.latency import latency_ms
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


@dataclass(frozen=True)
class ModelReport:
    """One row of the before/after table."""

    label: str
    flops: int
    params: int
    latency_ms: float
    accuracy: float | None


@dataclass(frozen=True)
class ApplyReport:
    rows: list[ModelReport]
    out: Path
    exported: Path | None
    notes: list[str]


def apply_plan_file(
    plan_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    criterion: str = "l1",
    finetune_epochs: int = 0,
    kd: bool = False,
    lr: float = 0.01,
    batch_size: int = 64,
    export: str | None = None,
    data_dir: str | os.PathLike | None = None,
    device: str = "auto",
    seed: int = 0,
    reporter: Reporter = SILENT,
) -> ApplyReport:
    """Prune a dense checkpoint by a Plan (or best_trial.json), optionally fine-tune, save and export."""
    from autoprune.checkpoint import file_sha256
    from autoprune.plan import Plan
    from autoprune.recalibration import recalibrate_batchnorm
    from autoprune.search.proxies import EvalBatches
    from autoprune.search_spaces import space_for
    from autoprune.surgery import apply_plan, export_onnx, export_torchscript, save_pruned

    dev = resolve_device(device)
    document = read_json(plan_path, "plan")
    plan = Plan.from_document(document, plan_path)  # well-formed; checked against the model below
    notes: list[str] = []
    if checkpoint is None:
        if "checkpoint" not in document:
            raise AutopruneError(f"{plan_path} names no dense checkpoint; pass --checkpoint dense.pt")
        checkpoint = document["checkpoint"]
    elif document.get("checkpoint_sha256") not in (None, file_sha256(checkpoint)):
        notes.append(f"note: {checkpoint} is not the checkpoint this plan was searched on")
    dense, ckpt = load_model(checkpoint, arch=document.get("arch"))
    meta = ckpt.meta
    size = meta["input_size"]
    example = torch.zeros(1, 3, size, size)
    space = space_for(dense, ckpt.arch, size, meta["num_classes"])
    plan.validate(space)
    splits = load_dataset(meta["dataset"], data_dir, input_size=size, seed=seed)
    dense.to(dev).eval()

    def row(label: str, model: torch.nn.Module, accuracy: float | None) -> ModelReport:
        on_cpu = copy.deepcopy(model).cpu().eval()
        return ModelReport(
            label, measured_macs(on_cpu, example), param_count(on_cpu), latency_ms(on_cpu, size), accuracy
        )

    rows = [row("dense", dense, evaluate_dataset(dense, splits.test, dev).accuracy)]
    loader = make_loader(splits.search, 128) if criterion == "auto" else None
    result = apply_plan(dense, plan, criterion, space=space, loader=loader, seed=seed)
    pruned = result.model.to(dev)
    recal = EvalBatches.from_dataset(splits.train_plain, 128, 8 * 128, seed=seed)
    recalibrate_batchnorm(pruned, recal.images, dev)
    rows.append(row("pruned (BN recalibrated)", pruned, evaluate_dataset(pruned, splits.test, dev).accuracy))
    if finetune_epochs > 0:
        config = TrainConfig(epochs=finetune_epochs, lr=lr, batch_size=batch_size, seed=seed, warmup_epochs=0)
        train(pruned, splits, config, device=dev, teacher=dense if kd else None, reporter=reporter)
        label = f"pruned + fine-tune {finetune_epochs} ep" + (" (KD)" if kd else "")
        rows.append(row(label, pruned, evaluate_dataset(pruned, splits.test, dev).accuracy))
    pruned.cpu().eval()
    saved = save_pruned(out, result)
    exported = None
    if export == "torchscript":
        exported = export_torchscript(pruned, Path(out).with_suffix(".ts"), example)
    elif export == "onnx":
        exported = export_onnx(pruned, Path(out).with_suffix(".onnx"), example)
    return ApplyReport(rows, saved, exported, notes)
