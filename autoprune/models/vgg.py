"""VGG-16 with batch norm and a CIFAR head (flatten -> 512 -> classes)."""

from __future__ import annotations

import torch
from torch import nn

from autoprune.models.cifar_resnet import init_weights

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    def __init__(self, cfg: list, num_classes: int = 10, input_size: int = 32) -> None:
        super().__init__()
        if input_size % 32:
            raise ValueError(f"vgg16 needs an input size divisible by 32, got {input_size}")
        layers: list[nn.Module] = []
        channels = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [
                    nn.Conv2d(channels, v, 3, padding=1),
                    nn.BatchNorm2d(v),
                    nn.ReLU(inplace=True),
                ]
                channels = v
        self.features = nn.Sequential(*layers)
        side = input_size // 32
        self.classifier = nn.Sequential(
            nn.Linear(channels * side * side, 512),
            nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def vgg16(num_classes: int = 10, input_size: int = 32) -> VGG:
    return VGG(VGG16_CFG, num_classes, input_size)
