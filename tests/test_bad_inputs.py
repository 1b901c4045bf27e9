"""Every bad input to every command is one line `error: ...` on stderr and exit code 2 (issue 12.3).

Table-driven: each case is (id, setup, argv). ``setup(tmp, ckpt, monkeypatch)`` prepares files
in the case's folder; ``argv`` may name ``{tmp}`` (that folder) and ``{ckpt}`` (the session's
small digits checkpoint). Each case runs in-process with the working directory set to ``tmp``
(so default outputs land there), and asserts: exit code 2, exactly one stderr line starting
``error:``, no traceback, and the whole folder unchanged afterwards, file by file (sha256):
nothing created (no half-made run folder, journal, checkpoint or marker), nothing overwritten.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import torch

from autoprune.checkpoint import FORMAT, file_sha256, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

SEARCH = ("search", "--arch", "resnet20", "--dataset", "digits", "--checkpoint", "{ckpt}",
          "--out", "{tmp}/run", "--device", "cpu", "--prior", "uniform")  # fmt: skip
FLOPS = ("--flops", "0.5")
APPLY = ("apply", "{tmp}/plan.json", "--checkpoint", "{ckpt}", "--out", "{tmp}/out/pruned.pt",
         "--device", "cpu")  # fmt: skip
SENS = ("sensitivity", "--checkpoint", "{ckpt}", "--method", "bn-gamma", "--out", "{tmp}/sens/s.json")
MARKER = "PWNED"


# ------------------------------------------------------------------ setups


def nothing(tmp: Path, ckpt: Path, monkeypatch) -> None:
    pass


def a_file(name: str, text: str = "previous contents\n") -> Callable:
    def setup(tmp: Path, ckpt: Path, monkeypatch) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text)

    return setup


def a_folder(*names: str) -> Callable:
    def setup(tmp: Path, ckpt: Path, monkeypatch) -> None:
        for name in names:
            (tmp / name).mkdir(parents=True, exist_ok=True)

    return setup


def read_only_folder(tmp: Path, ckpt: Path, monkeypatch) -> None:
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)


def plan(extra: dict | None = None, text: str | None = None) -> Callable:
    """A plan.json: ``extra`` merged into an empty plan, or the raw ``text``."""

    def setup(tmp: Path, ckpt: Path, monkeypatch) -> None:
        if text is not None:
            (tmp / "plan.json").write_text(text)
            return
        document = {"format": "autoprune.plan/1", "channels": {}, **(extra or {})}
        (tmp / "plan.json").write_text(json.dumps(document))  # NaN/Infinity as JS literals

    return setup


def checkpoint_payload(payload: dict | None = None, raw: bytes | None = None) -> Callable:
    def setup(tmp: Path, ckpt: Path, monkeypatch) -> None:
        if raw is not None:
            (tmp / "bad.pt").write_bytes(raw)
        else:
            torch.save(payload, tmp / "bad.pt")

    return setup


def hostile_checkpoint(tmp: Path, ckpt: Path, monkeypatch) -> None:
    """A checkpoint whose arch is ``os:system``: building it would create the MARKER file."""
    meta = {
        "arch": "os:system",
        "model_kwargs": {"command": f"touch {tmp / MARKER}"},
        "num_classes": 10,
        "input_size": 32,
        "dataset": "digits",
    }
    torch.save({"format": FORMAT, "meta": meta, "state_dict": {}}, tmp / "hostile.pt")


def hostile_study(tmp: Path, ckpt: Path, monkeypatch) -> None:
    """A run folder whose study's stored config names the hostile checkpoint."""
    from autoprune.search.storage import open_storage

    hostile_checkpoint(tmp, ckpt, monkeypatch)
    opened = open_storage(tmp / "run")
    study = optuna.create_study(study_name="s", storage=opened.storage)
    study.set_user_attr(
        "autoprune.config",
        {
            "arch": "os:system",
            "dataset": "digits",
            "checkpoint": str(tmp / "hostile.pt"),
            "checkpoint_sha256": file_sha256(tmp / "hostile.pt"),
            "sampler": "random",
            "pruner": "none",
        },
    )


def truncated_checkpoint(tmp: Path, ckpt: Path, monkeypatch) -> None:
    data = ckpt.read_bytes()
    (tmp / "bad.pt").write_bytes(data[: len(data) // 2])


def untraceable_checkpoint(tmp: Path, ckpt: Path, monkeypatch) -> None:
    from tests_helpers import untraceable

    save_checkpoint(
        tmp / "untraceable.pt",
        untraceable(10),
        arch="tests_helpers:untraceable",
        dataset="digits",
        num_classes=10,
        input_size=32,
    )


def empty_image_folder(tmp: Path, ckpt: Path, monkeypatch) -> None:
    (tmp / "images" / "train").mkdir(parents=True)
    (tmp / "images" / "val").mkdir(parents=True)


def other_checkpoints_sensitivity(tmp: Path, ckpt: Path, monkeypatch) -> None:
    """A group sensitivity of this model whose recorded checkpoint hash is another file's."""
    from autoprune.jobs import SensitivityJob, run_sensitivity_job

    out = tmp.parent / f"{tmp.name}-sens" / "sens.json"
    job = SensitivityJob(checkpoint=ckpt, method="bn-gamma", unit="group", out=out, device="cpu")
    run_sensitivity_job(job)
    data = json.loads(out.read_text())
    data["checkpoint_sha256"] = "0" * 64
    (tmp / "sens.json").write_text(json.dumps(data))


def disk_full_on_replace(then: Callable = nothing) -> Callable:
    """``then``, and every atomic rename fails with ENOSPC (a full disk at the last step)."""

    def setup(tmp: Path, ckpt: Path, monkeypatch) -> None:
        then(tmp, ckpt, monkeypatch)

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "replace", full)

    return setup


def disk_full_on_torch_save(then: Callable = nothing) -> Callable:
    """``then``, and torch.save writes half a file, then fails with ENOSPC."""

    def setup(tmp: Path, ckpt: Path, monkeypatch) -> None:
        then(tmp, ckpt, monkeypatch)

        def full(obj, f, *args, **kwargs):
            Path(f).write_bytes(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))

        monkeypatch.setattr(torch, "save", full)

    return setup


def both(*setups: Callable) -> Callable:
    def setup(tmp: Path, ckpt: Path, monkeypatch) -> None:
        for s in setups:
            s(tmp, ckpt, monkeypatch)

    return setup


IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NEEDS_NON_ROOT = {"train-out-read-only"}  # root writes into read-only folders

# ------------------------------------------------------------------ the table

CASES = [
    # train
    ("train-epochs-0", nothing, ("train", "--arch", "resnet20", "--epochs", "0", "--out", "{tmp}/o/d.pt")),
    ("train-dataset-unknown", nothing,
     ("train", "--arch", "resnet20", "--dataset", "nosuch", "--out", "{tmp}/o/d.pt")),
    ("train-arch-unknown", nothing, ("train", "--arch", "nosuch", "--out", "{tmp}/o/d.pt")),
    ("train-device-tpu", nothing,
     ("train", "--arch", "resnet20", "--device", "tpu", "--out", "{tmp}/o/d.pt")),
    ("train-lr-negative", nothing, ("train", "--arch", "resnet20", "--lr", "-1", "--out", "{tmp}/o/d.pt")),
    ("train-out-under-a-file", a_file("f"), ("train", "--arch", "resnet20", "--out", "{tmp}/f/d.pt")),
    ("train-out-read-only", read_only_folder, ("train", "--arch", "resnet20", "--out", "{tmp}/ro/d.pt")),
    ("train-empty-image-folder", empty_image_folder,
     ("train", "--arch", "resnet20", "--dataset", "folder:{tmp}/images", "--out", "{tmp}/o/d.pt")),
    ("train-builder-returns-no-module", nothing, ("train", "--arch", "os:getcwd", "--out", "{tmp}/o/d.pt")),
    # inspect
    ("inspect-missing", nothing, ("inspect", "{tmp}/nope.pt")),
    ("inspect-not-torch", a_file("bad.pt", "hello, not a checkpoint\n"), ("inspect", "{tmp}/bad.pt")),
    ("inspect-truncated", truncated_checkpoint, ("inspect", "{tmp}/bad.pt")),
    ("inspect-empty-file", checkpoint_payload(raw=b""), ("inspect", "{tmp}/bad.pt")),
    ("inspect-no-num-classes",
     checkpoint_payload({"format": FORMAT, "meta": {"arch": "resnet20", "input_size": 32}, "state_dict": {}}),
     ("inspect", "{tmp}/bad.pt")),
    ("inspect-pickled-object",
     checkpoint_payload({"format": FORMAT, "meta": {"arch": "resnet20", "p": Path("x")}, "state_dict": {}}),
     ("inspect", "{tmp}/bad.pt")),
    ("inspect-os-system", hostile_checkpoint, ("inspect", "{tmp}/hostile.pt")),
    # sensitivity
    ("sensitivity-missing-checkpoint", nothing, ("sensitivity", "--checkpoint", "{tmp}/nope.pt", "--arch",
                                                 "resnet20", "--out", "{tmp}/s/s.json")),
    ("sensitivity-seeds-0", nothing, (*SENS, "--seeds", "0")),
    ("sensitivity-device-tpu", nothing, (*SENS, "--device", "tpu")),
    ("sensitivity-out-under-a-file", a_file("f"), (*SENS[:-1], "{tmp}/f/s.json")),
    ("sensitivity-json-missing", nothing, (*SENS, "--sensitivity", "{tmp}/nope.json")),
    ("sensitivity-os-system", hostile_checkpoint, ("sensitivity", "--checkpoint", "{tmp}/hostile.pt",
                                                   "--method", "bn-gamma", "--out", "{tmp}/s/s.json")),
    ("sensitivity-untraceable-model", untraceable_checkpoint,
     ("sensitivity", "--checkpoint", "{tmp}/untraceable.pt", "--trust-code", "--method", "bn-gamma",
      "--out", "{tmp}/s/s.json")),
    ("sensitivity-disk-full", disk_full_on_replace(a_file("sens/s.json")), SENS),
    # search
    ("search-trials-0", nothing, (*SEARCH, *FLOPS, "--trials", "0")),
    ("search-trials-negative", nothing, (*SEARCH, *FLOPS, "--trials", "-3")),
    ("search-trials-huge", nothing, (*SEARCH, *FLOPS, "--trials", "99999999999")),
    ("search-flops-0", nothing, (*SEARCH, "--flops", "0")),
    ("search-flops-1.5", nothing, (*SEARCH, "--flops", "1.5")),
    ("search-flops-negative", nothing, (*SEARCH, "--flops", "-1")),
    ("search-flops-nan", nothing, (*SEARCH, "--flops", "nan")),
    ("search-params-2", nothing, (*SEARCH, "--params", "2")),
    ("search-params-0", nothing, (*SEARCH, "--params", "0")),
    ("search-no-budget", nothing, SEARCH),
    ("search-sampler-unknown", nothing, (*SEARCH, *FLOPS, "--sampler", "annealing")),
    ("search-storage-unreachable", nothing, (*SEARCH, *FLOPS, "--storage", "postgresql://u:pw@127.0.0.1:1/x")),
    ("search-storage-malformed", nothing, (*SEARCH, *FLOPS, "--storage", "postgresql://u:pw@[::1")),
    ("search-storage-unknown-scheme", nothing, (*SEARCH, *FLOPS, "--storage", "ftp://host/x")),
    ("search-device-tpu-existing-folder", a_folder("run"), (*SEARCH, *FLOPS, "--device", "tpu")),
    ("search-arch-unknown-trains-nothing", nothing,
     ("search", "--arch", "nosuch", "--dataset", "digits", "--flops", "0.5", "--out", "{tmp}/run")),
    ("search-missing-checkpoint", nothing, (*SEARCH[:6], "{tmp}/nope.pt", *SEARCH[7:], *FLOPS)),
    ("search-out-under-a-file", a_file("f"), (*SEARCH[:8], "{tmp}/f/run", *SEARCH[9:], *FLOPS)),
    ("search-sensitivity-of-another-checkpoint", other_checkpoints_sensitivity,
     (*SEARCH[:-2], *FLOPS, "--sensitivity", "{tmp}/sens.json")),
    ("search-untraceable-model", untraceable_checkpoint,
     ("search", "--arch", "tests_helpers:untraceable", "--trust-code", "--dataset", "digits",
      "--checkpoint", "{tmp}/untraceable.pt", "--flops", "0.5", "--out", "{tmp}/run", "--prior", "uniform",
      "--device", "cpu")),
    ("search-os-system-checkpoint", hostile_checkpoint,
     (*SEARCH[:6], "{tmp}/hostile.pt", *SEARCH[7:], *FLOPS)),
    # worker
    ("worker-mistyped-folder", nothing, ("worker", "{tmp}/runn")),
    ("worker-trials-0", nothing, ("worker", "{tmp}/run", "--trials", "0")),
    ("worker-os-system-study", hostile_study, ("worker", "{tmp}/run", "--device", "cpu")),
    ("worker-storage-unreachable", nothing, ("worker", "{tmp}/run", "--storage", "postgresql://u:pw@127.0.0.1:1/x")),
    # dashboard
    ("dashboard-no-study", a_folder("run"), ("dashboard", "{tmp}/run", "--port", "0")),
    ("dashboard-missing-folder", nothing, ("dashboard", "{tmp}/nope", "--port", "0")),
    ("dashboard-port-out-of-range", a_folder("run"), ("dashboard", "{tmp}/run", "--port", "70000")),
    # apply
    ("apply-plan-missing", nothing, APPLY),
    ("apply-not-json", plan(text="{not json"), APPLY),
    ("apply-json-list", plan(text="[1, 2]"), APPLY),
    ("apply-not-a-plan", plan(text='{"format": "something/1"}'), APPLY),
    ("apply-channels-nan", plan({"channels": {"conv1": float("nan")}}), APPLY),
    ("apply-channels-infinity", plan({"channels": {"conv1": float("inf")}}), APPLY),
    ("apply-ratios-nan", plan({"ratios": {"conv1": float("nan")}}), APPLY),
    ("apply-checkpoint-number", plan({"checkpoint": 5}), APPLY[:2] + APPLY[4:]),
    ("apply-checkpoint-null", plan({"checkpoint": None}), APPLY[:2] + APPLY[4:]),
    ("apply-missing-checkpoint", plan({"checkpoint_sha256": "ab" * 32}),
     (*APPLY[:3], "{tmp}/nope.pt", *APPLY[4:])),
    ("apply-extra-group", plan({"channels": {"nosuch.conv": 4}}), APPLY),
    ("apply-too-many-channels", plan({"channels": {"conv1": 1000}}), APPLY),
    ("apply-zero-channels", plan({"channels": {"conv1": 0}}), APPLY),
    ("apply-other-input-size", plan({"input_size": 64}), APPLY),
    ("apply-other-arch", plan({"arch": "mobilenetv2"}), APPLY),
    ("apply-export-unknown", plan(), (*APPLY, "--export", "zip")),
    ("apply-out-under-a-file", both(plan(), a_file("f")), (*APPLY[:5], "{tmp}/f/p.pt", *APPLY[6:])),
    ("apply-os-system-checkpoint", both(plan(), hostile_checkpoint),
     (*APPLY[:3], "{tmp}/hostile.pt", *APPLY[4:])),
    ("apply-disk-full", disk_full_on_torch_save(both(plan(), a_file("out/pruned.pt"))), APPLY),
]  # fmt: skip


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder``: a sha256 per file, 'dir' per folder."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        found[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


PARAMS = [
    pytest.param(
        *case,
        id=case[0],
        marks=pytest.mark.skipif(IS_ROOT and case[0] in NEEDS_NON_ROOT, reason="root writes anywhere"),
    )
    for case in CASES
]


@pytest.mark.parametrize(("case", "setup", "argv"), PARAMS)
def test_bad_input(case, setup, argv, run_cli, digits_checkpoint, tmp_path, monkeypatch) -> None:
    work = tmp_path / "case"
    work.mkdir()
    monkeypatch.chdir(work)
    setup(work, digits_checkpoint, monkeypatch)
    before = snapshot(work)
    args = [a.format(tmp=work, ckpt=digits_checkpoint) for a in argv]
    result = run_cli(*args)
    monkeypatch.undo()  # the disk-full patches end here
    lines = result.err.strip().splitlines()
    assert result.code == 2, (case, result.code, result.err)
    assert len(lines) == 1 and lines[0].startswith("error:"), (case, result.err)
    assert "Traceback" not in result.err + result.out
    assert snapshot(work) == before, case
    assert not (work / MARKER).exists()


def test_the_table_is_large_and_covers_every_command() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) >= 40
    for command in ("train", "inspect", "sensitivity", "search", "worker", "dashboard", "apply"):
        assert any(i.startswith(command) for i in ids), command
