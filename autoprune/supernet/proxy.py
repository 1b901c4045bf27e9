"""The ``supernet`` proxy: score a plan on the trained weight-shared network.

``metric="acc"`` (default): top-1 on the search split after BN recalibration at the
plan's widths, reported per step as :class:`~autoprune.search.proxies.RecalProxy` does.
On the CPU the plan is built by slicing the shared weights; on CUDA it runs through the
masked executor and its fused kernels (falling back to slicing, with a warning, for a
model that executor cannot run exactly). ``metric="stage-loss"``: −Σ of the plan's
normalized stage losses against the frozen full network, after the same recalibration,
reported per search batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from autoprune.data import EvalBatches
from autoprune.errors import AutopruneError
from autoprune.executor import MaskedExecutor
from autoprune.plan import Plan
from autoprune.recalibration import recalibrate_batchnorm
from autoprune.registry import PROXY_METRICS
from autoprune.search.proxies import Proxy, ProxyScore, ReportFn, score_batches
from autoprune.supernet.training import Supernet, frozen_teacher
from autoprune.surgery import module_out_masks


class SupernetProxy(Proxy):
    """Scores plans of ``supernet.space`` with the supernet's shared weights (see the module docstring)."""

    name = "supernet"

    def __init__(
        self,
        supernet: Supernet,
        recal: EvalBatches,
        search: EvalBatches,
        *,
        device: torch.device | str,
        metric: str = "acc",
        executor: str = "auto",
    ) -> None:
        PROXY_METRICS.check(metric)
        self.supernet = supernet
        self.device = torch.device(device)
        supernet.model.to(self.device).eval()
        self.recal = recal.to(self.device)
        self.search = search.to(self.device)
        self.metric = metric
        self._masked: MaskedExecutor | None = None
        self._maskable: set[str] = set()
        if metric == "acc" and (executor == "masked" or (executor == "auto" and self.device.type == "cuda")):
            try:
                self._masked, self._maskable = _masked_executor(supernet)
            except AutopruneError as exc:
                if executor == "masked":
                    raise
                warnings.warn(
                    f"supernet proxy on sliced models, not the masked executor: {exc}", stacklevel=2
                )
        self._teacher = frozen_teacher(supernet) if metric == "stage-loss" else None

    def score(self, plan: Plan, report: ReportFn | None = None) -> ProxyScore:
        ex = self.supernet.executor
        counts = ex.counts(plan)
        if self._masked is not None:
            masks = module_out_masks(ex.space, ex.prune_result(plan))
            masks = {n: m for n, m in masks.items() if n in self._maskable and not bool(m.all())}
            return score_batches(self._masked.recalibrated(self.recal.images, masks), self.search, report)
        built = ex.materialize(plan).to(self.device)
        recalibrate_batchnorm(built, self.recal.images, self.device)
        if self.metric == "acc":
            return score_batches(built, self.search, report)
        if plan.removed_blocks:
            raise AutopruneError("--proxy-metric stage-loss cannot score plans that remove blocks")
        state = dict(built.state_dict())
        total, images = 0.0, 0
        with torch.no_grad():
            for step, (x, _) in enumerate(self.search.batches):
                outs = self._teacher([x] + [None] * (self._teacher.n_stages - 1))
                loss = float(sum(self.supernet.stage_losses(x, counts, outs, state=state)))
                total += loss * len(x)
                images += len(x)
                if report is not None:
                    report(step, -loss)
        mean = total / max(images, 1)
        return ProxyScore(-mean, mean, images)


def _masked_executor(supernet: Supernet) -> tuple[MaskedExecutor, set[str]]:
    """The masked executor on the shared weights, and its maskable convs; refused (one line) unless
    every pruned layer is a conv it fuses with its BN (what exact scores under masks need)."""
    executor = MaskedExecutor(supernet.model)
    masked = set(executor.conv_names)
    covered = masked | set(executor.fused_norms)
    space = supernet.space
    beyond = [
        name
        for name, r in space.layers.items()
        if r.layer.kind != "scale" and any(gi >= 0 for gi, _, _ in r.out or ()) and name not in covered
    ]
    if beyond or executor.unfused_norms:
        what: Sequence[str] = beyond or executor.unfused_norms
        raise AutopruneError(
            "the masked executor needs every pruned layer to be a conv (+ BN) it fuses; "
            f"not: {', '.join(what[:5])}{' ...' if len(what) > 5 else ''}"
        )
    return executor, masked


def create_supernet_proxy(
    model: torch.nn.Module,
    space,
    recal: EvalBatches,
    search: EvalBatches,
    device: torch.device,
    criterion: str = "l1",
    *,
    supernet: Supernet | str | None = None,
    arch: str | None = None,
    checkpoint_sha256: str | None = None,
    metric: str = "acc",
    executor: str = "auto",
) -> SupernetProxy:
    """:func:`~autoprune.search.proxies.create_proxy`'s factory for ``supernet``.

    ``supernet``: a :class:`Supernet`, or the path of a saved one (checked against ``arch``,
    the space and the dense checkpoint's ``checkpoint_sha256``). ``criterion`` is the one the
    supernet was ordered by; it is fixed at training time.
    """
    if supernet is None:
        raise AutopruneError(
            "the supernet proxy needs a trained supernet (train one with `autoprune supernet`)"
        )
    if not isinstance(supernet, Supernet):
        supernet = Supernet.load(supernet, model, space, arch=arch, checkpoint_sha256=checkpoint_sha256)
    return SupernetProxy(supernet, recal, search, device=device, metric=metric, executor=executor)
