"""`autoprune sensitivity`: files written, depth plan end to end, missing checkpoint, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import autoprune
from autoprune.checkpoint import load_model, save_checkpoint
from autoprune.plan import Plan
from autoprune.space import PruningSpace


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _calibrated_resnet20() -> nn.Module:
    """Random weights with BN statistics from digits-like noise: no training, non-trivial outputs."""
    torch.manual_seed(0)
    model = autoprune.create_model("resnet20", 10, 32)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            nn.init.uniform_(m.weight, 0.5, 1.5)
    model.train()
    with torch.no_grad():
        model(torch.randn(128, 3, 32, 32))
    return model.eval()


def _save(model: nn.Module, path: Path) -> Path:
    return save_checkpoint(
        path, model, arch="resnet20", dataset="digits", num_classes=10, input_size=32, seed=0
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return _save(_calibrated_resnet20(), tmp_path_factory.mktemp("ckpt") / "dense.pt")


def test_writes_json_chart_and_a_depth_plan_equal_to_the_zero_branch_model(run_cli, checkpoint, tmp_path):
    out = tmp_path / "sens.json"
    r = run_cli(
        "sensitivity", "--checkpoint", checkpoint, "--seeds", "2", "--images", "32",
        "--remove", "2", "--out", out,
    )  # fmt: skip
    assert r.code == 0, r.err
    data = json.loads(out.read_text())
    assert data["method"] == "sr-init" and data["unit"] == "block" and data["images"] == 32
    assert data["arch"] == "resnet20" and data["dataset"] == "digits" and data["split"] == "search"
    assert data["checkpoint_sha256"] == autoprune.checkpoint.file_sha256(checkpoint)
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plan_path = tmp_path / "sens.plan.json"
    assert "depth plan" in r.out and str(plan_path.name) in r.out
    plan = Plan.load(plan_path)
    assert len(plan.removed_blocks) == 2

    model, _ = load_model(checkpoint)
    model.eval()
    space = PruningSpace.from_model(model, torch.zeros(1, 3, 32, 32), arch="resnet20")
    pruned = autoprune.apply_plan(model, plan, space=space).model.eval()
    zero = _zero_branches(model, space, plan.removed_blocks)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), zero(x), atol=1e-6, rtol=0)
        assert not torch.allclose(model(x), zero(x))  # the removal did change the network


def _zero_branches(model: nn.Module, space: PruningSpace, blocks: list[str]) -> nn.Module:
    """The original model with each block's residual branch output made zero."""
    import copy

    zero = copy.deepcopy(model)
    ends = {b.name: b.branch_end for b in space.blocks}
    with torch.no_grad():
        for name in blocks:
            bn = zero.get_submodule(ends[name])
            bn.weight.zero_()
            bn.bias.zero_()
    return zero.eval()


def test_tau_from_a_saved_file_never_removes_shape_changing_blocks(run_cli, checkpoint, tmp_path):
    out = tmp_path / "sens.json"
    assert (
        run_cli(
            "sensitivity", "--checkpoint", checkpoint, "--seeds", "1", "--images", "16", "--out", out
        ).code
        == 0
    )
    plan_out = tmp_path / "depth.json"
    r = run_cli(
        "sensitivity", "--checkpoint", checkpoint, "--sensitivity", out, "--prune-blocks", "1.0",
        "--plan-out", plan_out, "--out", out,
    )  # fmt: skip
    assert r.code == 0, r.err
    removed = Plan.load(plan_out).removed_blocks
    assert removed == [u["id"] for u in json.loads(out.read_text())["units"] if u["removable"]]
    assert "layer2.0" not in removed and "layer3.0" not in removed
    assert len(removed) == 7  # the 9 blocks of resnet20 minus the two that change shape


def test_group_units_sbpf_and_bn_gamma(run_cli, checkpoint, tmp_path):
    out = tmp_path / "g.json"
    r = run_cli(
        "sensitivity", "--checkpoint", checkpoint, "--method", "sbpf", "--unit", "group",
        "--seeds", "1", "--sigmas", "0.5", "--images", "16", "--exact", "--out", out,
    )  # fmt: skip
    assert r.code == 0, r.err
    data = json.loads(out.read_text())
    assert data["sigmas"] == [0.5] and data["units"][0]["id"] == "conv1"
    assert data["engine"] == data["engine"] | {"fold_bn": False, "channels_last": False, "fused": 0}
    r = run_cli(
        "sensitivity", "--checkpoint", checkpoint, "--method", "bn-gamma", "--out", tmp_path / "b.json"
    )
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "b.json").read_text())["images"] == 0


@pytest.fixture
def fake_dense_training(monkeypatch) -> list[tuple[str, str, Path]]:
    """Dense training replaced by saving a calibrated resnet20; the list of its (arch, dataset, out) calls."""
    calls: list[tuple[str, str, Path]] = []

    def fake_train_dense(arch, dataset, out, **kwargs):
        calls.append((arch, dataset, Path(out)))
        _save(_calibrated_resnet20(), out)

    monkeypatch.setattr("autoprune.jobs.dense.train_dense", fake_train_dense)
    return calls


def test_missing_checkpoint_trains_one_then_reuses_it(run_cli, tmp_path, fake_dense_training):
    calls = fake_dense_training
    out = tmp_path / "sens.json"
    args = ("sensitivity", "--arch", "resnet20", "--method", "bn-gamma", "--out", out)
    r = run_cli(*args)
    assert r.code == 0, r.err
    expected = tmp_path / "dense-resnet20-digits.pt"
    assert calls == [("resnet20", "digits", expected)] and expected.is_file()
    assert "training a dense resnet20 on digits first" in r.err
    r = run_cli(*args)
    assert r.code == 0 and len(calls) == 1
    assert "from a previous run" in r.err


def test_missing_checkpoint_path_trains_only_with_train_missing(run_cli, tmp_path, fake_dense_training):
    """A mistyped --checkpoint is an error; --train-missing trains a dense model at that path."""
    calls = fake_dense_training
    ckpt = tmp_path / "models" / "dense.pt"
    args = ("sensitivity", "--arch", "resnet20", "--checkpoint", ckpt, "--method", "bn-gamma",
            "--out", tmp_path / "sens.json")  # fmt: skip
    r = run_cli(*args)
    assert r.code == 2 and "--train-missing" in r.err and calls == []
    assert not ckpt.parent.exists() and not (tmp_path / "sens.json").exists()
    r = run_cli(*args, "--train-missing")
    assert r.code == 0, r.err
    assert calls == [("resnet20", "digits", ckpt)] and ckpt.is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--method", "magic"), "'magic' is not one of"),
        (("--seeds", "0"), "0 is not in the range x>=1"),
        (("--unit", "group", "--remove", "2"), "needs --unit block"),
        (("--remove", "2", "--prune-blocks", "0.1"), "not both"),
        (("--max-memory", "lots"), "not a size"),
        (("--remove", "8"), "cannot remove 8 blocks: only 7 of 9 are removable"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run_cli, checkpoint, tmp_path, args, message):
    r = run_cli("sensitivity", "--checkpoint", checkpoint, "--images", "8", "--seeds", "1",
                "--out", tmp_path / "s.json", *args)  # fmt: skip
    assert r.code == 2
    assert message in r.err
    assert len(r.err.strip().splitlines()) == 1, r.err


def test_sensitivity_file_of_another_arch_is_one_line(run_cli, checkpoint, tmp_path):
    out = tmp_path / "sens.json"
    assert run_cli("sensitivity", "--checkpoint", checkpoint, "--method", "bn-gamma", "--out", out).code == 0
    data = json.loads(out.read_text())
    data["arch"] = "resnet56"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    r = run_cli("sensitivity", "--checkpoint", checkpoint, "--sensitivity", other, "--remove", "1",
                "--out", tmp_path / "x.json")  # fmt: skip
    assert r.code == 2
    assert "sens.json was computed for resnet56, not resnet20" in r.err
    assert len(r.err.strip().splitlines()) == 1
    r = run_cli("sensitivity", "--checkpoint", tmp_path / "nope.pt", "--out", tmp_path / "y.json")
    assert r.code == 2 and "pass --train-missing" in r.err
