"""Triton: depthwise 3×3 conv (padding 1, stride 1 or 2) + BN affine + activation + channel mask.

A program computes a block of channels × a block of output pixels of one image.
Loads of masked channels are predicated off, so a masked channel costs no memory
traffic and its output is stored as zeros.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .mask import ChannelMask
from .triton_common import apply_act, block_size


@triton.jit
def _depthwise_kernel(
    x_ptr, w_ptr, scale_ptr, shift_ptr, keep_ptr, y_ptr,
    C, H, W, WO, P,
    sxn, sxc, sxh, sxw, syn, syc,
    STRIDE: tl.constexpr, ACT: tl.constexpr, HAS_MASK: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    pid_c = tl.program_id(0)
    pid_p = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)

    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    kept = c_ok & (tl.load(keep_ptr + c, mask=c_ok, other=0) != 0) if HAS_MASK else c_ok

    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = p < P
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

    scale = tl.load(scale_ptr + c, mask=kept, other=0.0)
    shift = tl.load(shift_ptr + c, mask=kept, other=0.0)
    y = apply_act(acc * scale[:, None] + shift[:, None], ACT)
    y = tl.where(kept[:, None], y, 0.0)
    out = y_ptr + n * syn + c[:, None].to(tl.int64) * syc + p[None, :]
    tl.store(out, y.to(y_ptr.dtype.element_ty), mask=c_ok[:, None] & p_ok[None, :])


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
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    p = ho * wo
    y = torch.empty((n, c, ho, wo), device=x.device, dtype=x.dtype)
    if y.numel() == 0:
        return y
    bc, bp = blocks or (block_size(c, 1, 16, 256), block_size(p, 16, 128, 1024))
    grid = (triton.cdiv(c, bc), triton.cdiv(p, bp), n)
    _depthwise_kernel[grid](
        x, weight, scale, shift, mask.keep_i8 if mask is not None else scale, y,
        c, h, w, wo, p,
        *x.stride(), y.stride(0), y.stride(1),
        STRIDE=stride, ACT=act_code, HAS_MASK=mask is not None, BLOCK_C=bc, BLOCK_P=bp,
    )  # fmt: skip
    return y
