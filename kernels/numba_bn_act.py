"""numba (CPU): per-channel affine (a folded BN) + activation + channel mask in one pass.

Parallel over (image, channel) planes; each plane is one tight loop the compiler
vectorizes, against the three or four passes over memory the unfused torch ops make.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from .mask import ChannelMask


@njit(inline="always")
def _affine_act_row(src, dst, s, t, act):
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


@njit(parallel=True, cache=True)
def _bn_act_planes(x, scale, shift, keep, act, y):  # pragma: no cover - compiled
    n, c, _ = x.shape
    for i in prange(n * c):
        b = i // c
        ch = i % c
        if keep[ch] == 0:
            y[b, ch, :] = np.float32(0.0)
        else:
            _affine_act_row(x[b, ch], y[b, ch], scale[ch], shift[ch], act)


def bn_act(
    x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, act_code: int, mask: ChannelMask | None
) -> torch.Tensor:
    """Run on a CPU float32 NCHW tensor; returns a new contiguous tensor."""
    n, c, h, w = x.shape
    x = x.detach().contiguous()
    y = torch.empty((n, c, h, w), dtype=x.dtype)
    keep = mask.keep_i8 if mask is not None else torch.ones(c, dtype=torch.int8)
    _bn_act_planes(
        x.view(n, c, h * w).numpy(),
        scale.detach().float().contiguous().numpy(),
        shift.detach().float().contiguous().numpy(),
        keep.numpy(),
        act_code,
        y.view(n, c, h * w).numpy(),
    )
    return y
