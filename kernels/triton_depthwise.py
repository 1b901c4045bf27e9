"""Triton: depthwise 3×3 conv (padding 1, stride 1 or 2) + BN affine + activation + channel mask.

A program computes a block of channels × a block of output pixels of one image.
Loads of masked channels are predicated off, so a masked channel costs no memory
traffic and its output is stored as zeros.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dispatch import triton_interpreting
from .mask import ChannelMask
from .reference import conv_out_hw
from .triton_common import channel_tile, epilogue_store, launch_channelwise, pixel_tile

INTERPRETED = triton_interpreting()  # the mode the kernels below are decorated for


@triton.jit
def _depthwise_kernel(
    x_ptr, w_ptr, scale_ptr, shift_ptr, keep_ptr, y_ptr,
    C, H, W, WO, P,
    sxn, sxc, sxh, sxw, syn, syc,
    STRIDE: tl.constexpr, ACT: tl.constexpr, HAS_MASK: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(2).to(tl.int64)
    c, c_ok, kept = channel_tile(keep_ptr, C, BLOCK_C, HAS_MASK)
    p, p_ok = pixel_tile(P, BLOCK_P)
    hi0 = (p // WO) * STRIDE - 1
    wi0 = (p % WO) * STRIDE - 1
    x_chan = x_ptr + n * sxn + c[:, None] * sxc

    acc = tl.full((BLOCK_C, BLOCK_P), 0.0, tl.float32)
    for kh in tl.static_range(3):
        hi = hi0 + kh
        row_ok = p_ok & (hi >= 0) & (hi < H)
        for kw in tl.static_range(3):
            wi = wi0 + kw
            inside = row_ok & (wi >= 0) & (wi < W)
            tap = x_chan + (hi * sxh + wi * sxw)[None, :]
            xv = tl.load(tap, mask=kept[:, None] & inside[None, :], other=0.0)
            wv = tl.load(w_ptr + c * 9 + (kh * 3 + kw), mask=kept, other=0.0)
            acc += xv.to(tl.float32) * wv.to(tl.float32)[:, None]

    epilogue_store(acc, scale_ptr, shift_ptr, c, kept, y_ptr, n, syn, syc, c, c_ok, p, p_ok, ACT)


def depthwise(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    stride: int,
    act_code: int,
    mask: ChannelMask | None,
    blocks: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Launch the kernel; ``weight`` is contiguous ``[C, 1, 3, 3]``, ``blocks`` = (BLOCK_C, BLOCK_P)."""
    n, c, h, w = x.shape
    y = x.new_empty((n, c, *conv_out_hw(h, w, stride)))
    wo = y.shape[3]
    dims = (c, h, w, wo, y.shape[2] * wo)
    operands = (weight, scale, shift)
    return launch_channelwise(
        _depthwise_kernel, "depthwise", x, operands, y, dims, act_code, mask, blocks, STRIDE=stride
    )
