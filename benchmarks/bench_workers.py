"""Trials per minute with 1, 2 and 4 local workers, on the journal file and on PostgreSQL.

The proxy is kept cheap (resnet20 on digits, 64 search images, one recalibration batch, no
trial pruner) so that what the storage costs per trial shows. Each configuration gets a fresh
study (created by ``run_search`` with one trial), then N worker processes (forked from this
one, so interpreter start-up is not timed) run ``run_worker`` for ``--seconds``; the rate is
the trials completed inside that window, per minute of it.

The PostgreSQL server is the tests' throwaway one (:mod:`tests.pg_server`, imported, not
copied): ``make postgres-server`` installs the binaries. Without them that half is skipped.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_workers.py --seconds 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from autoprune.jobs import SearchConfig, run_search, run_worker, train_dense  # noqa: E402
from autoprune.search.storage import open_storage  # noqa: E402


def _worker(run: str, url: str | None, study: str, seconds: float, seed: int) -> None:
    code = 0
    try:
        run_worker(
            Path(run), storage=url, study=study, trials=10_000, timeout=seconds, device="cpu", seed=seed
        )
    except BaseException:
        code = 1
    os._exit(code)


def measure(root: Path, checkpoint: Path, url: str | None, workers: int, seconds: float) -> dict:
    name = f"bench-{'pg' if url else 'journal'}-{workers}"
    run = root / name
    run_search(
        SearchConfig(
            arch="resnet20",
            dataset="digits",
            flops=0.5,
            checkpoint=str(checkpoint),
            prior="uniform",
            pruner="none",
            trials=1,
            seed=0,
            out=str(run),
            study=name,
            storage=url,
            device="cpu",
            recal_batches=1,
            batch_size=64,
            search_images=64,
        )
    )
    start = datetime.now()
    fork = multiprocessing.get_context("fork")
    procs = [fork.Process(target=_worker, args=(str(run), url, name, seconds, i)) for i in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    end = datetime.now()
    study = optuna.load_study(study_name=name, storage=open_storage(run, url).storage)
    done = [
        t
        for t in study.get_trials(states=(TrialState.COMPLETE,))
        if t.datetime_start and t.datetime_start >= start
    ]
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    span = (last - first).total_seconds()
    return {
        "storage": "postgresql" if url else "journal",
        "workers": workers,
        "trials": len(done),
        "window_s": round(span, 1),
        "trials_per_min": round(60 * len(done) / span, 1) if span > 0 else None,
        "mean_trial_s": round(sum(t.duration.total_seconds() for t in done) / len(done), 3),
        "wall_s": round((end - start).total_seconds(), 1),
        "exit_codes": [p.exitcode for p in procs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="each worker's --timeout")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint = root / "dense.pt"
        train_dense("resnet20", "digits", checkpoint, epochs=1, device="cpu")
        for n in args.workers:
            rows.append(measure(root, checkpoint, None, n, args.seconds))
            print(json.dumps(rows[-1]), flush=True)
        if not args.no_postgres:
            from pg_server import PostgresServer, find_pg_bin

            bin_dir = find_pg_bin()
            if bin_dir is None:
                print("no PostgreSQL binaries (make postgres-server): PostgreSQL skipped", flush=True)
            else:
                server = PostgresServer(bin_dir)
                try:
                    server.start()
                    for n in args.workers:
                        rows.append(measure(root, checkpoint, server.url, n, args.seconds))
                        print(json.dumps(rows[-1]), flush=True)
                finally:
                    server.stop()
    print("\n| storage | workers | trials | window (s) | trials/min | mean trial (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['storage']} | {r['workers']} | {r['trials']} | {r['window_s']} | "
            f"{r['trials_per_min']} | {r['mean_trial_s']} |"
        )


if __name__ == "__main__":
    main()
