"""Pieces shared by the Triton kernels: the activation epilogue and launch helpers.

Kernels here use only ``tl`` builtins (``tl.full``, not ``tl.zeros``): triton's own
``@jit`` helpers are interpreted only when ``TRITON_INTERPRET=1`` was set before
triton was first imported, while these modules are re-imported whenever the flag
changes (:func:`autoprune.kernels.dispatch.triton_module`), so tests can switch
the interpreter on per test.
"""

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


def block_size(n: int, lo: int, hi: int, hi_interpreted: int) -> int:
    """The power of two covering ``n``, clamped to ``[lo, hi]``.

    Under the interpreter every program costs Python overhead while wide blocks are
    numpy-vectorized, so there the cap is ``hi_interpreted`` (fewer, larger programs).
    """
    cap = hi_interpreted if triton_interpreting() else hi
    return max(lo, min(cap, triton.next_power_of_2(max(n, 1))))


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
