"""Proxy scores: a cheap, faithful estimate of how good a pruned candidate is.

A proxy turns a :class:`~autoprune.plan.Plan` into a score (higher is better)
and reports a value per report step (see :data:`MIN_REPORT_STEPS`), so a trial
pruner can stop a weak candidate early. ``recal`` is the one built in; others plug in behind
:class:`Proxy`.

``recal`` runs two ways with the same scores (up to float rounding):
:class:`RecalProxy` builds each candidate physically smaller (the fast path on the
CPU) and :class:`MaskedRecalProxy` runs the dense network with the removed channels
dead through the fused kernels of :class:`~autoprune.executor.MaskedExecutor`
(the GPU path: static shapes, nothing rebuilt per candidate). :func:`create_proxy`
picks one by device.
"""

from __future__ import annotations

import abc
import copy
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from autoprune.data import EvalBatches
from autoprune.errors import AutopruneError
from autoprune.evaluation import Evaluation, evaluate
from autoprune.executor import MaskedExecutor
from autoprune.plan import Plan
from autoprune.recalibration import recalibrate_batchnorm
from autoprune.registry import CHANNEL_CRITERIA, PROXIES
from autoprune.space import PruningSpace
from autoprune.surgery import (
    PruneResult,
    apply_plan,
    group_scores,
    layer_kept,
    module_out_masks,
    select_channels,
)

ReportFn = Callable[[int, float], None]
"""Called with (report step, that step's accuracy); may raise ``optuna.TrialPruned``."""


class ProxyScore(Evaluation):
    """A proxy's score: an :class:`~autoprune.evaluation.Evaluation` (accuracy, loss, images)."""


class Proxy(abc.ABC):
    """Scores plans of one space on ``device``; higher accuracy is better."""

    name: str
    device: torch.device

    @abc.abstractmethod
    def score(self, plan: Plan, report: ReportFn | None = None) -> ProxyScore:
        """Score ``plan``; call ``report`` after each report step (:func:`score_batches`)."""


MIN_REPORT_STEPS = 12
"""A trial reports its accuracy in at least this many steps (when it has that many images).

The Wilcoxon pruner compares a trial with the best one step by step and needs about four
steps that all go one way before p < 0.1 (one-sided, exact: 2**-4); at one report per
evaluation batch the 300-image digits search split would give three. Batches stay as large
as ``--batch-size`` (the speed), and each batch's per-image hits are cut into report steps
of ``report_images(n, batch)`` images.
"""


def report_images(total: int, batch_size: int) -> int:
    """Images per report step: one batch, or fewer so that ``total`` makes ``MIN_REPORT_STEPS``."""
    return max(1, min(batch_size, -(-total // MIN_REPORT_STEPS)))


def score_batches(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    data: EvalBatches,
    report: ReportFn | None = None,
) -> ProxyScore:
    """Top-1 and cross-entropy over ``data``; ``report`` gets the accuracy of each report step.

    :func:`autoprune.evaluation.evaluate` on the held batches; ``model``: a module
    (run in eval mode) or any callable from images to logits. Report steps are
    :func:`report_images` images each (the last may be shorter), the same for every
    candidate, so step ``k`` always covers the same images.
    """
    if report is None:
        result = evaluate(model, data.batches)
        return ProxyScore(result.accuracy, result.loss, result.images)
    total = sum(len(y) for _, y in data.batches)
    chunk = report_images(total, max((len(y) for _, y in data.batches), default=1))
    logits: list[torch.Tensor] = []
    pending: list[torch.Tensor] = []  # per-image hits not reported yet
    step = 0

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        logits[:] = [out]
        return out

    def on_batch(index: int, _accuracy: float) -> None:
        nonlocal step, pending
        hits = torch.cat([*pending, (logits[0].argmax(1) == data.batches[index][1]).float()])
        last = index == len(data.batches) - 1
        while len(hits) >= chunk or (last and len(hits)):
            part, hits = hits[:chunk], hits[chunk:]
            report(step, float(part.mean()))
            step += 1
        pending = [hits]

    module = model if isinstance(model, nn.Module) else None
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    try:
        result = evaluate(forward, data.batches, report=on_batch)
    finally:
        if module is not None:
            module.train(was_training)
    return ProxyScore(result.accuracy, result.loss, result.images)


class _PrunedProxy(Proxy):
    """Prunes a copy of the model by each plan (:func:`~autoprune.surgery.apply_plan`) and
    re-estimates its BN statistics on the ``recal`` batches; subclasses score the result."""

    def __init__(
        self, model: nn.Module, space: PruningSpace, recal: EvalBatches, device: torch.device, criterion: str
    ) -> None:
        self.model = model.eval()
        self.space = space
        self.recal = recal.to(device)
        self.device = device
        self.criterion = criterion

    def pruned(self, plan: Plan) -> nn.Module:
        """The model pruned by ``plan`` on ``device``, its BN recalibrated."""
        pruned = apply_plan(self.model, plan, self.criterion, space=self.space).model.to(self.device)
        recalibrate_batchnorm(pruned, self.recal.images, self.device)
        return pruned


class RecalProxy(_PrunedProxy):
    """Inherit weights by importance, recalibrate BN on a few training batches, top-1 on the search split."""

    name = "recal"

    def __init__(
        self,
        model: nn.Module,
        space: PruningSpace,
        recal: EvalBatches,
        search: EvalBatches,
        *,
        device: torch.device,
        criterion: str = "l1",
    ) -> None:
        super().__init__(model, space, recal, device, criterion)
        self.search = search.to(device)

    def score(self, plan: Plan, report: ReportFn | None = None) -> ProxyScore:
        return score_batches(self.pruned(plan), self.search, report)


class ScoreFnProxy(_PrunedProxy):
    """The user's metric instead of top-1: prune by the plan (:func:`~autoprune.surgery.apply_plan`),
    recalibrate BN on the user's training batches, return ``score_fn(pruned)`` (higher is better).

    ``score_fn`` gets the pruned model on ``device`` in eval mode, called under
    ``torch.no_grad()`` (``torch.enable_grad()`` inside it turns gradients back on). The score
    is reported as one step; ``ProxyScore.loss`` is minus the score, ``images`` 0.
    """

    name = "score_fn"

    def __init__(
        self,
        model: nn.Module,
        space: PruningSpace,
        recal: EvalBatches,
        score_fn: Callable[[nn.Module], float],
        *,
        device: torch.device,
        criterion: str = "l1",
    ) -> None:
        super().__init__(model, space, recal, device, criterion)
        self.score_fn = score_fn

    def score(self, plan: Plan, report: ReportFn | None = None) -> ProxyScore:
        pruned = self.pruned(plan)
        with torch.no_grad():
            value = self.score_fn(pruned)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise AutopruneError(f"score_fn must return a number, got {type(value).__name__}") from None
        if report is not None:
            report(0, value)
        return ProxyScore(value, -value, 0)


class MaskedRecalProxy(RecalProxy):
    """The recal proxy on the dense network with the removed channels dead (the GPU path).

    Channels are chosen exactly as :func:`~autoprune.surgery.apply_plan` chooses them
    (:func:`~autoprune.surgery.group_scores`, :func:`~autoprune.surgery.select_channels`,
    :func:`~autoprune.surgery.layer_kept`; the scores are computed once, the weights being
    fixed), the kept indices become conv output masks, BN statistics are re-estimated
    under the masks (:meth:`MaskedExecutor.recalibrated`) and top-1 is measured on the
    search split. Scores equal :class:`RecalProxy`'s up to float rounding.

    That equality needs every pruned producer to be a conv the executor masks (its BN
    fused after it) and zero channels to stay zero up to the next conv (activations
    with act(0) = 0, sums, concatenations, pooling); a model outside this is refused
    with an :class:`AutopruneError` here, and :func:`create_proxy` then falls back to
    :class:`RecalProxy`.
    """

    def __init__(
        self,
        model: nn.Module,
        space: PruningSpace,
        recal: EvalBatches,
        search: EvalBatches,
        *,
        device: torch.device,
        criterion: str = "l1",
        backend: str = "auto",
    ) -> None:
        if criterion not in CHANNEL_CRITERIA:
            raise AutopruneError(
                f"the masked recal proxy takes criterion {', '.join(CHANNEL_CRITERIA)}, not {criterion!r}"
            )
        device = torch.device(device)
        on_device = all(_same_device(t.device, device) for t in [*model.parameters(), *model.buffers()])
        placed = model if on_device else copy.deepcopy(model).to(device)
        super().__init__(placed, space, recal, search, device=device, criterion=criterion)
        self.executor = MaskedExecutor(self.model, backend=backend)
        self._scores = group_scores(space, model, criterion)  # as apply_plan computes them (seed 0)
        self._masked = set(self.executor.conv_names)
        covered = self._masked | set(self.executor.fused_norms)
        beyond = [
            name
            for name, r in space.layers.items()
            if r.layer.kind != "scale" and any(gi >= 0 for gi, _, _ in r.out or ()) and name not in covered
        ]
        if beyond or self.executor.unfused_norms:
            what = beyond or self.executor.unfused_norms
            raise AutopruneError(
                "the masked recal proxy needs every pruned layer to be a conv (+ BN) the executor fuses; "
                f"not: {', '.join(what[:5])}{' ...' if len(what) > 5 else ''}"
            )
        self._removable = {b.name for b in space.blocks if b.branch_end in covered}

    def out_masks(self, plan: Plan) -> dict[str, torch.Tensor]:
        """Conv output masks (True = kept) of the channels ``plan`` keeps; whole convs are left out."""
        self.space.check_plan(plan)
        unsupported = [b for b in plan.removed_blocks if b not in self._removable]
        if unsupported:
            raise AutopruneError(f"the masked recal proxy cannot remove blocks {', '.join(unsupported)}")
        chosen = select_channels(self.space, self._scores, self.space.channels_vector(plan))
        kept = layer_kept(self.space, chosen, plan.removed_blocks)
        result = PruneResult(self.model, kept, plan, self.criterion, space=self.space)
        masks = module_out_masks(self.space, result)
        return {name: m for name, m in masks.items() if name in self._masked and not bool(m.all())}

    def score(self, plan: Plan, report: ReportFn | None = None) -> ProxyScore:
        run = self.executor.recalibrated(self.recal.images, self.out_masks(plan))
        return score_batches(run, self.search, report)


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)


PROXY_FACTORIES: dict[str, Callable[..., Proxy]] = {}
"""Proxies built outside this module, by name: called with :func:`create_proxy`'s arguments and its
extra keyword options (``supernet`` is registered by :mod:`autoprune.supernet` when imported)."""

PROXY_EXECUTOR_ENV = "AUTOPRUNE_PROXY_EXECUTOR"
PROXY_EXECUTORS = ("auto", "masked", "sliced")


def create_proxy(
    name: str,
    model: nn.Module,
    space: PruningSpace,
    recal: EvalBatches,
    search: EvalBatches,
    device: torch.device,
    criterion: str = "l1",
    *,
    executor: str = "auto",
    **options: Any,
) -> Proxy:
    """The proxy ``name`` on ``device``.

    ``recal``: ``executor="masked"`` is :class:`MaskedRecalProxy`, ``"sliced"`` is
    :class:`RecalProxy`, ``"auto"`` (default; the ``AUTOPRUNE_PROXY_EXECUTOR`` variable
    overrides it) is masked on CUDA and sliced on the CPU, where slicing the kept
    channels is the fast path. ``auto`` falls back to sliced, with a warning, for a
    model the masked executor cannot run exactly.
    """
    PROXIES.check(name)
    if name != "recal":
        if name not in PROXY_FACTORIES:
            raise AutopruneError(f"proxy {name!r} is not available: import autoprune.{name} first")
        factory = PROXY_FACTORIES[name]
        device = torch.device(device)
        return factory(model, space, recal, search, device, criterion, executor=executor, **options)
    choice = executor
    if executor == "auto":
        choice = os.environ.get(PROXY_EXECUTOR_ENV, "").strip().lower() or "auto"
    if choice not in PROXY_EXECUTORS:
        source = f"executor={executor!r}" if executor != "auto" else f"{PROXY_EXECUTOR_ENV}={choice!r}"
        raise AutopruneError(f"invalid proxy executor {source}: use one of {', '.join(PROXY_EXECUTORS)}")
    device = torch.device(device)
    args = (model, space, recal, search)
    if choice == "masked":
        return MaskedRecalProxy(*args, device=device, criterion=criterion)
    if choice == "auto" and device.type == "cuda":
        try:
            return MaskedRecalProxy(*args, device=device, criterion=criterion)
        except AutopruneError as exc:
            warnings.warn(f"recal proxy on sliced models, not the masked executor: {exc}", stacklevel=2)
    return RecalProxy(*args, device=device, criterion=criterion)
