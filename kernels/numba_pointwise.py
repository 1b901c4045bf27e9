"""numba (CPU): 1×1 conv as a GEMM over the kept output channels + BN affine + activation.

Per image, one BLAS GEMM of the kept weight rows against the image's ``[Cin, H·W]``
matrix, then the fused epilogue writes the kept rows and zeros the masked ones.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from .mask import ChannelMask
from .numba_bn_act import _affine_act_row


@njit(cache=True)
def _pointwise_images(x, wk, idx, scale, shift, keep, act, y):  # pragma: no cover - compiled
    n = x.shape[0]
    cout = y.shape[1]
    for b in range(n):
        prod = np.dot(wk, x[b])
        for ch in range(cout):
            if keep[ch] == 0:
                y[b, ch, :] = np.float32(0.0)
        for r in range(idx.shape[0]):
            ch = idx[r]
            _affine_act_row(prod[r], y[b, ch], scale[ch], shift[ch], act)


def pointwise(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    act_code: int,
    mask: ChannelMask | None,
    stride: int = 1,
) -> torch.Tensor:
    """Run on a CPU float32 NCHW tensor with ``weight`` ``[Cout, Cin]``."""
    if stride != 1:
        x = x[:, :, ::stride, ::stride]
    n, cin, h, w = x.shape
    cout = weight.shape[0]
    idx = mask.perm[: int(mask.n_kept.item())].long() if mask is not None else torch.arange(cout)
    keep = mask.keep_i8 if mask is not None else torch.ones(cout, dtype=torch.int8)
    y = torch.empty((n, cout, h, w), dtype=x.dtype)
    _pointwise_images(
        x.detach().contiguous().view(n, cin, h * w).numpy(),
        weight.detach()[idx].contiguous().numpy(),
        idx.numpy(),
        scale.detach().float().contiguous().numpy(),
        shift.detach().float().contiguous().numpy(),
        keep.numpy(),
        act_code,
        y.view(n, cout, h * w).numpy(),
    )
    return y
