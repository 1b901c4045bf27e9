"""The three fused inference ops, validated once and dispatched to a backend.

All take NCHW tensors and return a new NCHW tensor in the input's dtype; BN comes
folded as fp32 ``scale``/``shift`` vectors (:func:`autoprune.kernels.fold_bn`); a
mask is a bool ``[C]`` tensor (True = kept) or a prepared :class:`ChannelMask`,
and masked channels come out as exact zeros. Inference only: no autograd.
"""

from __future__ import annotations

import torch

from autoprune.errors import AutopruneError

from .activations import activation_code
from .dispatch import numba_module, resolve_backend, triton_module
from .mask import ChannelMask, as_channel_mask
from .reference import (
    bn_mask_act_reference,
    depthwise_conv_bn_act_reference,
    pointwise_conv_bn_act_reference,
)
from .torch_pointwise import pointwise_sliced


def _check_input(x: torch.Tensor, op: str) -> None:
    if x.dim() != 4:
        raise AutopruneError(f"{op}: expected an NCHW tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise AutopruneError(f"{op}: expected a floating-point tensor, got {x.dtype}")


def _affine(
    x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, channels: int, op: str
) -> tuple[torch.Tensor, torch.Tensor]:
    if scale.shape != (channels,) or shift.shape != (channels,):
        raise AutopruneError(
            f"{op}: scale and shift must have shape ({channels},), got {tuple(scale.shape)} and "
            f"{tuple(shift.shape)}"
        )
    return (
        scale.to(device=x.device, dtype=torch.float32).contiguous(),
        shift.to(device=x.device, dtype=torch.float32).contiguous(),
    )


def pointwise_conv_bn_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    act: str = "none",
    out_mask: torch.Tensor | ChannelMask | None = None,
    *,
    stride: int = 1,
    compact: bool = False,
    backend: str | None = None,
) -> torch.Tensor:
    """``act(conv1x1(x, weight) · scale + shift)`` with masked output channels zero.

    ``weight`` is ``[Cout, Cin]`` or ``[Cout, Cin, 1, 1]`` (groups 1, no padding);
    ``stride`` subsamples the input. Only kept output channels are computed. With
    ``compact=True`` the masked channels are left out instead of zero-filled (the output
    then has as many channels as are kept; this reads the count on the host).
    """
    _check_input(x, "pointwise_conv_bn_act")
    cin = x.shape[1]
    if weight.dim() == 4 and weight.shape[2:] == (1, 1):
        weight = weight.reshape(weight.shape[0], weight.shape[1])
    if weight.dim() != 2 or weight.shape[1] != cin:
        raise AutopruneError(
            f"pointwise_conv_bn_act: weight must be [Cout, {cin}] or [Cout, {cin}, 1, 1], "
            f"got {tuple(weight.shape)}"
        )
    if stride < 1:
        raise AutopruneError(f"pointwise_conv_bn_act: stride must be >= 1, got {stride}")
    cout = weight.shape[0]
    weight = weight.to(device=x.device, dtype=x.dtype)
    scale, shift = _affine(x, scale, shift, cout, "pointwise_conv_bn_act")
    code = activation_code(act)
    mask = as_channel_mask(out_mask, cout, x.device)
    which = resolve_backend("pointwise", x, backend)
    if which == "triton":
        return triton_module("triton_pointwise").pointwise(
            x, weight, scale, shift, code, mask, stride=stride, compact=compact
        )
    if mask is not None and x.device.type == "cpu":
        return pointwise_sliced(x, weight, scale, shift, act, mask, stride=stride, compact=compact)
    return pointwise_conv_bn_act_reference(x, weight, scale, shift, act, mask, stride=stride, compact=compact)


def depthwise_conv_bn_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    stride: int = 1,
    act: str = "none",
    mask: torch.Tensor | ChannelMask | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """``act(depthwise3x3(x, weight, stride, padding=1) · scale + shift)``, masked channels zero.

    ``weight`` is ``[C, 1, 3, 3]``; ``stride`` is 1 or 2.
    """
    _check_input(x, "depthwise_conv_bn_act")
    c = x.shape[1]
    if tuple(weight.shape) != (c, 1, 3, 3):
        raise AutopruneError(
            f"depthwise_conv_bn_act: weight must be [{c}, 1, 3, 3], got {tuple(weight.shape)}"
        )
    if stride not in (1, 2):
        raise AutopruneError(f"depthwise_conv_bn_act: stride must be 1 or 2, got {stride}")
    weight = weight.to(device=x.device, dtype=x.dtype).contiguous()
    scale, shift = _affine(x, scale, shift, c, "depthwise_conv_bn_act")
    code = activation_code(act)
    cmask = as_channel_mask(mask, c, x.device)
    which = resolve_backend("depthwise", x, backend)
    if which == "triton":
        return triton_module("triton_depthwise").depthwise(x, weight, scale, shift, stride, code, cmask)
    if which == "numba":
        return numba_module("numba_depthwise").depthwise(x, weight, scale, shift, stride, code, cmask)
    return depthwise_conv_bn_act_reference(x, weight, scale, shift, stride, act, cmask)


def bn_mask_act(
    x: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    act: str = "none",
    mask: torch.Tensor | ChannelMask | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """``act(x · scale + shift)`` per channel with masked channels zero: the epilogue for any conv."""
    _check_input(x, "bn_mask_act")
    c = x.shape[1]
    scale, shift = _affine(x, scale, shift, c, "bn_mask_act")
    code = activation_code(act)
    cmask = as_channel_mask(mask, c, x.device)
    which = resolve_backend("bn_act", x, backend)
    if which == "triton":
        return triton_module("triton_bn_act").bn_act(x, scale, shift, code, cmask)
    if which == "numba":
        return numba_module("numba_bn_act").bn_act(x, scale, shift, code, cmask)
    return bn_mask_act_reference(x, scale, shift, act, cmask)
