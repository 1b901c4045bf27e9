"""Every script in examples/ runs, at tiny sizes (EXAMPLE_TRIALS, EXAMPLE_SIZE), through runpy."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _main(name: str):
    return runpy.run_path(str(EXAMPLES / name), run_name="example")["main"]


@pytest.fixture(autouse=True)
def _tiny(monkeypatch) -> None:
    monkeypatch.setenv("EXAMPLE_TRIALS", "2")
    monkeypatch.setenv("EXAMPLE_SIZE", "32")


def test_every_example_has_a_test() -> None:
    tested = {"prune_resnet18.py", "custom_model.py", "resume_study.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_resnet18_with_a_score_fn_on_an_image_folder(tmp_path, capsys) -> None:
    pytest.importorskip("torchvision")
    result = _main("prune_resnet18.py")(str(tmp_path / "run"))
    assert result.trials_done == 2 and result.cost["flops_ratio"] <= 0.5 + 1e-9
    best = json.loads((tmp_path / "run" / "best_trial.json").read_text())
    assert best["score"]["score_fn"].endswith("top1") and "params:" in capsys.readouterr().out


def test_a_model_of_your_own_with_its_own_loader(tmp_path) -> None:
    result = _main("custom_model.py")(str(tmp_path / "run"))
    assert result.plan is not None and (tmp_path / "run" / "pruned.pt").is_file()
    assert result.cost["flops_ratio"] <= 0.4 + 1e-9


def test_resume_a_study_from_python(tmp_path, capsys) -> None:
    assert _main("resume_study.py")(str(tmp_path / "run")) == 4
    assert capsys.readouterr().out.startswith("2 trials, then 4")
