"""Triton: per-channel affine (a folded BN) + activation + channel mask over any conv's output.

One pass over the tensor instead of the three or four the unfused ops make;
loads of masked channels are predicated off and their outputs stored as zeros.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .mask import ChannelMask
from .triton_common import apply_act, block_size


@triton.jit
def _bn_act_kernel(
    x_ptr, scale_ptr, shift_ptr, keep_ptr, y_ptr,
    C, W, P,
    sxn, sxc, sxh, sxw, syn, syc,
    ACT: tl.constexpr, HAS_MASK: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    pid_c = tl.program_id(0)
    pid_p = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)

    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    kept = c_ok & (tl.load(keep_ptr + c, mask=c_ok, other=0) != 0) if HAS_MASK else c_ok
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = p < P

    src = x_ptr + n * sxn + c[:, None] * sxc + ((p // W) * sxh + (p % W) * sxw)[None, :]
    x = tl.load(src, mask=kept[:, None] & p_ok[None, :], other=0.0).to(tl.float32)
    scale = tl.load(scale_ptr + c, mask=kept, other=0.0)
    shift = tl.load(shift_ptr + c, mask=kept, other=0.0)
    y = apply_act(x * scale[:, None] + shift[:, None], ACT)
    y = tl.where(kept[:, None], y, 0.0)
    out = y_ptr + n * syn + c[:, None].to(tl.int64) * syc + p[None, :]
    tl.store(out, y.to(y_ptr.dtype.element_ty), mask=c_ok[:, None] & p_ok[None, :])


def bn_act(
    x: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    act_code: int,
    mask: ChannelMask | None,
    blocks: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Launch the kernel; the output is a new contiguous NCHW tensor, ``blocks`` = (BLOCK_C, BLOCK_P)."""
    n, c, h, w = x.shape
    p = h * w
    y = torch.empty((n, c, h, w), device=x.device, dtype=x.dtype)
    if y.numel() == 0:
        return y
    bc, bp = blocks or (block_size(c, 1, 8, 256), block_size(p, 16, 256, 1024))
    grid = (triton.cdiv(c, bc), triton.cdiv(p, bp), n)
    _bn_act_kernel[grid](
        x, scale, shift, mask.keep_i8 if mask is not None else scale, y,
        c, w, p,
        *x.stride(), y.stride(0), y.stride(1),
        ACT=act_code, HAS_MASK=mask is not None, BLOCK_C=bc, BLOCK_P=bp,
    )  # fmt: skip
    return y
