"""Plain-torch references of the fused ops, and BatchNorm folding.

These are the semantics every kernel is tested against, written the obvious,
unfused way (conv, then the folded BN affine, then the activation, then zeroing
the masked channels). They run in the input's dtype, like the unfused model would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autoprune.errors import AutopruneError

from .activations import apply_activation
from .mask import ChannelMask


def fold_bn(
    bn: nn.BatchNorm2d | None, conv_bias: torch.Tensor | None = None, channels: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm (and a conv bias before it) into a per-channel fp32 affine.

    ``scale = γ / sqrt(var + eps)`` and ``shift = β − mean·scale + scale·bias``, so that
    ``bn(conv(x) + bias) == conv(x)·scale + shift``. Without a BN the affine is the identity
    plus the bias (``channels`` then gives the width when there is no bias either).
    """
    if bn is None:
        if conv_bias is not None:
            shift = conv_bias.detach().float()
            return torch.ones_like(shift), shift.clone()
        if channels is None:
            raise ValueError("fold_bn needs `channels` when there is neither a BN nor a bias")
        return torch.ones(channels), torch.zeros(channels)
    if bn.running_mean is None or bn.running_var is None:
        raise AutopruneError(
            "cannot fold a BatchNorm without running statistics (track_running_stats=False) into a kernel"
        )
    mean = bn.running_mean.detach().float()
    scale = torch.rsqrt(bn.running_var.detach().float() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().float()
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().float()
    if conv_bias is not None:
        shift = shift + scale * conv_bias.detach().float()
    return scale, shift


#: (atol, rtol) of a kernel's output against the float64 reference on the same (rounded)
#: inputs, per input precision, for activations of order 1 (weights scaled by 1/sqrt(fan-in)).
#: fp32: ieee fp32 operands and accumulation, a few ulps per sum; tf32: GEMM operands rounded
#: to a 10-bit mantissa (rel. 2^-11 per product); fp16/bf16: fp32 accumulation, then the
#: output rounded to 11/8 mantissa bits (rel. 2^-11/2^-8 of values up to ~10).
TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-4, 1e-4),
    "tf32": (1e-2, 1e-2),
    "fp16": (1e-2, 1e-2),
    "bf16": (5e-2, 2e-2),
}


def conv_out_hw(h: int, w: int, stride: int) -> tuple[int, int]:
    """Output height and width of the 3×3 (padding 1) and 1×1 (no padding) convs here, at ``stride``."""
    return (h - 1) // stride + 1, (w - 1) // stride + 1


def _affine_act_mask(
    y: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    act: str,
    mask: torch.Tensor | ChannelMask | None,
    compact: bool = False,
) -> torch.Tensor:
    y = y * scale.to(y.dtype).view(1, -1, 1, 1) + shift.to(y.dtype).view(1, -1, 1, 1)
    y = apply_activation(y, act)
    if mask is None:
        return y
    keep = mask.keep if isinstance(mask, ChannelMask) else mask
    keep = keep.to(y.device)
    if compact:
        return y[:, keep]
    return torch.where(keep.view(1, -1, 1, 1), y, torch.zeros((), dtype=y.dtype, device=y.device))


def pointwise_conv_bn_act_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    act: str = "none",
    out_mask: torch.Tensor | ChannelMask | None = None,
    *,
    stride: int = 1,
    compact: bool = False,
) -> torch.Tensor:
    """1×1 conv (weight ``[Cout, Cin]`` or ``[Cout, Cin, 1, 1]``), BN affine, activation, mask."""
    w = weight.reshape(weight.shape[0], -1, 1, 1).to(x.dtype)
    y = F.conv2d(x, w, stride=stride)
    return _affine_act_mask(y, scale, shift, act, out_mask, compact)


def depthwise_conv_bn_act_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    stride: int = 1,
    act: str = "none",
    mask: torch.Tensor | ChannelMask | None = None,
) -> torch.Tensor:
    """Depthwise 3×3 conv (padding 1, weight ``[C, 1, 3, 3]``), BN affine, activation, mask."""
    y = F.conv2d(x, weight.to(x.dtype), stride=stride, padding=1, groups=x.shape[1])
    return _affine_act_mask(y, scale, shift, act, mask)


def bn_mask_act_reference(
    x: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    act: str = "none",
    mask: torch.Tensor | ChannelMask | None = None,
) -> torch.Tensor:
    """Per-channel affine (a folded BN), activation and mask on an NCHW tensor."""
    return _affine_act_mask(x, scale, shift, act, mask)
