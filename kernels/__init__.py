"""Fused inference kernels for masked networks, installed as ``autoprune.kernels``.

Three ops, each with a plain-torch ``*_reference`` that defines its semantics:

* :func:`pointwise_conv_bn_act` — 1×1 conv as a GEMM over the kept output channels,
  folded BN and activation in the epilogue;
* :func:`depthwise_conv_bn_act` — depthwise 3×3 conv (stride 1/2) + BN + activation;
* :func:`bn_mask_act` — BN + mask + activation after any other conv.

Backends: Triton on CUDA tensors where ``benchmarks/gpu_check.py`` measured it faster
than torch/cuDNN on this GPU model, numba on CPU for the ops where it beat torch,
torch otherwise; ``AUTOPRUNE_KERNELS=triton|numba|torch`` overrides (see
:mod:`autoprune.kernels.dispatch`). Importing this package imports neither Triton
nor numba.
"""

from .activations import ACTIVATIONS
from .dispatch import BACKENDS, ENV_VAR, NUMBA_OPS, gpu_table_path, prefer_masked_proxy, resolve_backend
from .mask import ChannelMask
from .ops import bn_mask_act, depthwise_conv_bn_act, pointwise_conv_bn_act
from .reference import (
    bn_mask_act_reference,
    depthwise_conv_bn_act_reference,
    fold_bn,
    pointwise_conv_bn_act_reference,
)

__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "ENV_VAR",
    "NUMBA_OPS",
    "ChannelMask",
    "bn_mask_act",
    "bn_mask_act_reference",
    "depthwise_conv_bn_act",
    "depthwise_conv_bn_act_reference",
    "fold_bn",
    "gpu_table_path",
    "pointwise_conv_bn_act",
    "pointwise_conv_bn_act_reference",
    "prefer_masked_proxy",
    "resolve_backend",
]
