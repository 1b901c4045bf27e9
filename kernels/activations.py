"""The activations the fused kernels know, by name and by the integer code kernels use.

The names are those of :data:`autoprune.fx.fusion.ACTIVATION_TABLE` (which recognizes
them in a traced graph), plus ``none``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from autoprune.errors import AutopruneError

_REFERENCE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda y: y,
    "relu": F.relu,
    "relu6": F.relu6,
    "hardswish": F.hardswish,
}
"""Each kernel activation's plain-torch semantics, in kernel-code order."""

#: Names accepted by every fused op; the position in this tuple is the kernels' integer code.
ACTIVATIONS: tuple[str, ...] = tuple(_REFERENCE)


def activation_code(act: str) -> int:
    """The integer code of ``act`` (what the Triton and numba kernels branch on)."""
    try:
        return ACTIVATIONS.index(act)
    except ValueError:
        raise AutopruneError(
            f"unknown activation {act!r} for a fused kernel: use one of {', '.join(ACTIVATIONS)}"
        ) from None


def apply_activation(y: torch.Tensor, act: str) -> torch.Tensor:
    """``act`` applied with plain torch ops (the reference semantics)."""
    activation_code(act)  # rejects an unknown name with the kernels' message
    return _REFERENCE[act](y)
