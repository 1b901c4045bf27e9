"""No storage password in any output (issue 12.2), and Ctrl-C stops training at once (12.6).

The password test runs `search` and `worker` against the real PostgreSQL fixture (with CI=true
a server that cannot start fails the test), then reads every file of the run folder, stdout and
stderr: the password appears nowhere, the study pointer holds the redacted URL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

CHEAP = ("--trials", "2", "--prior", "uniform", "--search-images", "64", "--recal-batches", "1",
         "--batch-size", "64", "--device", "cpu")  # fmt: skip


def test_no_password_in_any_output(run_cli, postgres_url, digits_checkpoint, tmp_path) -> None:
    url = postgres_url.replace("postgresql+psycopg://", "postgresql://")  # what users type
    raw = urlsplit(url).password
    secrets = {raw, unquote(raw)}
    run = tmp_path / "run"
    study = f"secret-{tmp_path.name}"
    searched = run_cli("search", "--arch", "resnet20", "--dataset", "digits", "--checkpoint",
                       digits_checkpoint, "--flops", "0.5", "--storage", url, "--study", study,
                       "--out", run, *CHEAP)  # fmt: skip
    assert searched.code == 0, searched.err
    worked = run_cli("worker", run, "--storage", url, "--study", study, "--trials", "1", "--device", "cpu")
    assert worked.code == 0, worked.err
    bad = run_cli("worker", run, "--storage", url, "--study", "nosuch", "--device", "cpu")
    assert bad.code == 2 and "***" in bad.err

    texts = {"stdout/stderr": "".join(r.out + r.err for r in (searched, worked, bad)).encode()}
    for path in run.rglob("*"):
        if path.is_file():
            texts[str(path.relative_to(run))] = path.read_bytes()
    assert "best_trial.json" in texts and "trials.csv" in texts
    for name, data in texts.items():
        for secret in secrets:
            assert secret.encode() not in data, f"the password is in {name}"
    pointer = json.loads((run / "best_trial.json").read_text())["study"]
    assert pointer["name"] == study and ":***@" in pointer["storage"]

    from autoprune.jobs import run_worker

    result = run_worker(run, storage=url, study=study, trials=1, device="cpu")
    assert ":***@" in result.storage and not any(s in result.storage for s in secrets)


def _as_from_a_shell() -> None:
    """The child starts with SIGINT unblocked and at its default, as a shell starts a program,
    whatever an earlier test left in this process (a blocked or ignored signal is inherited)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_training_at_once_and_writes_nothing(tmp_path) -> None:
    """SIGINT to `autoprune train` (a run of many epochs): exit 130 within seconds, one line, no file."""
    out = tmp_path / "out" / "dense.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    argv = [sys.executable, "-m", "autoprune.cli", "train", "--arch", "resnet20", "--dataset", "digits",
            "--epochs", "500", "--device", "cpu", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
        preexec_fn=_as_from_a_shell,
    )
    first = b""  # up to "train ...": training has started, however slow the start-up was
    while first.decode().splitlines()[-1:] != ["train ..."]:
        line = proc.stderr.readline()
        assert line, first + proc.communicate()[1]
        first += line
    time.sleep(3)  # some batches of the first epoch
    assert proc.poll() is None, proc.communicate()
    sent = time.monotonic()
    signals = [ln for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if ln.startswith("Sig")]
    proc.send_signal(signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"no exit 60 s after SIGINT; the child's signal state was {signals}") from None
    elapsed = time.monotonic() - sent
    assert proc.returncode == 130, stderr
    assert elapsed < 10, f"took {elapsed:.1f} s to stop"
    text = first.decode() + stderr.decode()
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1] == "interrupted"
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    assert sorted(p.name for p in Path(tmp_path).iterdir()) in ([], ["out"])


def test_ctrl_c_exits_130_even_when_cleanup_hangs(tmp_path) -> None:
    """A Ctrl-C whose orderly exit never finishes (here: closing the progress bars blocks forever)
    still ends the process with 130 and the one line, within the grace period."""
    script = tmp_path / "hang.py"
    script.write_text(
        "import threading\n"
        "import autoprune.cli as cli\n"
        "@cli.cli.command('interrupt-me')\n"
        "def interrupt_me():\n"
        "    raise KeyboardInterrupt\n"
        "cli.finish_all = lambda: threading.Event().wait()\n"
        "cli.main(['interrupt-me'], process=True)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=60)
    assert done.returncode == 130, done.stderr.decode()[-2000:]
    assert time.monotonic() - started < 30
    assert done.stderr.decode().strip().splitlines()[-1] == "interrupted"
