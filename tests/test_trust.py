"""Files are data: a checkpoint or pruned model never runs code by naming it (issue 12, point 1).

The hostile files name ``os:system`` as their architecture with
``model_kwargs={"command": "touch MARKER"}``: before the fix, loading them
created MARKER. Every way in (``load_model``, ``load_pruned``, ``autoprune
inspect``, ``autoprune apply``) must refuse with one line and leave no MARKER;
``trust_code=True`` with a builder the user names still works.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from autoprune import AutopruneError, create_model
from autoprune.checkpoint import FORMAT, load_checkpoint, load_model, save_checkpoint
from autoprune.space import PruningSpace
from autoprune.surgery import PRUNED_FORMAT, apply_plan, load_pruned, save_pruned

BUILDER = f"{__name__}:tiny_builder"


def tiny_builder(num_classes: int, width: int = 4) -> nn.Module:
    """A harmless user builder, named as ``test_trust:tiny_builder``."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, num_classes),
    )


def _hostile_meta(marker: Path) -> dict:
    return {
        "arch": "os:system",
        "model_kwargs": {"command": f"touch {marker}"},
        "num_classes": 10,
        "input_size": 32,
        "dataset": "digits",
    }


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PWNED"


@pytest.fixture
def hostile_checkpoint(tmp_path, marker) -> Path:
    path = tmp_path / "hostile.pt"
    torch.save({"format": FORMAT, "meta": _hostile_meta(marker), "state_dict": {}}, path)
    return path


@pytest.fixture
def hostile_pruned(tmp_path, marker) -> Path:
    path = tmp_path / "hostile_pruned.pt"
    plan = {
        "format": "autoprune.plan/1",
        "channels": {},
        "arch": "os:system",
        "num_classes": 10,
        "input_size": 32,
    }
    payload = {
        "format": PRUNED_FORMAT,
        "plan": plan,
        "kept": {},
        "criterion": "l1",
        "model_kwargs": {"command": f"touch {marker}"},
        "state_dict": {},
    }
    torch.save(payload, path)
    return path


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text
    return text


def test_hostile_checkpoint_is_real(hostile_checkpoint, marker) -> None:
    """Positive control: with trust_code=True the file does run its command (the refusals mean something)."""
    with pytest.raises(AutopruneError, match="not nn.Module"):
        load_model(hostile_checkpoint, trust_code=True)
    assert marker.exists()


def test_load_model_refuses_code_named_by_a_checkpoint(hostile_checkpoint, marker) -> None:
    with pytest.raises(AutopruneError) as info:
        load_model(hostile_checkpoint)
    text = _one_line(info)
    assert "os:system" in text and "--trust-code" in text and "trust_code=True" in text
    assert not marker.exists()


def test_load_pruned_refuses_code_named_by_a_file(hostile_pruned, marker) -> None:
    with pytest.raises(AutopruneError) as info:
        load_pruned(hostile_pruned)
    assert "--trust-code" in _one_line(info)
    assert not marker.exists()


def test_cli_inspect_refuses(run_cli, hostile_checkpoint, marker) -> None:
    result = run_cli("inspect", hostile_checkpoint)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--trust-code" in lines[0]
    assert not marker.exists()


def test_cli_apply_refuses(run_cli, tmp_path, hostile_checkpoint, marker) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"format": "autoprune.plan/1", "channels": {}}))
    out = tmp_path / "pruned.pt"
    result = run_cli("apply", plan, "--checkpoint", hostile_checkpoint, "--out", out)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.err
    assert not marker.exists()
    assert not out.exists()


def test_create_model_refuses_user_builders_without_trust() -> None:
    with pytest.raises(AutopruneError) as info:
        create_model(BUILDER, num_classes=3)
    assert "--trust-code" in _one_line(info)
    assert isinstance(create_model(BUILDER, num_classes=3, trust_code=True), nn.Module)
    # built-ins and torchvision names need no trust
    assert isinstance(create_model("resnet20"), nn.Module)


def test_trusted_user_builder_round_trips(tmp_path) -> None:
    model = tiny_builder(3, width=6)
    path = save_checkpoint(
        tmp_path / "tiny.pt", model, arch=BUILDER, num_classes=3, input_size=16, model_kwargs={"width": 6}
    )
    with pytest.raises(AutopruneError, match="--trust-code"):
        load_model(path)
    loaded, ckpt = load_model(path, trust_code=True)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(loaded.eval()(x), model.eval()(x))
    assert ckpt.arch == BUILDER

    space = PruningSpace.from_model(model, torch.zeros(1, 3, 16, 16), arch=BUILDER, num_classes=3)
    result = apply_plan(model, space.uniform(0.5), space=space)
    pruned_path = save_pruned(tmp_path / "tiny_pruned.pt", result, model_kwargs={"width": 6})
    with pytest.raises(AutopruneError, match="--trust-code"):
        load_pruned(pruned_path)
    again = load_pruned(pruned_path, trust_code=True).model
    assert torch.allclose(again(x), result.model.eval()(x))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"command": ["touch", "x"]}, "only plain values"),
        ({"command": torch.zeros(1)}, "only plain values"),
        ({"width_mult": {"nested": 1}}, "only plain values"),
        ({"width_mult": math.nan}, "finite"),
        ({"width_mult": math.inf}, "finite"),
        ({"num_classes": 3}, "may not set"),
        ({"not an identifier": 1}, "not an argument name"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_stored_model_kwargs_are_plain_values(tmp_path, marker, kwargs, message) -> None:
    path = tmp_path / "bad.pt"
    meta = {**_hostile_meta(marker), "arch": "mobilenetv2", "model_kwargs": kwargs}
    torch.save({"format": FORMAT, "meta": meta, "state_dict": {}}, path)
    with pytest.raises(AutopruneError, match=message) as info:
        load_model(path)
    _one_line(info)

    pruned = tmp_path / "bad_pruned.pt"
    plan = {"format": "autoprune.plan/1", "channels": {}, "arch": "mobilenetv2"}
    torch.save(
        {"format": PRUNED_FORMAT, "plan": plan, "kept": {}, "model_kwargs": kwargs, "state_dict": {}}, pruned
    )
    with pytest.raises(AutopruneError, match=message) as info:
        load_pruned(pruned)
    _one_line(info)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_classes": None}, "lacks num_classes"),
        ({"input_size": None}, "lacks input_size"),
        ({"arch": None}, "lacks arch"),
        ({"arch": 5}, "'arch' must be a model name"),
        ({"num_classes": 0}, "positive integer"),
        ({"num_classes": True}, "positive integer"),
        ({"input_size": 32.0}, "positive integer"),
        ({"input_size": "32"}, "positive integer"),
        ({"accuracy": math.nan}, "finite"),
        ({"accuracy": "high"}, "must be a number"),
        ({"seed": -math.inf}, "finite"),
        ({"dataset": 3}, "'dataset' must be a string"),
    ],
)
def test_checkpoint_metadata_is_validated(tmp_path, change, message) -> None:
    meta = {"arch": "resnet20", "num_classes": 10, "input_size": 32, "dataset": "digits"}
    for key, value in change.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    path = tmp_path / "m.pt"
    torch.save({"format": FORMAT, "meta": meta, "state_dict": {}}, path)
    with pytest.raises(AutopruneError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in _one_line(info)
    # and save_checkpoint never writes such a file
    with pytest.raises(AutopruneError, match=message):
        save_checkpoint(tmp_path / "never.pt", create_model("resnet20"), **meta)
    assert not (tmp_path / "never.pt").exists()


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"format": FORMAT, "meta": "resnet20", "state_dict": {}}, "not a mapping"),
        ({"format": FORMAT, "state_dict": {}}, "not a mapping"),
        (
            {"format": FORMAT, "meta": {"arch": "resnet20", "num_classes": 10, "input_size": 32}},
            "not a state_dict",
        ),
        (
            {
                "format": FORMAT,
                "meta": {"arch": "resnet20", "num_classes": 10, "input_size": 32},
                "state_dict": {"w": 1},
            },
            "not a named tensor",
        ),
    ],
)
def test_damaged_checkpoints_are_one_line_errors(tmp_path, payload, message) -> None:
    path = tmp_path / "m.pt"
    torch.save(payload, path)
    with pytest.raises(AutopruneError, match=message) as info:
        load_model(path)
    _one_line(info)


def test_damaged_pruned_files_are_one_line_errors(tmp_path) -> None:
    path = tmp_path / "p.pt"
    torch.save({"format": PRUNED_FORMAT, "plan": {"format": "autoprune.plan/1", "channels": {}}}, path)
    with pytest.raises(AutopruneError, match="lacks kept, state_dict") as info:
        load_pruned(path)
    _one_line(info)
