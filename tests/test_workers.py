"""Workers on one study: SIGKILLed workers (journal and PostgreSQL), SIGKILLed searches, and the
files a study names found from any folder.

Worker and search processes are forked from a forkserver that has imported ``autoprune.cli``
once, which skips the ~5 s import of a fresh interpreter; each is still a separate process
with its own pid, storage connection and (on PostgreSQL) heartbeat thread.
"""

from __future__ import annotations

import contextlib
import csv
import json
import multiprocessing
import os
import random
import shutil
import signal
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autoprune.errors import AutopruneError
from autoprune.jobs import SearchConfig, run_search, run_worker
from autoprune.search.liveness import retried_from, trial_owner
from autoprune.search.objective import TEST_PAUSE_ENV
from autoprune.search.storage import FLOCK_SUFFIX, JOURNAL_NAME, open_storage

pytestmark = pytest.mark.usefixtures("one_thread")
# forkserver, not fork: a child forked from this process (which has run torch's OpenMP threads
# and holds database pools) can hang; the server has only imported the CLI, once.
FORK = multiprocessing.get_context("forkserver")
FORK.set_forkserver_preload(["autoprune.cli"])
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# grace = 5 heartbeats: a live worker whose heartbeat thread is starved for a few seconds on a
# busy 2-core machine is not taken for dead (a 2 s grace failed a live trial once under load)
HEARTBEAT = {"AUTOPRUNE_HEARTBEAT_S": "1", "AUTOPRUNE_GRACE_S": "5"}
TINY = ("--recal-batches", "1", "--batch-size", "64", "--search-images", "64")


def _cli_child(args: list[str], env: dict[str, str]) -> None:
    os.environ.update(env)
    code = 0
    try:
        from autoprune.cli import main

        main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        code = 3
    finally:
        os._exit(code)


def _fork_cli(args, env: dict[str, str] | None = None):
    proc = FORK.Process(target=_cli_child, args=([str(a) for a in args], env or {}))
    proc.start()
    return proc


def _study(run: Path, url: str | None, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(run, url).storage)


def _wait_mid_trial(study: optuna.Study, pid: int, timeout: float = 120) -> optuna.trial.FrozenTrial:
    """The RUNNING trial owned by ``pid`` once its proxy has reported a step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial_owner(t)
            if owner is not None and owner.pid == pid and t.intermediate_values:
                return t
        time.sleep(0.05)
    raise AssertionError(f"process {pid} did not reach the middle of a trial")


def _search_args(run: Path, checkpoint: Path, name: str, trials: int, url: str | None) -> list:
    return [
        "search", "--arch", "resnet20", "--dataset", "digits", "--flops", "0.5",
        "--checkpoint", checkpoint, "--prior", "uniform", "--pruner", "none", "--trials", trials,
        "--out", run, "--study", name, "--device", "cpu", *TINY, *(["--storage", url] if url else []),
    ]  # fmt: skip


def _wait_for_study(run: Path, url: str | None, name: str, timeout: float = 120) -> optuna.Study:
    """The study once the search has stored its config (its trials may start any moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(KeyError, ValueError, OSError, AutopruneError):
            if (url or (run / JOURNAL_NAME).is_file()) and "autoprune.config" in (
                study := _study(run, url, name)
            ).user_attrs:
                return study
        time.sleep(0.1)
    raise AssertionError("the search did not create its study")


@pytest.mark.parametrize("backend", ["journal", "postgresql"])
def test_a_killed_worker_trial_fails_and_its_plan_is_retried_once(
    backend, request, tmp_path, digits_checkpoint, run_cli
):
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    name = f"kill-{uuid.uuid4().hex[:8]}"
    run, cap = tmp_path / "run", 7
    storage_args = ["--storage", url] if url else []
    worker = ["worker", run, "--study", name, "--device", "cpu", *storage_args]
    env = HEARTBEAT if url else {}
    search = _fork_cli(_search_args(run, digits_checkpoint, name, cap, url), env)  # runs trials too
    study = _wait_for_study(run, url, name)

    doomed = _fork_cli(worker, {**env, TEST_PAUSE_ENV: "600"})  # pauses after its first report step
    killed = _wait_mid_trial(study, doomed.pid)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.join(30)
    if url:  # heartbeats: the trial is stale once the grace period has passed
        time.sleep(int(HEARTBEAT["AUTOPRUNE_GRACE_S"]) + 1)
    survivors = [_fork_cli(worker, env) for _ in range(2)]
    for proc in [search, *survivors]:
        proc.join(240)
        assert proc.exitcode == 0

    trials = _study(run, url, name).get_trials()
    states = [t.state for t in trials]
    # The study's cap, exactly: the search and three workers (one killed) share it.
    assert states.count(TrialState.COMPLETE) == cap, states
    surplus = [t for t in trials if t.user_attrs.get("surplus")]
    assert all(t.state == TrialState.FAIL and not t.params for t in surplus)
    assert states.count(TrialState.FAIL) == 1 + len(surplus), states
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert trials[killed.number].state == TrialState.FAIL
    retries = [t for t in trials if retried_from(t) == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params
    plans = [tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE]
    assert len(set(plans)) == len(plans)  # no plan evaluated twice (the retry replaces a FAIL)
    with open(run / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {int(r["trial"]) for r in rows}.isdisjoint(t.number for t in surplus)  # not in outputs

    best = run / "best_trial.json"
    with open(best) as f:
        document = json.load(f)
    assert document["format"] == "autoprune.plan/1" and document["study"]["name"] == name
    assert trials[document["study"]["trial"]].state == TrialState.COMPLETE
    result = run_cli("apply", best, "--finetune-epochs", "0", "--out", tmp_path / "pruned.pt")
    assert result.code == 0, result.err
    assert (tmp_path / "pruned.pt").is_file()


def _check_run_folder(run: Path) -> None:
    """Every file in the run folder reads as what it claims to be."""
    from PIL import Image

    for path in sorted(p for p in run.rglob("*") if p.is_file()):
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            continue  # atomic_write's temporary file of a killed writer: never an output
        if path.name == JOURNAL_NAME + FLOCK_SUFFIX:
            assert path.stat().st_size == 0
        elif path.name == JOURNAL_NAME:
            optuna.get_all_study_summaries(open_storage(run).storage, include_best_trial=False)
        elif path.suffix == ".json":
            with open(path) as f:
                json.load(f)
        elif path.suffix == ".csv":
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            assert rows and rows[0][:2] == ["trial", "state"]
            assert all(len(r) == len(rows[0]) for r in rows)
        elif path.suffix == ".png" or path.parent.name == "artifacts":
            assert path.read_bytes()[:8] == PNG_SIGNATURE, path
            with Image.open(path) as image:
                image.load()
        else:
            raise AssertionError(f"unexpected file {path}")


def test_a_search_killed_at_random_moments_leaves_readable_files_and_resumes(
    tmp_path, digits_checkpoint, run_cli
):
    run = tmp_path / "run"
    args = [
        "search", "--arch", "resnet20", "--dataset", "digits", "--flops", "0.5",
        "--checkpoint", digits_checkpoint, "--prior", "uniform", "--pruner", "none",
        "--trials", "3", "--out", run, "--study", "k", "--device", "cpu", *TINY,
    ]  # fmt: skip
    rng = random.Random(1234)
    counts = []
    for _ in range(10):
        proc = _fork_cli(args)
        proc.join(rng.uniform(0.2, 4.0))
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        if run.exists():
            _check_run_folder(run)
            names = [s.study_name for s in optuna.get_all_study_summaries(open_storage(run).storage)]
            assert names in ([], ["k"])
            counts.append(len(_study(run, None, "k").trials) if names else 0)
    assert max(counts) > 0  # some kills landed after trials had started
    result = run_cli(*args)
    assert result.code == 0, result.err
    assert "resuming study 'k':" in result.out + result.err and "of 3 trials done" in result.out + result.err
    _check_run_folder(run)
    trials = _study(run, None, "k").trials
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 3  # the cap, not 3 more
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    again = run_cli(*args)  # the cap reached: nothing more to run
    assert again.code == 0 and "3 of 3 trials done" in again.out + again.err, again.err
    assert len(_study(run, None, "k").trials) == len(trials)
    assert (run / "summary.png").is_file() and (run / "best_trial.json").is_file()


def test_a_worker_in_another_folder_finds_the_files_the_study_names(
    tmp_path, digits_checkpoint, monkeypatch, run_cli
):
    import torch

    from autoprune.checkpoint import load_model
    from autoprune.search_spaces import space_for
    from autoprune.sensitivity import Perturbation, compute_sensitivity

    here = tmp_path / "here"
    (here / "run").mkdir(parents=True)
    shutil.copy(digits_checkpoint, here / "run" / "dense.pt")
    model, ckpt = load_model(digits_checkpoint)
    space = space_for(model, "resnet20", ckpt.meta["input_size"], ckpt.meta["num_classes"])
    with torch.no_grad():
        compute_sensitivity(model, space, unit="group", perturbation=Perturbation("bn-gamma")).save(
            here / "run" / "sens.json"
        )
    monkeypatch.chdir(here)
    config = SearchConfig(
        arch="resnet20",
        dataset="digits",
        flops=0.5,
        checkpoint="run/dense.pt",
        sensitivity="run/sens.json",
        pruner="none",
        trials=1,
        out="run",
        study="s",
        device="cpu",
        recal_batches=1,
        batch_size=64,
        search_images=64,
    )
    run_search(config)
    stored = _study(here / "run", None, "s").user_attrs["autoprune.config"]
    assert stored["checkpoint"] == "dense.pt" and stored["sensitivity"] == "sens.json"
    assert len(stored["sensitivity_sha256"]) == 64

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run_cli("worker", "../here/run", "--trials", "1", "--device", "cpu")
    assert result.code == 0, result.err
    with open(here / "run" / "best_trial.json") as f:
        assert Path(json.load(f)["checkpoint"]) == (here / "run" / "dense.pt").resolve()

    with open(here / "run" / "sens.json", "a") as f:
        f.write(" ")
    with pytest.raises(AutopruneError, match="sensitivity file") as error:
        run_worker(Path("../here/run"), trials=1, device="cpu")
    assert "\n" not in str(error.value)
    result = run_cli("worker", "../here/run", "--trials", "1", "--device", "cpu")
    assert result.code != 0
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "sens.json" in lines[0], result.err
