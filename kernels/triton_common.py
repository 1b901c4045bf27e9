"""Pieces shared by the Triton kernels: the activation epilogue and launch helpers."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dispatch import triton_interpreting


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


def block_size(n: int, lo: int, hi: int) -> int:
    """The power of two covering ``n``, clamped to ``[lo, hi]``."""
    return max(lo, min(hi, triton.next_power_of_2(max(n, 1))))


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
