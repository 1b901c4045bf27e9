"""MobileNetV2 with torchvision's layout and module names.

For inputs of at most 64 px the stem conv and the first 24-channel stage use
stride 1 (the usual CIFAR variant), so a 32 px image still ends at 4x4 before
the head. Larger inputs keep ImageNet strides, and torchvision checkpoints load
into either variant because the strides carry no parameters.
"""

from __future__ import annotations

from torchvision.models import MobileNetV2

CIFAR_MAX_INPUT = 64


def mobilenetv2(
    num_classes: int = 10, input_size: int = 32, width_mult: float = 1.0, dropout: float = 0.2
) -> MobileNetV2:
    model = MobileNetV2(num_classes=num_classes, width_mult=width_mult, dropout=dropout)
    if input_size <= CIFAR_MAX_INPUT:
        model.features[0][0].stride = (1, 1)
        # features[2] opens the 24-channel stage; its depthwise conv carries the stride.
        model.features[2].conv[1][0].stride = (1, 1)
    return model
