"""Per-architecture space overrides."""

from __future__ import annotations

import torch

from autoprune import PruningSpace, create_model
from autoprune.search_spaces import overrides_for, space_for


def test_mobilenetv2_override_rounds_every_group_to_8():
    model = create_model("mobilenetv2", 10, 32)
    space = space_for(model, "mobilenetv2", 32, 10)
    default = PruningSpace.from_model(model, torch.zeros(1, 3, 32, 32), arch="mobilenetv2", num_classes=10)
    assert [g.id for g in space.groups] == [g.id for g in default.groups]
    assert {g.step for g in space.groups} == {8}
    assert min(g.min_keep for g in space.groups) == 8
    assert any(g.step == 1 for g in default.groups)  # 16- and 24-channel groups by default


def test_models_without_a_file_get_the_defaults():
    assert overrides_for("resnet20") == {}
    assert overrides_for("torchvision:resnet18") == {}
