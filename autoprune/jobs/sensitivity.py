"""The sensitivity job: `autoprune sensitivity` as one library call that returns values.

Checkpoint -> (train one first if missing) -> search split -> sensitivity ->
JSON + chart -> optional depth Plan. The CLI only parses and prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from autoprune import sensitivity as sens_lib
from autoprune.budget import plan_cost
from autoprune.checkpoint import file_sha256, load_model
from autoprune.cost import CostModel
from autoprune.data import load_dataset
from autoprune.device import resolve_device
from autoprune.errors import AutopruneError
from autoprune.jobs.checkpoint import DenseRecipe, ensure_checkpoint
from autoprune.jobs.paths import check_writable_file, removed_on_failure
from autoprune.jobs.source import ScoreFn
from autoprune.jobs.threads import torch_threads
from autoprune.plan import Plan
from autoprune.progress import SILENT, Reporter
from autoprune.search_spaces import space_for
from autoprune.sensitivity.depth import check_removal_count
from autoprune.sensitivity.images import Data
from autoprune.space import PruningSpace


@dataclass
class SensitivityJob:
    """Inputs of one run (the CLI's options)."""

    arch: str | None = None
    dataset: str | None = None  # None: the checkpoint's dataset
    default_dataset: str = "digits"  # when a dense model must be trained and none is named
    data_dir: str | os.PathLike | None = None
    checkpoint: Path | None = None
    method: str = "sr-init"
    unit: str = "block"
    seeds: int = 3
    sigmas: list[float] | tuple[float, ...] = sens_lib.DEFAULT_SIGMAS
    images: int | None = None
    adaptive: bool = False
    adaptive_target: float = 0.95
    max_memory: int = sens_lib.DEFAULT_MAX_MEMORY
    chunk_size: int | None = None
    exact: bool = False
    tau: float | None = None
    remove_k: int | None = None
    plan_out: Path | None = None
    from_json: Path | None = None
    seed: int | None = None
    epochs: int = 15
    threads: int | None = None
    device: str = "auto"
    out: Path = Path("sens.json")
    chart: Path | None = None
    train_missing: bool = False  # a missing --checkpoint path: train a dense model there (else an error)
    trust_code: bool = False  # build a module:callable arch named by the checkpoint
    weights: str | None = None  # a dense model trained first starts from these published weights


@dataclass
class SensitivityJobResult:
    sensitivity: sens_lib.Sensitivity
    json_path: Path
    chart_path: Path
    checkpoint: Path
    plan: Plan | None = None
    plan_path: Path | None = None
    flops_ratio: float | None = None
    params_ratio: float | None = None


def run_sensitivity_job(job: SensitivityJob, reporter: Reporter = SILENT) -> SensitivityJobResult:
    """Run ``job`` (see the module docstring); files are written atomically."""
    out = Path(job.out)
    resolve_device(job.device)  # fail before training or measuring anything
    if job.from_json is None:
        check_writable_file(out, "--out")
    check_writable_file(job.chart or out.with_suffix(".png"), "--chart")
    if job.tau is not None or job.remove_k is not None:
        check_writable_file(job.plan_out or out.with_name(out.stem + ".plan.json"), "--plan-out")
    with removed_on_failure(out, job.chart or out, job.plan_out or out):
        return _run(job, out, reporter)


def _run(job: SensitivityJob, out: Path, reporter: Reporter) -> SensitivityJobResult:
    ckpt_path = _checkpoint(job, out, reporter)
    model, ckpt = load_model(ckpt_path, job.arch, trust_code=job.trust_code)
    meta = ckpt.meta
    space = space_for(model, ckpt.arch, meta["input_size"], meta["num_classes"])
    depth = job.tau is not None or job.remove_k is not None
    if depth and job.from_json is None and job.method == "bn-gamma":
        raise AutopruneError("depth pruning needs a data-driven drop (sr-init or sbpf), not bn-gamma")
    if job.remove_k is not None:  # fail before the long computation
        check_removal_count(job.remove_k, len(space.removable_blocks), len(space.blocks))
    if job.from_json is not None:
        sens = sens_lib.load_sensitivity(job.from_json, space)
        json_path = Path(job.from_json)
    else:
        sens = _compute(job, model, space, ckpt.arch, meta, ckpt_path, reporter)
        json_path = sens.save(out)
    chart_path = sens_lib.save_chart(sens, job.chart or out.with_suffix(".png"))
    result = SensitivityJobResult(sens, json_path, chart_path, ckpt_path)
    if depth:
        _depth_plan(job, space, sens, out, result)
    return result


def _checkpoint(job: SensitivityJob, out: Path, reporter: Reporter) -> Path:
    """The dense checkpoint to use (default: dense-ARCH-DATASET.pt beside ``out``), trained if missing."""
    dataset = job.dataset or job.default_dataset
    if job.checkpoint is None and job.arch is None:
        raise AutopruneError("give --checkpoint, or --arch (and --dataset) to train a dense model first")
    default = out.parent / f"dense-{job.arch}-{_safe(dataset)}.pt"
    recipe = DenseRecipe.from_options(job, dataset, epochs=job.epochs)
    return ensure_checkpoint(job.checkpoint, default, recipe, reporter, train_missing=job.train_missing)


def _compute(
    job: SensitivityJob,
    model: torch.nn.Module,
    space: PruningSpace,
    arch: str,
    meta: dict,
    ckpt_path: Path,
    reporter: Reporter,
) -> sens_lib.Sensitivity:
    """Measure the sensitivity on the search split the dense model did not train on."""
    dataset = job.dataset or meta.get("dataset") or job.default_dataset
    data = None
    if job.method != "bn-gamma":
        data = _search_split(dataset, job, meta, reporter)
        if job.images is not None and job.images > len(data):
            reporter.note(f"the search split has {len(data)} images; using all of them")
    provenance = sens_lib.Provenance(arch, dataset, file_sha256(ckpt_path))
    return measure_sensitivity(job, model, space, data, provenance, reporter)


def measure_sensitivity(
    job: SensitivityJob,
    model: torch.nn.Module,
    space: PruningSpace,
    data: Data | ScoreFn | None,
    provenance: sens_lib.Provenance,
    reporter: Reporter = SILENT,
) -> sens_lib.Sensitivity:
    """The sensitivity of ``model``'s units once the inputs are resolved (the CLI and
    :func:`autoprune.sensitivity` share it): ``data`` is the search split (a Dataset or an
    (images, labels) pair), a ``score_fn(model) -> float`` (higher is better), or None for
    bn-gamma; ``job`` gives the method, unit, seeds, images, device and threads."""
    device = resolve_device(job.device)
    perturbation = sens_lib.Perturbation(job.method, seeds=job.seeds, sigmas=tuple(job.sigmas))
    with torch_threads(job.threads):
        if callable(data) and not isinstance(data, Dataset):
            return sens_lib.compute_sensitivity_scored(
                model,
                space,
                data,
                unit=job.unit,
                perturbation=perturbation,
                device=device,
                provenance=provenance,
                reporter=reporter,
            )
        return sens_lib.compute_sensitivity(
            model,
            space,
            data,
            unit=job.unit,
            perturbation=perturbation,
            images=sens_lib.Images(count=job.images, chunk=job.chunk_size, max_memory=job.max_memory),
            adaptive=sens_lib.Adaptive(target=job.adaptive_target) if job.adaptive else False,
            execution=sens_lib.Execution.plain(device=device)
            if job.exact
            else sens_lib.Execution(device=device),
            provenance=provenance,
            reporter=reporter,
        )


def _depth_plan(
    job: SensitivityJob,
    space: PruningSpace,
    sens: sens_lib.Sensitivity,
    out: Path,
    result: SensitivityJobResult,
) -> None:
    """The depth Plan (removed blocks) of ``sens``, saved, with its cost, into ``result``."""
    plan = sens_lib.depth_plan(space, sens, tau=job.tau, k=job.remove_k)
    result.plan = plan
    result.plan_path = plan.save(job.plan_out or out.with_name(out.stem + ".plan.json"))
    cost = CostModel(space)
    flops, params = plan_cost(space, plan, cost)
    result.flops_ratio = flops / cost.dense_flops
    result.params_ratio = params / cost.dense_params


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _search_split(dataset: str, job: SensitivityJob, meta: dict, reporter: Reporter):
    """The search split the dense model did not train on (the checkpoint's split seed)."""
    ckpt_dataset = meta.get("dataset")
    if ckpt_dataset and dataset != ckpt_dataset:
        reporter.note(f"note: the checkpoint was trained on {ckpt_dataset}, measuring on {dataset}")
    seed = job.seed if job.seed is not None else int(meta.get("seed", 0))
    splits = load_dataset(dataset, job.data_dir, input_size=meta["input_size"], seed=seed)
    if splits.num_classes != meta["num_classes"]:
        raise AutopruneError(
            f"{dataset} has {splits.num_classes} classes, the checkpoint's model {meta['num_classes']}"
        )
    return splits.search
