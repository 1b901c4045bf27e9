"""Triton: 1×1 conv as a GEMM over the kept output channels, BN affine + activation epilogue.

Per image ``n``: ``y[co, p] = act(scale[co] · Σ_ci w[co, ci] · x[ci, p] + shift[co])``.
Output channels are visited in ``perm`` order (kept first), so a block of rows
that holds no kept channel skips the reduction and only stores zeros: masked work
is skipped while the grid and the kernel stay the same for every mask.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dispatch import triton_interpreting
from .mask import ChannelMask
from .triton_common import (
    channel_pixel_grid,
    dot_in_fp32,
    epilogue_store,
    fp32_input_precision,
    launch_blocks,
    pixel_tile,
)

INTERPRETED = triton_interpreting()  # the mode the kernels below are decorated for


@triton.jit
def _pointwise_kernel(
    x_ptr, w_ptr, scale_ptr, shift_ptr, perm_ptr, nkept_ptr, y_ptr,
    CIN, COUT, WO, P,
    sxn, sxc, sxh, sxw, swo, swi, syn, syc,
    ACT: tl.constexpr, HAS_MASK: tl.constexpr, COMPACT: tl.constexpr,
    DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_CO: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_CI: tl.constexpr,
):  # fmt: skip
    pid_co = tl.program_id(0)
    n = tl.program_id(2).to(tl.int64)

    rows = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    row_ok = rows < COUT
    if HAS_MASK:
        co = tl.load(perm_ptr + rows, mask=row_ok, other=0)
        n_kept = tl.load(nkept_ptr)
    else:
        co = rows
        n_kept = COUT
    kept = rows < n_kept

    p, p_ok = pixel_tile(P, BLOCK_P)
    x_pix = n * sxn + (p // WO) * sxh + (p % WO) * sxw

    acc = tl.full((BLOCK_CO, BLOCK_P), 0.0, tl.float32)
    if pid_co * BLOCK_CO < n_kept:
        for ci0 in range(0, CIN, BLOCK_CI):
            ci = ci0 + tl.arange(0, BLOCK_CI)
            ci_ok = ci < CIN
            w_tile = w_ptr + co[:, None] * swo + ci[None, :] * swi
            x_tile = x_ptr + ci[:, None] * sxc + x_pix[None, :]
            w = tl.load(w_tile, mask=kept[:, None] & ci_ok[None, :], other=0.0)
            xb = tl.load(x_tile, mask=ci_ok[:, None] & p_ok[None, :], other=0.0)
            if DOT_F32:
                w = w.to(tl.float32)
                xb = xb.to(tl.float32)
            acc = tl.dot(w, xb, acc, input_precision=PRECISION)

    if COMPACT:
        out_c = rows
        out_ok = kept
    else:
        out_c = co
        out_ok = row_ok
    epilogue_store(acc, scale_ptr, shift_ptr, co, kept, y_ptr, n, syn, syc, out_c, out_ok, p, p_ok, ACT)


def pointwise(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    act_code: int,
    mask: ChannelMask | None,
    stride: int = 1,
    compact: bool = False,
    blocks: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """Launch the kernel; ``weight`` is ``[Cout, Cin]``, ``blocks`` = (BLOCK_CO, BLOCK_P, BLOCK_CI)."""
    if stride != 1:
        x = x[:, :, ::stride, ::stride]  # a strided 1×1 conv reads every stride-th pixel: a view, no copy
    n, cin, ho, wo = x.shape
    cout = weight.shape[0]
    p = ho * wo
    out_channels = int(mask.n_kept.item()) if (compact and mask is not None) else cout
    y = torch.empty((n, out_channels, ho, wo), device=x.device, dtype=x.dtype)
    if y.numel() == 0:
        return y
    bco, bp, bci = blocks or launch_blocks("pointwise", cout, p, cin)
    dummy = scale  # any device pointer: never read when HAS_MASK is false
    precision = fp32_input_precision() if x.dtype == torch.float32 else "tf32"
    _pointwise_kernel[channel_pixel_grid(out_channels, p, n, (bco, bp))](
        x, weight, scale, shift,
        mask.perm if mask is not None else dummy,
        mask.n_kept if mask is not None else dummy,
        y,
        cin, cout, wo, p,
        *x.stride(), *weight.stride(), y.stride(0), y.stride(1),
        ACT=act_code, HAS_MASK=mask is not None, COMPACT=compact and mask is not None,
        DOT_F32=dot_in_fp32(x.dtype), PRECISION=precision,
        BLOCK_CO=bco, BLOCK_P=bp, BLOCK_CI=bci,
    )  # fmt: skip
    return y
