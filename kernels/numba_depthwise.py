"""numba (CPU): depthwise 3×3 conv (padding 1, stride 1/2) + BN affine + activation + mask.

Parallel over (image, channel) planes. Each output row accumulates its nine taps
as whole-row loops over the valid column range (no per-pixel bounds checks, so
the loops vectorize), then applies the epilogue in place.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from .mask import ChannelMask
from .numba_common import affine_act_row, epilogue_arrays
from .reference import conv_out_hw


@njit(parallel=True, cache=True)
def _depthwise_planes(x, w, scale, shift, keep, stride, act, y):  # pragma: no cover - compiled
    n, c, h, wd = x.shape
    ho_n = y.shape[2]
    wo_n = y.shape[3]
    for i in prange(n * c):
        b = i // c
        ch = i % c
        if keep[ch] == 0:
            y[b, ch, :, :] = np.float32(0.0)
            continue
        for ho in range(ho_n):
            out = y[b, ch, ho]
            out[:] = np.float32(0.0)
            for kh in range(3):
                hi = ho * stride + kh - 1
                if hi < 0 or hi >= h:
                    continue
                row = x[b, ch, hi]
                for kw in range(3):
                    wk = w[ch, kh * 3 + kw]
                    lo = 1 if kw == 0 else 0
                    hi_wo = min(wo_n, (wd - kw) // stride + 1)
                    for wo in range(lo, hi_wo):
                        out[wo] += wk * row[wo * stride + kw - 1]
            affine_act_row(out, out, scale[ch], shift[ch], act)


def depthwise(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    stride: int,
    act_code: int,
    mask: ChannelMask | None,
) -> torch.Tensor:
    """Run on a CPU float32 NCHW tensor with ``weight`` ``[C, 1, 3, 3]``."""
    n, c, h, w = x.shape
    y = torch.empty((n, c, *conv_out_hw(h, w, stride)), dtype=x.dtype)
    scale_, shift_, keep = epilogue_arrays(scale, shift, mask, c)
    taps = weight.detach().reshape(c, 9).contiguous().numpy()
    _depthwise_planes(
        x.detach().contiguous().numpy(), taps, scale_, shift_, keep, stride, act_code, y.numpy()
    )
    return y
