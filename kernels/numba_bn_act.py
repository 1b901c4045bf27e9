"""numba (CPU): per-channel affine (a folded BN) + activation + channel mask in one pass.

Parallel over (image, channel) planes; each plane is one tight loop the compiler
vectorizes, against the three or four passes over memory the unfused torch ops make.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from .mask import ChannelMask
from .numba_common import affine_act_row, epilogue_arrays


@njit(parallel=True, cache=True)
def _bn_act_planes(x, scale, shift, keep, act, y):  # pragma: no cover - compiled
    n, c, _ = x.shape
    for i in prange(n * c):
        b = i // c
        ch = i % c
        if keep[ch] == 0:
            y[b, ch, :] = np.float32(0.0)
        else:
            affine_act_row(x[b, ch], y[b, ch], scale[ch], shift[ch], act)


def bn_act(
    x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, act_code: int, mask: ChannelMask | None
) -> torch.Tensor:
    """Run on a CPU float32 NCHW tensor; returns a new contiguous tensor."""
    n, c, h, w = x.shape
    x = x.detach().contiguous()
    y = torch.empty((n, c, h, w), dtype=x.dtype)
    scale_, shift_, keep = epilogue_arrays(scale, shift, mask, c)
    _bn_act_planes(x.view(n, c, h * w).numpy(), scale_, shift_, keep, act_code, y.view(n, c, h * w).numpy())
    return y
