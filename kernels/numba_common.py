"""Pieces shared by the numba CPU kernels: the BN + activation row epilogue and its inputs."""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from .mask import ChannelMask


@njit(inline="always")
def affine_act_row(src, dst, s, t, act):  # pragma: no cover - compiled
    """``dst[j] = act(src[j] · s + t)`` over one row (``src`` may be ``dst``); ``act``: a kernel code."""
    zero = np.float32(0.0)
    six = np.float32(6.0)
    three = np.float32(3.0)
    sixth = np.float32(1.0 / 6.0)
    if act == 0:
        for j in range(src.shape[0]):
            dst[j] = src[j] * s + t
    elif act == 1:
        for j in range(src.shape[0]):
            v = src[j] * s + t
            dst[j] = v if v > zero else zero
    elif act == 2:
        for j in range(src.shape[0]):
            v = src[j] * s + t
            v = v if v > zero else zero
            dst[j] = v if v < six else six
    else:
        for j in range(src.shape[0]):
            v = src[j] * s + t
            g = v + three
            g = g if g > zero else zero
            g = g if g < six else six
            dst[j] = v * g * sixth


def epilogue_arrays(
    scale: torch.Tensor, shift: torch.Tensor, mask: ChannelMask | None, channels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The epilogue's inputs as the kernels take them: fp32 scale and shift, int8 keep (ones unmasked)."""
    keep = mask.keep_i8 if mask is not None else torch.ones(channels, dtype=torch.int8)
    return (
        scale.detach().float().contiguous().numpy(),
        shift.detach().float().contiguous().numpy(),
        keep.numpy(),
    )
