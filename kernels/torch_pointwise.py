"""Plain torch, CPU: the 1×1 conv over the kept output channels only, then scattered.

On the CPU, slicing is the fast path: convolve with the kept weight rows (work in
proportion to the kept channels), apply the epilogue to those, and copy them into a
zero tensor. It reads the kept indices on the host, which is free on the CPU but
would stall a CUDA stream, so CUDA tensors take the unfused reference instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .activations import apply_activation
from .mask import ChannelMask
from .reference import conv_out_hw


def pointwise_sliced(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    act: str,
    mask: ChannelMask,
    stride: int = 1,
    compact: bool = False,
) -> torch.Tensor:
    """``weight`` is ``[Cout, Cin]``; returns the full (zero-filled) or compact output."""
    idx = mask.keep.nonzero().squeeze(1)
    n, _, h, w_in = x.shape
    if idx.numel() == 0:  # every channel masked: conv2d refuses zero output channels
        size = (n, 0 if compact else weight.shape[0], *conv_out_hw(h, w_in, stride))
        return x.new_zeros(size)
    w = weight[idx]
    y = F.conv2d(x, w.reshape(*w.shape, 1, 1), stride=stride)
    y = torch.addcmul(shift[idx].to(y.dtype).view(1, -1, 1, 1), y, scale[idx].to(y.dtype).view(1, -1, 1, 1))
    y = apply_activation(y, act)
    if compact:
        return y
    out = y.new_zeros((y.shape[0], weight.shape[0], *y.shape[2:]))
    return out.index_copy_(1, idx, y)
