"""A channel mask in the forms the kernels read, computed once per mask.

A kernel never asks the host how many channels are kept (that would synchronize a
CUDA stream on every call): the count stays on the device as a one-element tensor,
and the kept channels come first in ``perm`` so a block of output channels can
skip its whole GEMM when none of its rows is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autoprune.errors import AutopruneError


@dataclass(frozen=True)
class ChannelMask:
    """Which of ``C`` channels are kept.

    Attributes:
        keep: bool ``[C]``, True where the channel is kept.
        keep_i8: the same as int8 (what the elementwise kernels load).
        perm: int32 ``[C]``, the kept channel indices in increasing order, then the masked ones.
        n_kept: int32 ``[1]`` on the mask's device, the number of kept channels.
    """

    keep: torch.Tensor
    keep_i8: torch.Tensor
    perm: torch.Tensor
    n_kept: torch.Tensor

    @classmethod
    def from_bool(cls, keep: torch.Tensor) -> ChannelMask:
        """Build from a bool vector (no host synchronization on CUDA)."""
        if keep.dtype != torch.bool or keep.dim() != 1:
            raise AutopruneError(
                f"a channel mask must be a 1-D bool tensor, got {keep.dtype} of shape {tuple(keep.shape)}"
            )
        # A stable sort of "is masked" puts the kept channels first, each part in index order.
        perm = torch.sort((~keep).to(torch.int8), stable=True).indices.to(torch.int32)
        n_kept = keep.sum(dtype=torch.int32).reshape(1)
        return cls(keep=keep, keep_i8=keep.to(torch.int8), perm=perm, n_kept=n_kept)

    @property
    def channels(self) -> int:
        return self.keep.numel()

    def to(self, device: torch.device) -> ChannelMask:
        """This mask on ``device`` (itself when already there)."""
        if self.keep.device == device:
            return self
        return ChannelMask(*(t.to(device) for t in (self.keep, self.keep_i8, self.perm, self.n_kept)))


def as_channel_mask(
    mask: torch.Tensor | ChannelMask | None, channels: int, device: torch.device
) -> ChannelMask | None:
    """Normalize a user mask: check its length and move it to ``device``; None stays None."""
    if mask is None:
        return None
    if not isinstance(mask, ChannelMask):
        mask = ChannelMask.from_bool(torch.as_tensor(mask))
    if mask.channels != channels:
        raise AutopruneError(
            f"channel mask has {mask.channels} entries but the layer has {channels} channels"
        )
    return mask.to(device)
