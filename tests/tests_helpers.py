"""Model builders for the CLI tests, named as ``tests_helpers:NAME`` (``tests/`` is on sys.path).

``untraceable``: a small CNN whose forward branches on a tensor's value, which torch.fx
cannot trace: autoprune must refuse it with one line, not a traceback.
"""

from __future__ import annotations

import torch
from torch import nn


class Untraceable(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        if y.mean() > 0:  # data-dependent control flow: torch.fx cannot trace this
            y = y * 2
        return self.head(y.mean(dim=(2, 3)))


def untraceable(num_classes: int = 10) -> nn.Module:
    return Untraceable(num_classes)
