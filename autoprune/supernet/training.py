"""Stage-wise supernet training with in-place distillation and sandwich sampling.

The student is the importance-ordered dense network (:class:`SupernetExecutor`); the
teacher is a frozen copy of it. For every batch the teacher's stage outputs are
computed once; for each sampled plan, stage ``s`` of the student reads the teacher's
stage ``s-1`` output (restricted to the plan's channels) and is trained to match the
teacher's stage ``s`` output on the same channels:

    L_s = ||student_s - teacher_s||² / ||teacher_s||²      (+ KL(teacher ‖ student) at the last stage)

Each step samples the full plan, the smallest plan of the search (every group at
``r_min``) and two random plans (sandwich rule); the losses of the four are summed.
"""

from __future__ import annotations

import copy
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from autoprune.checkpoint import load_torch_file, versions
from autoprune.data import DataSplits, make_loader
from autoprune.errors import AutopruneError
from autoprune.io import atomic_write
from autoprune.plan import Plan
from autoprune.progress import SILENT, Reporter
from autoprune.space import PruningSpace
from autoprune.supernet.executor import SupernetExecutor, dim_indices, first_k
from autoprune.supernet.stages import StageGraph

SUPERNET_FORMAT = "autoprune.supernet/1"
R_MIN = 0.1  # the search's default smallest keep ratio (autoprune.prior.R_MIN)


@dataclass(frozen=True)
class SupernetConfig:
    """How to train: ``steps`` (else ``epochs`` over the training split), SGD + cosine."""

    steps: int | None = None
    epochs: float = 5.0
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-5
    seed: int = 0
    r_min: float = R_MIN
    random_plans: int = 2
    temperature: float = 1.0


def sandwich(
    space: PruningSpace, rng: np.random.Generator, r_min: float = R_MIN, n_random: int = 2
) -> list[np.ndarray]:
    """The plans of one step (channel counts in group order): full, smallest, ``n_random`` random.

    Smallest: every group at ``r_min`` (the search's lower bound), rounded as the space rounds.
    Random: keep ratios drawn uniformly in [r_min, 1] per group.
    """
    n = len(space.groups)
    plans = [space.max_counts, space.channels_from_ratios(np.full(n, r_min))]
    plans += [space.channels_from_ratios(rng.uniform(r_min, 1.0, n)) for _ in range(n_random)]
    return plans


def _restrict(t: torch.Tensor, segs, kept: Sequence[np.ndarray]) -> torch.Tensor:
    idx = dim_indices(segs, kept)
    if idx is None:
        return t
    return t.index_select(1, torch.as_tensor(idx, device=t.device))


@dataclass
class Supernet:
    """The weight-shared network, its stages and where it came from.

    ``meta``: plain values (arch, checkpoint_sha256, criterion, dataset, input_size,
    num_classes, steps, stage_losses ...), stored with the weights.
    """

    executor: SupernetExecutor
    stages: StageGraph
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dense(
        cls,
        model: nn.Module,
        space: PruningSpace,
        *,
        criterion: str = "l1",
        meta: dict[str, Any] | None = None,
    ) -> Supernet:
        executor = SupernetExecutor.from_dense(model, space, criterion)
        return cls(
            executor,
            StageGraph(executor.model, space, _example(space, model)),
            {"criterion": criterion, **(meta or {})},
        )

    @property
    def space(self) -> PruningSpace:
        return self.executor.space

    @property
    def model(self) -> nn.Module:
        return self.executor.model

    # -- losses ----------------------------------------------------------------

    def teacher_outputs(self, teacher: StageGraph, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return teacher([x] + [None] * (teacher.n_stages - 1))

    def stage_losses(
        self,
        x: torch.Tensor,
        counts: np.ndarray,
        teacher_outs: Sequence[torch.Tensor],
        *,
        state: dict[str, torch.Tensor] | None = None,
        temperature: float = 1.0,
    ) -> list[torch.Tensor]:
        """Normalized loss of each stage of the plan ``counts`` against the teacher's outputs.

        ``state``: the plan's tensors by state-dict key (default: slices of the shared
        weights, so the losses backpropagate into them; a built plan's ``state_dict()`` runs
        that model's weights and statistics instead).
        """
        ex = self.executor
        dims = ex.plan_dims(counts)
        kept = first_k(self.space, counts)
        segs = self.stages.segs
        inputs = [x] + [_restrict(t, segs[s], kept).clone() for s, t in enumerate(teacher_outs[:-1])]
        targets = [_restrict(t, segs[s], kept) for s, t in enumerate(teacher_outs)]
        if state is None:
            state = ex.sliced_state(dims)
        state = {f"gm.{k}": v for k, v in state.items()}
        with ex.widths(dims):
            outs = functional_call(self.stages, state, (inputs,), strict=False)
        losses = [
            ((o - t) ** 2).sum() / (t**2).sum().clamp_min(1e-12) for o, t in zip(outs, targets, strict=True)
        ]
        tt = temperature
        kl = F.kl_div(
            F.log_softmax(outs[-1] / tt, 1), F.softmax(targets[-1] / tt, 1), reduction="batchmean"
        ) * (tt * tt)
        losses[-1] = losses[-1] + kl
        return losses

    # -- files -----------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """torch.save of tensors and plain metadata (loadable with ``weights_only=True``), atomically."""
        payload = {
            "format": SUPERNET_FORMAT,
            "meta": dict(self.meta),
            "group_ids": [g.id for g in self.space.groups],
            "order": [torch.as_tensor(o) for o in self.executor.order],
            "versions": versions(),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
        }
        return atomic_write(path, lambda tmp: torch.save(payload, tmp))

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        model: nn.Module,
        space: PruningSpace,
        *,
        arch: str | None,
        checkpoint_sha256: str | None,
    ) -> Supernet:
        """A saved supernet on a copy of the dense ``model`` (its architecture); refused when it was
        trained for another architecture, another space or another dense checkpoint."""
        payload = load_torch_file(path, "supernet")
        where = f"supernet {str(path)!r}"
        if not isinstance(payload, dict) or payload.get("format") != SUPERNET_FORMAT:
            raise AutopruneError(
                f"{where} is not a supernet saved by autoprune (expected format {SUPERNET_FORMAT})"
            )
        meta = payload.get("meta") or {}
        if arch is not None and meta.get("arch") not in (None, arch):
            raise AutopruneError(f"{where} was trained for {meta.get('arch')!r}, not {arch!r}")
        theirs = meta.get("checkpoint_sha256")
        if checkpoint_sha256 is not None and theirs != checkpoint_sha256:
            raise AutopruneError(
                f"{where} was trained from another dense checkpoint (sha256 {str(theirs)[:12]}..., this one "
                f"{checkpoint_sha256[:12]}...); train one for it with `autoprune supernet`"
            )
        if payload.get("group_ids") != [g.id for g in space.groups]:
            raise AutopruneError(f"{where} was trained on another pruning space than this model's")
        net = copy.deepcopy(model)
        try:
            net.load_state_dict(payload["state_dict"])
            order = [np.asarray(o, dtype=np.int64) for o in payload["order"]]
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise AutopruneError(f"{where} does not fit this model: {str(exc).splitlines()[0]}") from None
        executor = SupernetExecutor(net, space, order)
        return cls(executor, StageGraph(net, space, _example(space, net)), meta)


def _example(space: PruningSpace, model: nn.Module) -> torch.Tensor:
    p = next(model.parameters(), None)
    return torch.zeros(1, *space.input_shape[1:], device=p.device if p is not None else "cpu")


def frozen_teacher(supernet: Supernet) -> StageGraph:
    """The stages of a frozen copy of the supernet's current weights (its full plan).

    Its norms normalize with the batch's statistics, as the student's do while it trains
    (and as a plan's recalibrated statistics do when it is scored), so at the start the
    student's full plan matches it exactly.
    """
    net = copy.deepcopy(supernet.model)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats, m.running_mean, m.running_var = False, None, None
    for p in net.parameters():
        p.requires_grad_(False)
    return StageGraph(net.eval(), supernet.space, _example(supernet.space, net))


@dataclass
class TrainHistory:
    steps: int
    stage_losses: list[list[float]]  # per step, per stage: mean over the step's plans


def train_supernet(
    supernet: Supernet,
    splits: DataSplits,
    config: SupernetConfig = SupernetConfig(),
    *,
    device: torch.device | str = "cpu",
    reporter: Reporter = SILENT,
    stop: threading.Event | None = None,
) -> TrainHistory:
    """Train ``supernet`` in place (see the module docstring); Ctrl-C or ``stop`` end it within a step
    by raising KeyboardInterrupt. Progress: the reporter gets each step's stage losses."""
    device = torch.device(device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    student = supernet.model.to(device)
    teacher = frozen_teacher(supernet)
    supernet.stages = StageGraph(student, supernet.space, _example(supernet.space, student))
    loader = make_loader(splits.train, config.batch_size, shuffle=True, seed=config.seed, drop_last=True)
    per_epoch = max(len(loader), 1)
    steps = config.steps if config.steps is not None else max(1, math.ceil(config.epochs * per_epoch))
    optimizer, scheduler = _optimizer(student, config, steps)
    history: list[list[float]] = []
    reporter.start("supernet", steps)
    student.train()
    try:
        step = 0
        while step < steps:
            for x, _ in loader:
                x = x.to(device, non_blocking=True)
                means = _train_step(supernet, teacher, x, optimizer, rng, config)
                scheduler.step()
                history.append(means)
                step += 1
                reporter.advance(1, loss=float(sum(means)), **{f"stage{s}": v for s, v in enumerate(means)})
                if stop is not None and stop.is_set():
                    raise KeyboardInterrupt
                if step >= steps:
                    break
    finally:
        reporter.finish()
        student.eval()
    supernet.meta.update(
        steps=int(supernet.meta.get("steps", 0)) + steps, stage_losses=history[-1] if history else []
    )
    return TrainHistory(steps, history)


def _optimizer(
    student: nn.Module, config: SupernetConfig, steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Nesterov SGD (weight decay on weights, not on biases or norms), cosine schedule over ``steps``."""
    decay = [p for p in student.parameters() if p.ndim > 1]
    other = [p for p in student.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=config.lr,
        momentum=config.momentum,
        nesterov=True,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps))
    )
    return optimizer, scheduler


def _train_step(
    supernet: Supernet,
    teacher: StageGraph,
    x: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    config: SupernetConfig,
) -> list[float]:
    """One optimizer step on batch ``x`` over the sandwich's plans; the stage losses, mean over the plans."""
    with torch.no_grad():
        t_outs = teacher([x] + [None] * (teacher.n_stages - 1))
    optimizer.zero_grad(set_to_none=True)
    sums = np.zeros(teacher.n_stages)
    plans = sandwich(supernet.space, rng, config.r_min, config.random_plans)
    for counts in plans:
        losses = supernet.stage_losses(x, counts, t_outs, temperature=config.temperature)
        torch.stack(losses).sum().backward()
        sums += [float(v.detach()) for v in losses]
    optimizer.step()
    return (sums / len(plans)).tolist()


def plan_counts(space: PruningSpace, plan: Plan) -> np.ndarray:
    space.check_plan(plan)
    return space.channels_vector(plan)
