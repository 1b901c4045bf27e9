"""Outputs are atomic and get the user's umask (issue 12, point 6); Ctrl-C leaves nothing half written."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import stat
import threading
from pathlib import Path

import optuna
import pytest
import torch

from autoprune import create_model
from autoprune.checkpoint import save_checkpoint
from autoprune.io import atomic_write, current_umask, write_json, write_text
from autoprune.search.charts import keep_ratio_chart, summary_chart
from autoprune.search.outputs import AtomicFileSystemArtifactStore, SummaryPacer


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it afterwards."""
    before = os.umask(0o022)
    os.umask(before)

    def set_(mask: int) -> None:
        os.umask(mask)

    yield set_
    os.umask(before)


@pytest.fixture
def sigint_raises():
    """Ctrl-C raises KeyboardInterrupt (Python's default), whatever handler was installed."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _only(folder: Path) -> list[str]:
    """Every entry of ``folder`` (temporary files start with a dot, so they show here too)."""
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_umask_mode(tmp_path, umask, mask, mode) -> None:
    umask(mask)
    assert current_umask() == mask
    assert current_umask() == mask  # reading it does not change it
    outputs = [
        write_text(tmp_path / "a.txt", "hi\n"),
        write_json(tmp_path / "b.json", {"x": 1}),
        atomic_write(tmp_path / "c.pt", lambda tmp: torch.save({"w": torch.zeros(2)}, tmp)),
        save_checkpoint(
            tmp_path / "d.pt", create_model("resnet20"), arch="resnet20", num_classes=10, input_size=32
        ),
        keep_ratio_chart(tmp_path / "e.png", ["a", "b"], [0.5, 1.0], [0, 1], "t"),
        summary_chart(tmp_path / "f.png", [0, 1], [0.1, 0.2], ["a", "b"], [1, 2], [2, 2], [4, 4]),
    ]
    for path in outputs:
        assert _mode(path) == mode, path.name
    assert _only(tmp_path) == ["a.txt", "b.json", "c.pt", "d.pt", "e.png", "f.png"]


def test_rewrite_takes_the_umask_mode_not_the_old_files(tmp_path, umask) -> None:
    umask(0o022)
    path = tmp_path / "plan.json"
    path.write_text("{}")
    path.chmod(0o600)
    write_json(path, {"a": 1})
    assert _mode(path) == 0o644 and json.loads(path.read_text()) == {"a": 1}


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_writer_failing_midway_keeps_the_previous_file(tmp_path, failure) -> None:
    path = write_text(tmp_path / "best_trial.json", "previous\n")

    def half_then_fail(tmp: Path) -> None:
        with open(tmp, "w") as f:
            f.write("half of the new conte")
            f.flush()
        raise failure

    with pytest.raises(type(failure)):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "previous\n"
    assert _only(tmp_path) == ["best_trial.json"]


def test_a_failing_first_write_leaves_nothing(tmp_path) -> None:
    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"\x89PNG partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(tmp_path / "out" / "summary.png", fail)
    assert _only(tmp_path / "out") == []


def test_a_writer_that_replaces_its_file_still_gets_the_mode(tmp_path, umask) -> None:
    umask(0o022)

    def replace(tmp: Path) -> None:  # e.g. a library that writes elsewhere and renames
        other = tmp.with_name("other")
        other.write_text("x")
        other.chmod(0o600)
        os.replace(other, tmp)

    assert _mode(atomic_write(tmp_path / "r.txt", replace)) == 0o644


# ------------------------------------------------------------------ artifacts


class _FailingStream(io.RawIOBase):
    """A stream that yields some bytes, then fails (a broken upload)."""

    def __init__(self) -> None:
        self._sent = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._sent:
            raise OSError(errno.EIO, "read failed midway")
        self._sent = True
        buffer[:4] = b"\x89PNG"
        return 4


def test_artifact_store_writes_atomically(tmp_path, umask) -> None:
    umask(0o022)
    root = tmp_path / "artifacts"
    root.mkdir()
    store = AtomicFileSystemArtifactStore(root)
    study = optuna.create_study()
    trial = study.ask()
    chart = keep_ratio_chart(tmp_path / "chart.png", ["a"], [0.5], [0], "t")
    artifact_id = optuna.artifacts.upload_artifact(
        artifact_store=store, file_path=str(chart), study_or_trial=trial, mimetype="image/png"
    )
    written = root / artifact_id
    assert written.read_bytes() == chart.read_bytes() and _mode(written) == 0o644
    with store.open_reader(artifact_id) as f:
        assert f.read() == chart.read_bytes()

    with pytest.raises(OSError, match="midway"):
        store.write("broken", io.BufferedReader(_FailingStream()))
    assert _only(root) == [artifact_id]
    with pytest.raises(ValueError):
        store.write("../escape", io.BytesIO(b"x"))
    assert not (tmp_path / "escape").exists()
    store.remove(artifact_id)
    assert _only(root) == []


def test_summary_pacer_redraws_while_cheap() -> None:
    now = [0.0]
    pacer = SummaryPacer(share=0.25, clock=lambda: now[0])
    assert pacer.due()
    with pacer.drawing():
        now[0] += 1.0  # drawing took 1 s
    now[0] += 2.0  # a 2 s trial: drawing would be 1/2 of it
    assert not pacer.due()
    now[0] += 2.0  # 4 s since the last drawing: 1 s is a quarter of that
    assert pacer.due()
    with pacer.drawing():
        now[0] += 0.1
    now[0] += 0.4  # cheap drawings are redone after every trial
    assert pacer.due()


# ------------------------------------------------------------------ Ctrl-C


class _InterruptAt:
    """A reporter hook that sends SIGINT to this process at the n-th ``advance``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0
        self.after_signal = 0
        self.finished = 0

    def advance(self, *args, **kwargs) -> None:
        self.calls += 1
        if self.calls > self.n:
            self.after_signal += 1
        if self.calls == self.n:
            signal.raise_signal(signal.SIGINT)

    def finish(self, *args, **kwargs) -> None:
        self.finished += 1


def test_training_stops_within_one_batch(sigint_raises) -> None:
    from autoprune.data import load_dataset
    from autoprune.progress import Reporter
    from autoprune.train import TrainConfig, train

    hook = _InterruptAt(2)

    class R(Reporter):
        advance = hook.advance
        finish = hook.finish

    splits = load_dataset("digits", seed=0)
    model = create_model("resnet20", splits.num_classes, splits.input_size)
    with pytest.raises(KeyboardInterrupt):
        train(model, splits, TrainConfig(epochs=1, batch_size=32), reporter=R())
    assert hook.calls == 2 and hook.after_signal == 0 and hook.finished == 1

    # the same through a stop event (callers that catch SIGINT themselves)
    stop = threading.Event()

    class S(Reporter):
        calls = 0

        def advance(self, *args, **kwargs) -> None:
            S.calls += 1
            if S.calls == 3:
                stop.set()

    with pytest.raises(KeyboardInterrupt):
        train(model, splits, TrainConfig(epochs=1, batch_size=32), reporter=S(), stop=stop)
    assert S.calls == 3


def _patch_reporter(monkeypatch, hook: _InterruptAt) -> None:
    from autoprune.cli import console

    original_finish = console.RichReporter.finish

    def advance(self, *args, **kwargs):
        hook.advance()

    def finish(self):
        hook.finish()
        original_finish(self)

    monkeypatch.setattr(console.RichReporter, "advance", advance)
    monkeypatch.setattr(console.RichReporter, "finish", finish)


def test_ctrl_c_in_cli_training_writes_no_checkpoint(run_cli, tmp_path, monkeypatch, sigint_raises) -> None:
    hook = _InterruptAt(3)
    _patch_reporter(monkeypatch, hook)
    out = tmp_path / "out" / "dense.pt"
    result = run_cli("train", "--arch", "resnet20", "--epochs", "2", "--device", "cpu", "--out", out)
    assert result.code == 130
    assert result.err.strip().splitlines()[-1] == "interrupted"
    assert "Traceback" not in result.err
    assert hook.after_signal == 0
    assert not out.exists()
    assert not out.parent.exists() or _only(out.parent) == []


def test_ctrl_c_in_cli_sensitivity_writes_no_json(run_cli, tmp_path, monkeypatch, sigint_raises) -> None:
    ckpt = save_checkpoint(
        tmp_path / "dense.pt",
        create_model("resnet20"),
        arch="resnet20",
        dataset="digits",
        num_classes=10,
        input_size=32,
    )
    hook = _InterruptAt(2)
    _patch_reporter(monkeypatch, hook)
    out = tmp_path / "sens" / "sens.json"
    result = run_cli(
        "sensitivity", "--checkpoint", ckpt, "--seeds", "1", "--images", "64", "--device", "cpu", "--out", out
    )
    assert result.code == 130, result.err
    assert result.err.strip().splitlines()[-1] == "interrupted"
    assert hook.after_signal == 0
    assert not out.parent.exists() or _only(out.parent) == []
    assert _only(tmp_path) == ["dense.pt"] + (["sens"] if out.parent.exists() else [])
