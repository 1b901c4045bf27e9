"""The activations the fused kernels know, by name and by the integer code kernels use."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autoprune.errors import AutopruneError

#: Names accepted by every fused op; the position in this tuple is the kernels' integer code.
ACTIVATIONS: tuple[str, ...] = ("none", "relu", "relu6", "hardswish")


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
    code = activation_code(act)
    if code == 1:
        return F.relu(y)
    if code == 2:
        return F.relu6(y)
    if code == 3:
        return F.hardswish(y)
    return y
