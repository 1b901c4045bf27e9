"""The naive reference: the whole network for every unit, variant and chunk."""

from __future__ import annotations

import torch
from torch import nn

from autoprune.sensitivity.engine import Engine
from autoprune.sensitivity.images import chunks
from autoprune.sensitivity.job import Job
from autoprune.sensitivity.units import Overrides, plain_forward


def run_naive(ref: nn.Module, engine: Engine | None, job: Job) -> None:
    """Whole network (``engine``'s; None: the plain ``ref``), every unit, variant and chunk."""
    scores, rescore, reporter = job.scores, job.rescore, job.reporter

    def forward(x: torch.Tensor, overrides: Overrides | None = None) -> torch.Tensor:
        if engine is not None:
            return engine.forward(x, overrides)
        return plain_forward(ref, x, overrides)

    fmt = engine.format if engine is not None else (lambda t: t.to(rescore.device))
    batches = [(x, fmt(x), y.to(rescore.device)) for x, y in chunks(job.dataset, job.order, job.chunk)]
    reporter.start("sensitivity (naive)", len(job.units) * len(job.variants))
    with torch.inference_mode():
        at = 0
        for raw, x, y in batches:
            scores.clean(at, rescore(forward(x), raw, y), y)
            at += len(y)
        for u in job.units:
            for vi, v in enumerate(job.variants):
                overrides = job.perturb(u, v)
                at = 0
                for raw, x, y in batches:
                    scores.unit(u.id, vi, at, rescore(forward(x, overrides), raw, y, u, v), y)
                    at += len(y)
                reporter.advance(1, unit=u.id)
    reporter.finish()
