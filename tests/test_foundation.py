"""Foundation: model zoo, datasets, checkpoints, train/inspect CLI and their errors."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from autoprune import AutopruneError, create_model
from autoprune.checkpoint import load_model, save_checkpoint
from autoprune.data import load_dataset
from autoprune.device import resolve_device
from autoprune.flops import measured_macs


def cifar_resnet_macs(depth: int, classes: int = 10) -> int:
    """Conv + linear multiply-adds of a 32 px CIFAR ResNet, counted by hand."""
    n = (depth - 2) // 6
    macs = 3 * 16 * 9 * 32 * 32
    c_in = 16
    for width, side in ((16, 32), (32, 16), (64, 8)):
        hw = side * side
        macs += c_in * width * 9 * hw + width * width * 9 * hw  # first block
        macs += c_in * width * hw if c_in != width else 0  # projection shortcut
        macs += (n - 1) * 2 * width * width * 9 * hw
        c_in = width
    return macs + 64 * classes


@pytest.mark.parametrize("depth", [20, 56])
def test_cifar_resnets_have_the_published_shapes(depth):
    model = create_model(f"resnet{depth}", num_classes=10, input_size=32)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert measured_macs(model, torch.zeros(1, 3, 32, 32)) == cifar_resnet_macs(depth)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == depth  # 6n+1 3x3 convs and one linear layer


def test_vgg16_head_reads_the_flattened_feature_map():
    model = create_model("vgg16", num_classes=10, input_size=64)
    assert model.classifier[0].in_features == 512 * 2 * 2
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 10)


def test_mobilenetv2_uses_cifar_strides_only_for_small_inputs():
    small = create_model("mobilenetv2", 10, 32)
    large = create_model("mobilenetv2", 10, 224)
    assert small.features[0][0].stride == (1, 1) and large.features[0][0].stride == (2, 2)
    x = torch.zeros(1, 3, 32, 32)
    assert small.features(x).shape[-1] == 4
    # same parameter names as torchvision: its checkpoints load
    import torchvision

    tv = torchvision.models.mobilenet_v2(num_classes=10)
    small.load_state_dict(tv.state_dict())


def test_torchvision_and_user_models():
    assert isinstance(create_model("torchvision:resnet18", num_classes=7), nn.Module)
    module = types.ModuleType("my_models")
    module.tiny = lambda num_classes: nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))
    sys.modules["my_models"] = module
    try:
        model = create_model("my_models:tiny", num_classes=4, trust_code=True)
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 4)
    finally:
        del sys.modules["my_models"]


@pytest.mark.parametrize("name", ["resnet21", "torchvision:nope", "no_such_module:f"])
def test_unknown_model_names_are_user_errors(name):
    with pytest.raises(AutopruneError) as info:
        create_model(name)
    assert "\n" not in str(info.value)


def test_unknown_model_error_lists_valid_names():
    with pytest.raises(AutopruneError, match="resnet56.*vgg16"):
        create_model("resnet21")


def test_digits_splits_are_disjoint_seeded_and_shaped():
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=0)
    c = load_dataset("digits", seed=1)
    assert a.search.indices == b.search.indices != c.search.indices
    assert set(a.search.indices).isdisjoint(a.train.indices)
    assert len(a.search) + len(a.train) + len(a.test) == 1797
    x, y = a.search[0]
    assert x.shape == (3, 32, 32) and 0 <= y < 10 and a.num_classes == 10


def test_unavailable_datasets_say_what_to_do(tmp_path):
    with pytest.raises(AutopruneError, match="--data-dir"):
        load_dataset("cifar10", tmp_path, download=False)
    with pytest.raises(AutopruneError, match="train/ and val/"):
        load_dataset(f"folder:{tmp_path}")
    with pytest.raises(AutopruneError, match="valid: digits"):
        load_dataset("mnist3d")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(AutopruneError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(AutopruneError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_checkpoint_round_trip_and_arch_check(tmp_path):
    model = create_model("resnet20")
    path = save_checkpoint(
        tmp_path / "m.pt", model, arch="resnet20", dataset="digits", num_classes=10, input_size=32
    )
    loaded, ckpt = load_model(path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    assert ckpt.meta["versions"]["torch"] == str(torch.__version__)
    with pytest.raises(AutopruneError, match="holds a resnet20, not a resnet56"):
        load_model(path, arch="resnet56")
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind


def test_train_and_inspect_cli(run_cli, tmp_path):
    out = tmp_path / "d.pt"
    result = run_cli("train", "--arch", "resnet20", "--epochs", "1", "--device", "cpu", "--out", out)
    assert result.code == 0, result.err
    assert "test accuracy" in result.out and out.is_file()
    info = run_cli("inspect", out)
    assert info.code == 0
    assert "resnet20" in info.out and "272,474" in info.out and "40,813,184" in info.out


def _single_line_error(result):
    assert result.code == 2
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    "args",
    [
        ("train", "--arch", "resnet21"),
        ("train", "--arch", "resnet20", "--dataset", "mnist3d"),
        ("train", "--arch", "resnet20", "--device", "tpu"),
        ("train", "--arch", "resnet20", "--epochs", "0"),
        ("inspect", "/nonexistent/dense.pt"),
        ("train",),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run_cli, args):
    _single_line_error(run_cli(*args))


def test_corrupt_and_foreign_checkpoints(run_cli, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = run_cli("inspect", bad)
    _single_line_error(result)
    assert "corrupt" in result.err
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    result = run_cli("inspect", foreign)
    _single_line_error(result)
    assert "not an autoprune checkpoint" in result.err


def test_help_and_version(run_cli):
    assert "train" in run_cli("--help").out
    assert "--epochs" in run_cli("train", "--help").out
    assert autoprune_version() in run_cli("--version").out


def autoprune_version() -> str:
    import autoprune

    return autoprune.__version__
