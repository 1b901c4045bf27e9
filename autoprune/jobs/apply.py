"""The apply job: prune a dense checkpoint by a plan, recalibrate, fine-tune, save and export."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.checkpoint import file_sha256, load_model
from autoprune.data import DataSplits, EvalBatches, load_dataset, make_loader
from autoprune.device import resolve_device
from autoprune.errors import AutopruneError
from autoprune.flops import measured_macs, param_count
from autoprune.io import read_json
from autoprune.jobs.figures import cached_figure, store_figure
from autoprune.jobs.paths import check_writable_file, removed_on_failure
from autoprune.latency import latency_ms
from autoprune.plan import Plan
from autoprune.progress import SILENT, Reporter
from autoprune.recalibration import recalibrate_batchnorm
from autoprune.registry import CRITERIA, EXPORTS
from autoprune.search_spaces import space_for
from autoprune.space import PruningSpace
from autoprune.surgery import PruneResult, apply_plan, export_onnx, export_torchscript, save_pruned
from autoprune.train import TrainConfig, evaluate_dataset, train

RECAL_BATCH = 128
RECAL_BATCHES = 8


@dataclass(frozen=True)
class ModelReport:
    """One row of the before/after table."""

    label: str
    flops: int
    params: int
    latency_ms: float | None  # None: not timed (--no-latency)
    accuracy: float | None
    predicted_ms: float | None = None
    """Latency the plan's latency table predicts (dense: the table's measured dense latency)."""


@dataclass(frozen=True)
class ApplyReport:
    rows: list[ModelReport]
    out: Path
    exported: Path | None
    notes: list[str]
    predicted_on: str | None = None
    """The latency table's target (device, threads, batch) when the rows have predictions."""


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
    trust_code: bool = False,
    dense_eval: bool = True,
    latency: bool = True,
) -> ApplyReport:
    """Prune a dense checkpoint by a Plan (or best_trial.json), optionally fine-tune, save and export.

    ``criterion`` is one of :data:`autoprune.registry.CRITERIA`; ``auto`` tries each data-free
    criterion on the search split and keeps the most accurate candidate. A checkpoint naming a
    ``module:callable`` builder is rebuilt only with ``trust_code=True``. Every input is
    checked before the work starts; on failure or Ctrl-C no file is left half written and
    folders made for ``out`` are removed.

    The dense row's test accuracy and CPU latency are cached by the checkpoint's sha256 (see
    :mod:`autoprune.jobs.figures`); ``dense_eval=False`` never evaluates the dense model (the
    cached figure, else the accuracy its checkpoint recorded), ``latency=False`` times nothing.
    """
    CRITERIA.check(criterion)
    if export is not None:
        EXPORTS.check(export)
    dev = resolve_device(device)
    check_writable_file(out, "--out")
    plan, document = _read_plan(plan_path)
    checkpoint, notes = _checkpoint_of(document, plan_path, checkpoint)
    dense, ckpt = load_model(checkpoint, arch=document.get("arch"), trust_code=trust_code)
    meta = ckpt.meta
    space = space_for(dense, ckpt.arch, meta["input_size"], meta["num_classes"])
    space.check_plan(plan)
    splits = load_dataset(meta["dataset"], data_dir, input_size=meta["input_size"], seed=seed)
    dense.to(dev).eval()
    rows = [_dense_row(dense, checkpoint, meta, splits, dev, evaluate=dense_eval, timed=latency)]
    result = _prune_recalibrated(dense, plan, criterion, space, splits, dev, seed)
    pruned = result.model
    rows.append(_row("pruned (BN recalibrated)", pruned, splits, dev, timed=latency))
    if finetune_epochs > 0:
        config = TrainConfig(epochs=finetune_epochs, lr=lr, batch_size=batch_size, seed=seed, warmup_epochs=0)
        train(pruned, splits, config, device=dev, teacher=dense if kd else None, reporter=reporter)
        label = f"pruned + fine-tune {finetune_epochs} ep" + (" (KD)" if kd else "")
        rows.append(_row(label, pruned, splits, dev, timed=latency))
    pruned.cpu().eval()
    with removed_on_failure(out):
        saved = save_pruned(out, result)
        exported = _export(pruned, Path(out), export, meta["input_size"])
    rows, predicted_on = _with_predictions(rows, document)
    return ApplyReport(rows, saved, exported, notes, predicted_on)


def _prune_recalibrated(
    dense: nn.Module,
    plan: Plan,
    criterion: str,
    space: PruningSpace,
    splits: DataSplits,
    dev: torch.device,
    seed: int,
) -> PruneResult:
    """``dense`` pruned by ``plan`` (``auto``: the criterion most accurate on the search split),
    its model on ``dev`` with BN statistics re-estimated on training batches."""
    loader = make_loader(splits.search, RECAL_BATCH) if criterion == "auto" else None
    result = apply_plan(dense, plan, criterion, space=space, loader=loader, seed=seed)
    pruned = result.model.to(dev)
    recal = EvalBatches.from_dataset(splits.train_plain, RECAL_BATCH, RECAL_BATCHES * RECAL_BATCH, seed=seed)
    recalibrate_batchnorm(pruned, recal.images, dev)
    return result


def _with_predictions(
    rows: list[ModelReport], document: dict[str, Any]
) -> tuple[list[ModelReport], str | None]:
    """The rows with the latency best_trial.json predicts (when its study had a latency table)."""
    cost, table = document.get("cost"), document.get("latency_table")
    if not isinstance(cost, dict) or not isinstance(table, dict):
        return rows, None
    pruned, dense = cost.get("latency_ms"), table.get("dense_ms")
    if not isinstance(pruned, (int, float)) or not isinstance(dense, (int, float)):
        return rows, None
    device, threads, batch = (table.get(k, "?") for k in ("device", "threads", "batch_size"))
    on = f"{device}, {threads} thread(s), batch {batch}"
    out = [replace(rows[0], predicted_ms=float(dense))]
    out += [replace(r, predicted_ms=float(pruned)) for r in rows[1:]]
    return out, on


def _read_plan(path: str | os.PathLike) -> tuple[Plan, dict[str, Any]]:
    """The plan (well-formed; checked against the model later) and the whole document it came in."""
    document = read_json(path, "plan")
    return Plan.from_document(document, path), document


def _checkpoint_of(
    document: dict[str, Any], plan_path: str | os.PathLike, checkpoint: str | os.PathLike | None
) -> tuple[str | os.PathLike, list[str]]:
    """The dense checkpoint: the one given, else the one the plan document names."""
    if checkpoint is None:
        named = document.get("checkpoint")
        if named is None:
            raise AutopruneError(f"{plan_path} names no dense checkpoint; pass --checkpoint dense.pt")
        if not isinstance(named, str) or not named:
            raise AutopruneError(
                f"{plan_path}: its 'checkpoint' must be a file path, not {named!r}; "
                "pass --checkpoint dense.pt"
            )
        return named, []
    if not Path(checkpoint).is_file():
        raise AutopruneError(f"checkpoint {str(checkpoint)!r} does not exist")
    if document.get("checkpoint_sha256") not in (None, file_sha256(checkpoint)):
        return checkpoint, [f"note: {checkpoint} is not the checkpoint this plan was searched on"]
    return checkpoint, []


def _row(
    label: str,
    model: torch.nn.Module,
    splits: DataSplits,
    device: torch.device,
    *,
    timed: bool = True,
    figures: tuple[float | None, float | None] | None = None,
) -> ModelReport:
    """FLOPs, params and CPU latency of ``model`` with its test accuracy (``figures``: the
    accuracy and latency already known, measured otherwise; ``timed=False``: no latency)."""
    accuracy, ms = figures or (evaluate_dataset(model, splits.test, device).accuracy, None)
    size = splits.input_size
    on_cpu = copy.deepcopy(model).cpu().eval()
    if timed and ms is None:
        ms = latency_ms(on_cpu, size)
    example = torch.zeros(1, 3, size, size)
    return ModelReport(
        label, measured_macs(on_cpu, example), param_count(on_cpu), ms if timed else None, accuracy
    )


def _dense_row(
    model: torch.nn.Module,
    checkpoint: str | os.PathLike,
    meta: dict[str, Any],
    splits: DataSplits,
    device: torch.device,
    *,
    evaluate: bool,
    timed: bool,
) -> ModelReport:
    """The dense row, its accuracy and latency from the cache when known (and cached once measured)."""
    sha = file_sha256(checkpoint)
    accuracy_key = f"test accuracy {meta['dataset']} {splits.input_size}px"
    latency_key = f"cpu latency b64 ms, {torch.get_num_threads()} thread(s)"
    accuracy = cached_figure(sha, accuracy_key)
    if accuracy is None and evaluate:
        accuracy = evaluate_dataset(model, splits.test, device).accuracy
        store_figure(sha, accuracy_key, accuracy)
    elif accuracy is None:
        accuracy = meta.get("accuracy")  # what training measured on the same test split
    ms = cached_figure(sha, latency_key) if timed else None
    row = _row("dense", model, splits, device, timed=timed, figures=(accuracy, ms))
    if timed and ms is None:
        store_figure(sha, latency_key, row.latency_ms)
    return row


def _export(model: torch.nn.Module, out: Path, export: str | None, size: int) -> Path | None:
    example = torch.zeros(1, 3, size, size)
    if export == "torchscript":
        return export_torchscript(model, out.with_suffix(".ts"), example)
    if export == "onnx":
        return export_onnx(model, out.with_suffix(".onnx"), example)
    return None
