"""Triton: per-channel affine (a folded BN) + activation + channel mask over any conv's output.

One pass over the tensor instead of the three or four the unfused ops make;
loads of masked channels are predicated off and their outputs stored as zeros.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dispatch import triton_interpreting
from .mask import ChannelMask
from .triton_common import channel_tile, epilogue_store, launch_channelwise, pixel_tile

INTERPRETED = triton_interpreting()  # the mode the kernels below are decorated for


@triton.jit
def _bn_act_kernel(
    x_ptr, scale_ptr, shift_ptr, keep_ptr, y_ptr,
    C, W, P,
    sxn, sxc, sxh, sxw, syn, syc,
    ACT: tl.constexpr, HAS_MASK: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    n = tl.program_id(2).to(tl.int64)
    c, c_ok, kept = channel_tile(keep_ptr, C, BLOCK_C, HAS_MASK)
    p, p_ok = pixel_tile(P, BLOCK_P)
    src = x_ptr + n * sxn + c[:, None] * sxc + ((p // W) * sxh + (p % W) * sxw)[None, :]
    x = tl.load(src, mask=kept[:, None] & p_ok[None, :], other=0.0).to(tl.float32)
    epilogue_store(x, scale_ptr, shift_ptr, c, kept, y_ptr, n, syn, syc, c, c_ok, p, p_ok, ACT)


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
    y = torch.empty((n, c, h, w), device=x.device, dtype=x.dtype)
    return launch_channelwise(
        _bn_act_kernel, "bn_act", x, (scale, shift), y, (c, w, h * w), act_code, mask, blocks
    )
