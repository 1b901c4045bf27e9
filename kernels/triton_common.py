"""Pieces shared by the Triton kernels: tile indexing, the BN + activation epilogue, launch helpers.

Kernels here use only ``tl`` builtins (``tl.full``, not ``tl.zeros``): triton's own
``@jit`` helpers are interpreted only when ``TRITON_INTERPRET=1`` was set before
triton was first imported, while these modules are re-imported whenever the flag
changes (:func:`autoprune.kernels.dispatch.triton_module`), so tests can switch
the interpreter on per test.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from .dispatch import triton_interpreting
from .mask import ChannelMask

#: Whether this module's kernels were decorated for the interpreter (see ``dispatch.triton_module``).
INTERPRETED = triton_interpreting()


@triton.jit
def apply_act(y, ACT: tl.constexpr):
    """Activation by code (see ``activations.ACTIVATIONS``): 0 none, 1 ReLU, 2 ReLU6, 3 hardswish."""
    if ACT == 1:
        y = tl.maximum(y, 0.0)
    elif ACT == 2:
        y = tl.minimum(tl.maximum(y, 0.0), 6.0)
    elif ACT == 3:
        y = y * (tl.minimum(tl.maximum(y + 3.0, 0.0), 6.0) / 6.0)
    return y


@triton.jit
def channel_tile(keep_ptr, C, BLOCK_C: tl.constexpr, HAS_MASK: tl.constexpr):
    """This program's block of channels (grid axis 0): indices, in range, kept (in range and unmasked)."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    kept = c_ok & (tl.load(keep_ptr + c, mask=c_ok, other=0) != 0) if HAS_MASK else c_ok
    return c, c_ok, kept


@triton.jit
def pixel_tile(P, BLOCK_P: tl.constexpr):
    """This program's block of output pixels (grid axis 1): flat indices and which are in range."""
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    return p, p < P


@triton.jit
def epilogue_store(
    acc, scale_ptr, shift_ptr, ch, kept, y_ptr, n, syn, syc, out_c, out_ok, p, p_ok, ACT: tl.constexpr
):
    """``act(acc · scale[ch] + shift[ch])`` with rows not ``kept`` zero, stored at ``y[n, out_c, p]``.

    ``acc`` is the fp32 ``[rows, pixels]`` tile; rows outside ``out_ok`` are not stored.
    """
    scale = tl.load(scale_ptr + ch, mask=kept, other=0.0)
    shift = tl.load(shift_ptr + ch, mask=kept, other=0.0)
    y = apply_act(acc * scale[:, None] + shift[:, None], ACT)
    y = tl.where(kept[:, None], y, 0.0)
    out = y_ptr + n * syn + out_c[:, None].to(tl.int64) * syc + p[None, :]
    tl.store(out, y.to(y_ptr.dtype.element_ty), mask=out_ok[:, None] & p_ok[None, :])


def block_size(n: int, lo: int, hi: int, hi_interpreted: int, interpreted: bool | None = None) -> int:
    """The power of two covering ``n``, clamped to ``[lo, hi]``.

    Under the interpreter every program costs Python overhead while wide blocks are
    numpy-vectorized, so there the cap is ``hi_interpreted`` (fewer, larger programs).
    ``interpreted`` (default: whether ``TRITON_INTERPRET`` is set) picks the cap, so a
    test can ask for the blocks a GPU launch would use.
    """
    if interpreted is None:
        interpreted = triton_interpreting()
    cap = hi_interpreted if interpreted else hi
    return max(lo, min(cap, triton.next_power_of_2(max(n, 1))))


#: Per kernel, per block dimension: (smallest, largest on a GPU, largest under the interpreter).
BLOCK_LIMITS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "pointwise": ((16, 64, 256), (16, 64, 1024), (16, 32, 256)),  # BLOCK_CO, BLOCK_P, BLOCK_CI
    "depthwise": ((1, 16, 256), (16, 128, 1024)),  # BLOCK_C, BLOCK_P
    "bn_act": ((1, 8, 256), (16, 256, 1024)),  # BLOCK_C, BLOCK_P
}


def launch_blocks(kernel: str, *dims: int, interpreted: bool | None = None) -> tuple[int, ...]:
    """The block sizes a launch of ``kernel`` picks for its ``dims`` (see :data:`BLOCK_LIMITS`).

    ``dims``: (Cout, pixels, Cin) for ``pointwise``, (channels, pixels) for the others.
    ``interpreted=False`` gives a GPU launch's blocks whatever ``TRITON_INTERPRET`` says.
    """
    return tuple(
        block_size(d, *limits, interpreted) for d, limits in zip(dims, BLOCK_LIMITS[kernel], strict=True)
    )


def channel_pixel_grid(channels: int, pixels: int, images: int, blocks: tuple[int, ...]) -> tuple[int, ...]:
    """The grid of a (channel block, pixel block, image) kernel; ``blocks`` begins (BLOCK_C, BLOCK_P)."""
    return (triton.cdiv(channels, blocks[0]), triton.cdiv(pixels, blocks[1]), images)


def keep_pointer(mask: ChannelMask | None, dummy: torch.Tensor) -> torch.Tensor:
    """The mask's int8 keep vector, or ``dummy`` (never read: the kernel gets ``HAS_MASK=False``)."""
    return mask.keep_i8 if mask is not None else dummy


def launch_channelwise(
    kernel: Any,
    name: str,
    x: torch.Tensor,
    operands: tuple[torch.Tensor, ...],
    y: torch.Tensor,
    dims: tuple[int, ...],
    act_code: int,
    mask: ChannelMask | None,
    blocks: tuple[int, int] | None,
    **constexprs: Any,
) -> torch.Tensor:
    """Launch a (channel block, pixel block, image) ``kernel`` (:data:`BLOCK_LIMITS` ``name``) writing ``y``.

    The kernel takes ``x``, ``operands`` (ending in scale, shift), the keep pointer, ``y``,
    ``dims`` (channels first, output pixels last), ``x``'s four strides, ``y``'s image and
    channel strides, then ``ACT``, ``HAS_MASK``, ``BLOCK_C``, ``BLOCK_P`` and ``constexprs``.
    ``blocks`` = (BLOCK_C, BLOCK_P), by default :func:`launch_blocks`. Returns ``y``.
    """
    if y.numel() == 0:
        return y
    channels, pixels = dims[0], dims[-1]
    bc, bp = blocks or launch_blocks(name, channels, pixels)
    scale = operands[-2]  # any device pointer: the keep pointer when there is no mask, never read
    kernel[channel_pixel_grid(channels, pixels, x.shape[0], (bc, bp))](
        x, *operands, keep_pointer(mask, scale), y,
        *dims,
        *x.stride(), y.stride(0), y.stride(1),
        ACT=act_code, HAS_MASK=mask is not None, BLOCK_C=bc, BLOCK_P=bp, **constexprs,
    )  # fmt: skip
    return y


def dot_in_fp32(dtype: torch.dtype) -> bool:
    """Whether the GEMM must upcast its operands to fp32 before ``tl.dot``.

    Only under the interpreter with bf16: triton 3.8's interpreter computes bf16 ``tl.dot``
    wrongly (numpy has no bf16). On a GPU bf16 and fp16 operands go to the tensor cores
    as they are, with fp32 accumulation.
    """
    return dtype == torch.bfloat16 and triton_interpreting()


def fp32_input_precision() -> str:
    """``tl.dot`` precision for fp32 operands: TF32 exactly when torch allows it for convs."""
    return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
