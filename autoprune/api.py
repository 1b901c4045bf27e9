"""The Python API: the CLI's search and sensitivity jobs on a model in memory.

    result = autoprune.search(model, torch.randn(1, 3, 224, 224), flops=0.5,
                              train_loader=train, score_fn=my_map, trials=50, out="runs/det")
    small = autoprune.prune(model, result.plan)

``autoprune.search``, ``autoprune.sensitivity`` and ``autoprune.prune`` are :func:`search`,
:func:`sensitivity` and :func:`prune` here. Each resolves its arguments into a
:class:`~autoprune.jobs.source.ModelSource` (the model, its pruning space, the batches BN
recalibration draws from, the search batches or ``score_fn``) and runs the same job code the
CLI runs (:func:`autoprune.jobs.search.run_search_on_source`,
:func:`autoprune.jobs.sensitivity.measure_sensitivity`). Nothing here prints: progress goes to
``progress=`` (a callable taking :class:`~autoprune.progress.ProgressEvent`, or a Reporter).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from autoprune.errors import AutopruneError
from autoprune.jobs.search import SearchConfig, run_search_on_source
from autoprune.jobs.sensitivity import SensitivityJob, measure_sensitivity
from autoprune.jobs.source import ModelSource, ScoreFn, labelled_batches, recal_batches, score_fn_name
from autoprune.plan import Plan
from autoprune.progress import ProgressEvent, Reporter, as_reporter
from autoprune.search.outputs import BEST_TRIAL
from autoprune.search_spaces import overrides_for
from autoprune.sensitivity import (
    DEFAULT_SIGMAS,
    Provenance,
    Sensitivity,
    check_against,
    load_sensitivity,
    state_sha256,
)
from autoprune.space import PruningSpace
from autoprune.surgery import apply_plan

Progress = Reporter | Callable[[ProgressEvent], object] | None
DATASET = "python"
"""What a study made from Python records as its dataset (its data came from the caller)."""


@dataclass(frozen=True)
class SearchResult:
    """What :func:`search` returns: the best plan so far with its score and costs, and the study.

    ``score``: the best trial's value (``score_fn``'s, or proxy top-1 on ``search_loader``);
    ``cost``: flops, params (absolute) and flops_ratio, params_ratio of the dense model's;
    ``plan`` is None when no trial completed. ``run_dir`` holds best_trial.json, trials.csv,
    summary.png and the journal; ``space`` is the pruning space (``space.frozen``: what was not
    pruned, with reasons).
    """

    plan: Plan | None
    score: float | None
    cost: dict[str, float]
    study: optuna.Study
    run_dir: Path
    space: PruningSpace
    trials_done: int
    interrupted: bool = False
    best_trial: optuna.trial.FrozenTrial | None = field(default=None, repr=False)

    @property
    def best_trial_path(self) -> Path:
        return self.run_dir / BEST_TRIAL


def search(
    model: nn.Module,
    example_input: torch.Tensor | tuple[torch.Tensor, ...],
    *,
    flops: float | None = None,
    params: float | None = None,
    train_loader: Iterable,
    score_fn: ScoreFn | None = None,
    search_loader: Iterable | None = None,
    trials: int = 30,
    out: str | os.PathLike | None = None,
    storage: str | None = None,
    sampler: str = "tpe",
    proxy: str = "recal",
    sensitivity: Sensitivity | str | os.PathLike | None = None,
    study_name: str | None = None,
    seed: int | None = 0,
    progress: Progress = None,
    **options: Any,
) -> SearchResult:
    """Search per-group channel counts of ``model`` under a FLOPs and/or params budget (ratios of
    the dense model's), as ``autoprune search`` does; ``model`` itself is not modified.

    Candidates are pruned by the plan, BN is recalibrated on the first ``recal_batches`` (8)
    batches of ``train_loader``, then scored by ``score_fn(pruned) -> float`` (higher is better;
    called in eval mode under ``torch.no_grad()``, the model on ``device``) or, without one, by
    top-1 on ``search_loader``'s (images, labels). The prior comes from ``sensitivity`` (a group
    :class:`Sensitivity` or its JSON file); when None it is computed (SR-init per group, on
    ``score_fn`` or ``search_loader``), unless ``prior="uniform"``.

    The study lives in ``out`` (default ``runs/<study_name>``) exactly as the CLI's: journal,
    best_trial.json, trials.csv; calling again with the same ``out`` and ``study_name`` (and the
    same model) resumes it. ``trials`` is the study's number of finished trials (complete or
    pruned), as the CLI's ``--trials``: a resume runs only the missing ones (a larger number adds
    more). Studies made here store no checkpoint: ``autoprune worker`` refuses
    them. ``options``: ``prior``, ``pruner``, ``space`` ("group"/"stage"), ``criterion``,
    ``recal_batches``, ``search_images``, ``r_min``, ``timeout``, ``device`` (default "auto"),
    ``sensitivity_method``, ``sensitivity_seeds``, ``arch`` (a zoo name: its search-space overrides),
    ``rerank`` and ``rerank_steps`` (fine-tune the best ``rerank`` plans on ``train_loader``'s
    (images, labels) and name the best after fine-tuning, scored as the trials are).
    """
    reporter = as_reporter(progress)
    arch = options.pop("arch", None)
    if "pruner" not in options:  # one report step per score_fn trial: nothing to prune early on
        options["pruner"] = "none" if score_fn is not None else "wilcoxon"
    config = SearchConfig(
        arch=arch or type(model).__name__.lower(), flops=flops, params=params, dataset=DATASET,
        sampler=sampler, proxy=proxy, trials=trials, seed=seed, study=study_name, storage=storage,
        out=None if out is None else str(out), **options,
    )  # fmt: skip
    config.validate()
    if score_fn is None and search_loader is None:
        raise AutopruneError("give score_fn (your metric) or search_loader ((images, labels) batches)")
    source = _source(model, example_input, arch, train_loader, score_fn, search_loader, config, reporter)
    prior = _prior(config, source, sensitivity, score_fn, reporter)
    done = run_search_on_source(config, source, prior, reporter)
    return _result(done, source.space)


def _prior(
    config: SearchConfig,
    source: ModelSource,
    sensitivity: Sensitivity | str | os.PathLike | None,
    score_fn: ScoreFn | None,
    reporter: Reporter,
) -> Callable[[], Sensitivity | None]:
    """What the study's prior comes from, called only for a new study: None (uniform), the given
    sensitivity, or SR-init per group computed on ``score_fn`` or the search batches."""

    def prior() -> Sensitivity | None:
        if config.prior == "uniform":
            return None
        if sensitivity is not None:
            if isinstance(sensitivity, Sensitivity):
                if sensitivity.unit != "group":
                    raise AutopruneError(f"the prior takes unit='group', not {sensitivity.unit!r}")
                check_against(sensitivity, source.space)
                return sensitivity
            return load_sensitivity(sensitivity, source.space, unit="group")
        scorer = score_fn if score_fn is not None else _pair(source)
        reporter.note(f"computing {config.sensitivity_method} sensitivity per channel group for the prior")
        seeds, method, device = config.sensitivity_seeds, config.sensitivity_method, config.device
        job = SensitivityJob(method=method, unit="group", seeds=seeds, device=device)
        provenance = Provenance(config.arch, DATASET, None)
        return measure_sensitivity(job, source.model, source.space, scorer, provenance, reporter)

    return prior


def _source(
    model: nn.Module,
    example_input: Any,
    arch: str | None,
    train_loader: Iterable,
    score_fn: ScoreFn | None,
    search_loader: Iterable | None,
    config: SearchConfig,
    reporter: Reporter,
) -> ModelSource:
    """The search's model source: a copy of ``model`` (the caller's stays as it is), its space,
    the recal batches and the search batches or score function."""
    dense = copy.deepcopy(model).eval()
    space = _space(dense, example_input, arch or config.arch, arch is not None)
    if space.frozen:
        shown = "; ".join(f"{k}: {v}" for k, v in list(space.frozen.items())[:5])
        reporter.note(f"channels left whole (frozen) in {len(space.frozen)} module(s): {shown}")
    recal = recal_batches(train_loader, config.recal_batches)
    search = None if score_fn is not None else labelled_batches(search_loader, config.search_images)
    provenance = {
        "checkpoint": None,
        "model_sha256": state_sha256(dense),
        "score_fn": score_fn_name(score_fn),
        "input_size": _input_size(example_input),
        "num_classes": space.num_classes,
    }
    return ModelSource(dense, space, recal, search, score_fn, train_loader, provenance)


def _space(model: nn.Module, example_input: Any, label: str, zoo: bool) -> PruningSpace:
    options = overrides_for(label) if zoo else {}
    return PruningSpace.from_model(
        model,
        example_input,
        arch=label,
        round_to=options.get("round_to"),
        min_channels=options.get("min_channels", 1),
    )


def _input_size(example_input: Any) -> list[int] | None:
    x = example_input[0] if isinstance(example_input, (tuple, list)) else example_input
    return [int(d) for d in x.shape[1:]] if isinstance(x, torch.Tensor) else None


def _pair(source: ModelSource) -> tuple[torch.Tensor, torch.Tensor]:
    assert source.search is not None
    xs, ys = zip(*source.search.batches, strict=True)
    return torch.cat(xs), torch.cat(ys)


def _result(done: Any, space: PruningSpace) -> SearchResult:
    best = done.best
    plan, score, cost = None, None, {}
    if best is not None:
        plan = Plan.load(Path(done.run_dir) / BEST_TRIAL)
        score = float(best.values[0])
        cost = {k: best.user_attrs[k] for k in ("flops", "params", "flops_ratio", "params_ratio")}
    return SearchResult(
        plan, score, cost, done.study, Path(done.run_dir), space, done.trials_done, done.interrupted, best
    )


def sensitivity(
    model: nn.Module,
    example_input: torch.Tensor | tuple[torch.Tensor, ...],
    loader_or_score_fn: Iterable | Dataset | ScoreFn | None = None,
    *,
    method: str = "sr-init",
    unit: str = "group",
    seeds: int = 3,
    sigmas: tuple[float, ...] = DEFAULT_SIGMAS,
    images: int | None = None,
    device: str = "auto",
    arch: str | None = None,
    progress: Progress = None,
) -> Sensitivity:
    """How much each channel group (``unit="group"``) or residual block (``"block"``) of ``model``
    matters, as ``autoprune sensitivity`` computes it.

    ``loader_or_score_fn``: (images, labels) batches (a DataLoader; up to ``images`` images are
    used) or a Dataset, for the top-1 drop; or ``score_fn(model) -> float`` (higher is better),
    for the drop of your metric; None for ``method="bn-gamma"``. ``model`` is not modified.
    """
    data = loader_or_score_fn
    if data is not None and not callable(data) and not isinstance(data, Dataset):
        loader = data if isinstance(data, (DataLoader, list, tuple)) else list(data)
        batches = labelled_batches(loader, images)
        data = (torch.cat([x for x, _ in batches.batches]), torch.cat([y for _, y in batches.batches]))
    label = arch or type(model).__name__.lower()
    space = _space(copy.deepcopy(model).eval(), example_input, label, arch is not None)
    job = SensitivityJob(method=method, unit=unit, seeds=seeds, sigmas=sigmas, images=images, device=device)
    return measure_sensitivity(
        job, model, space, data, Provenance(label, DATASET, None), as_reporter(progress)
    )


def prune(
    model: nn.Module,
    plan: Plan | SearchResult | str | os.PathLike,
    criterion: str = "l1",
    *,
    example_input: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
    loader: Iterable | None = None,
) -> nn.Module:
    """The physically smaller ``model`` that ``plan`` describes (a Plan, a :class:`SearchResult`,
    or a plan / best_trial.json file); ``model`` is not modified.

    :func:`autoprune.apply_plan`'s model: channels chosen by ``criterion`` (l1, l2, bn_gamma,
    random, or auto, which needs ``loader``). Trace with ``example_input`` (default: zeros of the
    plan's input size). Save it with :func:`autoprune.save_pruned` on ``apply_plan``'s result.
    """
    if isinstance(plan, SearchResult):
        if plan.plan is None:
            raise AutopruneError("the search has no completed trial yet: no plan to prune by")
        plan = plan.plan
    elif not isinstance(plan, Plan):
        plan = Plan.load(plan)
    return apply_plan(model, plan, criterion, example_inputs=example_input, loader=loader).model
