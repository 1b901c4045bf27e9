"""Near-ties: chunks whose engine logits could flip top-1 are scored again by the plain model.

Folding and fusion change the last bits of the logits (by at most 2.1e-6 of
``1 + max |logit|`` on the benchmark's trained resnet56 and mobilenetv2), enough
to flip top-1 on an image whose label logit and best other logit are closer than
that. Before the run, the engine's and the plain model's logits on the first
chunk are compared; the tolerance is ``TIE_FACTOR`` times the largest deviation
seen, at least ``TIE_TOLERANCE``. Whenever a chunk's engine logits hold an image
within the tolerance of a flip, that chunk is scored again by the plain model,
with the arithmetic and chunking of the naive method; top-1 Δ therefore equals
the naive method's. The JSON records the tolerance and the rescored passes (at
most 1.2 % of them on the benchmark models).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from autoprune.sensitivity.perturbation import Variant
from autoprune.sensitivity.units import Overrides, Unit, plain_forward

TIE_TOLERANCE = 2e-5
"""The least near-tie tolerance, as a fraction of ``1 + max |logit|`` (see the module docstring)."""
TIE_FACTOR = 10.0
"""The near-tie tolerance over the largest engine-vs-plain deviation measured on the first chunk."""


class Rescore:
    """Logits of a chunk, from the plain model when the engine's are near a flip (module docstring)."""

    def __init__(
        self, ref: nn.Module, raw_overrides: Callable[[Unit, Variant], Overrides], device: torch.device
    ) -> None:
        self.ref, self.raw_overrides, self.device = ref, raw_overrides, device
        self.tolerance: float | None = None  # None: the engine computes as the plain model does
        self.count = 0

    def calibrate(self, engine_logits: torch.Tensor, raw: torch.Tensor) -> None:
        """Set the tolerance from the engine's deviation from the plain model on ``raw``."""
        plain = plain_forward(self.ref, raw.to(self.device))
        if not isinstance(plain, torch.Tensor) or plain.shape != engine_logits.shape:
            return  # not logits; job.score says so
        plain, fast = plain.float(), engine_logits.float()
        deviation = ((fast - plain).abs().amax(dim=1) / (1.0 + plain.abs().amax(dim=1))).max()
        self.tolerance = max(TIE_TOLERANCE, TIE_FACTOR * float(deviation))

    def __call__(
        self,
        logits: torch.Tensor,
        raw: torch.Tensor,
        y: torch.Tensor,
        u: Unit | None = None,
        v: Variant | None = None,
    ) -> torch.Tensor:
        if self.tolerance is None or not near_flip(logits, y, self.tolerance):
            return logits
        self.count += 1
        overrides = None if u is None or v is None else self.raw_overrides(u, v)
        return plain_forward(self.ref, raw.to(self.device), overrides)


def near_flip(logits: torch.Tensor, y: torch.Tensor, tolerance: float) -> bool:
    """Whether some row's label logit is within ``tolerance * (1 + max |logit|)`` of its best other
    logit: a rounding that small could flip that image's top-1 correctness."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[1] < 2:
        return False
    logits = logits.float()
    label = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    scale = 1.0 + logits.abs().amax(dim=1)
    return bool(((label - other).abs() <= tolerance * scale).any())
