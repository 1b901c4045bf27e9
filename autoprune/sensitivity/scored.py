"""Sensitivity by a user's metric: each unit's variants are swapped into the model in place and
``score_fn(model)`` is called; the drop is the clean score minus the perturbed one.

The Python API's path (:func:`autoprune.sensitivity` with a score function); the variants are
the same overrides the top-1 paths use (:mod:`.perturbation`), so a unit's seeds redraw it the
same way. ``score_fn`` must not change the model it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from autoprune.progress import Reporter
from autoprune.sensitivity.perturbation import Variant
from autoprune.sensitivity.units import Overrides, Unit


def call_score(model: nn.Module, score_fn: Callable[[nn.Module], float]) -> float:
    """``score_fn(model)`` in eval mode under ``torch.no_grad()``, as a float."""
    model.eval()
    with torch.no_grad():
        return float(score_fn(model))


@contextmanager
def swapped(model: nn.Module, overrides: Overrides) -> Iterator[None]:
    """``model`` with ``overrides`` copied into its tensors, restored afterwards."""
    tensors = dict(model.named_parameters(remove_duplicate=False)) | dict(
        model.named_buffers(remove_duplicate=False)
    )
    saved = {}
    with torch.no_grad():
        for name, value in overrides.items():
            saved[name] = tensors[name].detach().clone()
            tensors[name].copy_(value)
    try:
        yield
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                tensors[name].copy_(value)


def run_scored(
    ref: nn.Module,
    units: list[Unit],
    variants: list[Variant],
    overrides: Callable[[Unit, Variant], Overrides],
    score_fn: Callable[[nn.Module], float],
    reporter: Reporter,
) -> tuple[float, list[list[float]]]:
    """(clean score, drops per unit and variant)."""
    score0 = call_score(ref, score_fn)
    reporter.start("sensitivity (score_fn)", len(units) * len(variants))
    drops = []
    try:
        for u in units:
            row = []
            for v in variants:
                with swapped(ref, overrides(u, v)):
                    row.append(score0 - call_score(ref, score_fn))
                reporter.advance(1, unit=u.id)
            drops.append(row)
    finally:
        reporter.finish()
    return score0, drops
