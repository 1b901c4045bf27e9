"""Per-architecture space overrides."""

from __future__ import annotations

import torch

from autoprune import PruningSpace, create_model
from autoprune.search_spaces import overrides_for, space_for


def test_mobilenetv2_override_keeps_8_channels_and_the_default_rounding():
    model = create_model("mobilenetv2", 10, 32)
    space = space_for(model, "mobilenetv2", 32, 10)
    default = PruningSpace.from_model(model, torch.zeros(1, 3, 32, 32), arch="mobilenetv2", num_classes=10)
    assert [g.id for g in space.groups] == [g.id for g in default.groups]
    # the CPU default (RESULTS.md Latency: 16-channel output stairs): 16 from 32 channels, else 1
    assert {g.step for g in space.groups if g.channels >= 32} == {16}
    assert {g.step for g in space.groups if g.channels < 32} == {1}
    assert min(g.min_keep for g in space.groups) == 8
    assert min(g.min_keep for g in default.groups) < 8


def test_models_without_a_file_get_the_defaults():
    assert overrides_for("resnet20") == {}
    assert overrides_for("torchvision:resnet18") == {}
