"""BatchNorm recalibration: re-estimate running statistics of a pruned network.

Pruning changes what each BN layer sees, so the dense model's running mean and
variance are stale. Re-estimating them on a few batches of training images
(cumulative average, only BN layers in train mode, no gradients) is the cheap
step that makes a pruned candidate's accuracy meaningful (AdaPruner, EagleEye).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, batches: Iterable[torch.Tensor], device: torch.device | str
) -> nn.Module:
    """Reset and re-estimate every BN layer's running stats on ``batches``; returns ``model`` in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    if not norms:
        return model
    momenta = []
    for bn in norms:
        momenta.append(bn.momentum)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over all batches
        bn.train()
    try:
        for x in batches:
            model(x.to(device, non_blocking=True))
    finally:
        for bn, momentum in zip(norms, momenta, strict=True):
            bn.momentum = momentum
            bn.eval()
    return model
