"""Issue 17 (2, 3, 7): pretrained starts (--weights offline, the cache), `autoprune import`,
ImageNet-style folder transforms, --threads, train --train-images, apply's dense-figure cache."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from PIL import Image

from autoprune.checkpoint import load_checkpoint, load_model
from autoprune.data import load_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

RESNET18_FILE = "resnet18-f37072fd.pth"  # the file name of ResNet18_Weights.IMAGENET1K_V1's URL


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch-home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("AUTOPRUNE_OFFLINE", "1")
    return home


def test_weights_offline_is_one_line_naming_the_cache_file(run_cli, empty_torch_home, tmp_path):
    out = tmp_path / "dense.pt"
    result = run_cli(
        "train", "--arch", "torchvision:resnet18", "--weights", "DEFAULT", "--epochs", "1", "--out", out
    )
    assert result.code == 2 and "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert str(empty_torch_home / "hub" / "checkpoints" / RESNET18_FILE) in " ".join(result.err.split())
    assert not out.exists()


def test_weights_in_the_cache_are_used_and_the_head_replaced(empty_torch_home):
    from autoprune import create_model

    source = torchvision.models.resnet18()
    cache = empty_torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(source.state_dict(), cache / RESNET18_FILE)
    same = create_model("torchvision:resnet18", 1000, 64, weights="IMAGENET1K_V1")
    for key, value in source.state_dict().items():
        assert torch.equal(same.state_dict()[key], value), key
    ten = create_model("torchvision:resnet18", 10, 32, weights="ResNet18_Weights.DEFAULT")
    assert torch.equal(ten.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert ten.fc.weight.shape == (10, 512)  # the head starts fresh for 10 classes


def test_bad_weights_names_are_one_line(run_cli, empty_torch_home, tmp_path):
    for arch, weights in (("torchvision:resnet18", "NOPE"), ("resnet20", "DEFAULT")):
        result = run_cli("train", "--arch", arch, "--weights", weights, "--out", tmp_path / "d.pt")
        assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err


def test_timm_without_timm_says_how_to_install():
    try:
        import timm  # noqa: F401

        pytest.skip("timm is installed")
    except ImportError:
        pass
    from autoprune import create_model
    from autoprune.errors import AutopruneError

    with pytest.raises(AutopruneError, match=r"pip install 'autoprune\[timm\]'"):
        create_model("timm:resnet18", 10, 32)


def test_import_round_trips_a_state_dict_exactly(run_cli, tmp_path):
    source = torchvision.models.resnet18(num_classes=7)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "w.pt")
    out = tmp_path / "dense.pt"
    result = run_cli(
        "import", tmp_path / "w.pt", "--arch", "torchvision:resnet18",
        "--num-classes", "7", "--input-size", "32", "--dataset", "digits", "--out", out,
    )  # fmt: skip
    assert result.code == 0, result.err
    model, ckpt = load_model(out)
    assert ckpt.meta["dataset"] == "digits" and ckpt.meta["num_classes"] == 7
    state = source.state_dict()
    assert set(model.state_dict()) == set(state)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_import_names_the_first_offender(run_cli, tmp_path):
    state = torchvision.models.resnet18(num_classes=7).state_dict()
    missing = dict(state)
    missing.pop("fc.bias")
    torch.save(missing, tmp_path / "missing.pt")
    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pt")
    cases = {
        "missing.pt": ("7", "missing key 'fc.bias'"),
        "extra.pt": ("7", "unexpected key 'extra.weight'"),
        "missing.pt ": ("9", "'fc.weight' has shape (7, 512)"),
    }
    for name, (classes, words) in cases.items():
        result = run_cli(
            "import", tmp_path / name.strip(), "--arch", "torchvision:resnet18",
            "--num-classes", classes, "--input-size", "32", "--out", tmp_path / "x.pt",
        )  # fmt: skip
        assert result.code == 2 and words in " ".join(result.err.split()), result.err
        assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "x.pt").exists()


def _image_folder(root, classes=3, per_class=10):
    gen = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class if split == "train" else 2):
                pixels = torch.randint(0, 256, (40 + i, 48, 3), generator=gen, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return root


def test_image_folder_transforms_and_splits(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    splits = load_dataset(f"folder:{root}", input_size=24, search_size=6, seed=1)
    assert splits.num_classes == 3 and splits.input_size == 24
    for dataset in (splits.train, splits.train_plain, splits.search, splits.test):
        x, y = dataset[0]
        assert x.shape == (3, 24, 24) and 0 <= y < 3
    search, train = set(splits.search.indices), set(splits.train.indices)
    assert len(search) == 6 and not search & train and len(search | train) == 30
    a, b = splits.test[1][0], splits.test[1][0]
    assert torch.equal(a, b)  # evaluation: resize + centre crop, no randomness
    assert torch.equal(splits.search[2][0], splits.search[2][0])
    torch.manual_seed(0)
    first = splits.train[0][0]
    torch.manual_seed(1)
    assert not torch.equal(first, splits.train[0][0])  # training: random resized crop + flip


def test_train_images_threads_and_apply_cache(run_cli, tmp_path, monkeypatch, digits_checkpoint):
    monkeypatch.setenv("AUTOPRUNE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "small.pt"
    before = torch.get_num_threads()
    result = run_cli(
        "train", "--arch", "resnet20", "--epochs", "1", "--train-images", "128",
        "--threads", "1", "--out", out,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert load_checkpoint(out).meta["train_images"] == 128 and torch.get_num_threads() == before

    from autoprune.search_spaces import space_for

    model, _ = load_model(digits_checkpoint)
    space_for(model, "resnet20", 32, 10).uniform(0.5).save(tmp_path / "plan.json")
    args = ("apply", tmp_path / "plan.json", "--checkpoint", digits_checkpoint, "--out", tmp_path / "p.pt")
    result = run_cli(*args, "--no-latency", "--no-dense-eval")
    assert result.code == 0, result.err
    assert not (tmp_path / "cache" / "dense_figures.json").exists()  # nothing measured on the dense
    assert run_cli(*args).code == 0
    cache = json.loads((tmp_path / "cache" / "dense_figures.json").read_text())
    figures = cache[next(iter(cache))]
    assert any(k.startswith("test accuracy") for k in figures)
    assert any(k.startswith("cpu latency") for k in figures)
    (tmp_path / "cache" / "dense_figures.json").write_text("{not json")
    assert run_cli(*args, "--no-latency").code == 0  # an unreadable cache is ignored


def test_threads_help_and_omp_default(run_cli, monkeypatch):
    for command in ("train", "search", "worker", "apply", "sensitivity", "supernet", "latency-table"):
        text = " ".join(run_cli(command, "--help").out.split())
        assert "--threads" in text and "OMP_NUM_THREADS" in text, command


def test_trials_csv_keeps_the_partial_accuracy_of_pruned_trials_apart():
    import csv
    import io
    from types import SimpleNamespace

    import optuna
    from optuna.trial import TrialState

    from autoprune.search.outputs import trials_table

    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trial.report(0.3, 0)
    study.tell(trial, state=TrialState.PRUNED)
    study.tell(study.ask(), 0.9)
    rows = list(csv.DictReader(io.StringIO(trials_table(study, SimpleNamespace(groups=[])))))
    assert [(r["state"], r["accuracy"], r["partial_accuracy"]) for r in rows] == [
        ("pruned", "", "0.3"),
        ("complete", "0.9", ""),
    ]
