"""Search quality and throughput: TPE vs random vs the uniform plan, resnet20 at FLOPs 0.5.

For each dataset (digits always; fashion-mnist when its files are present) this
trains a dense resnet20 once, computes one SR-init group sensitivity, then runs
two studies of N trials from the same prior (TPE, random) and scores the uniform
plan at the same budget with the same proxy. It prints the best proxy score after
N trials, the score of the uniform plan, and trials per minute.

    .venv/bin/python benchmarks/bench_search.py --trials 30
    .venv/bin/python benchmarks/bench_search.py --projection 300   # budget projection only
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autoprune import create_model
from autoprune.budget import project_to_budget
from autoprune.checkpoint import load_model
from autoprune.data import DEBIAN_FASHION_MNIST, EvalBatches, load_dataset
from autoprune.jobs import SearchConfig, run_search, train_dense
from autoprune.jobs.sensitivity import SensitivityJob, measure_sensitivity
from autoprune.prior import uniform_preferences
from autoprune.search.proxies import RecalProxy
from autoprune.search_spaces import space_for
from autoprune.sensitivity import Provenance

FLOPS = 0.5


def bench(dataset: str, trials: int, dense_epochs: int, work: Path, batch: int, recal: int) -> list[str]:
    dense = work / f"{dataset}-dense.pt"
    start = time.perf_counter()
    trained = train_dense("resnet20", dataset, dense, epochs=dense_epochs, device="cpu")
    rows = [
        f"{dataset}: dense resnet20, {dense_epochs} epochs, test acc {trained.accuracy:.4f} "
        f"({time.perf_counter() - start:.0f} s)"
    ]
    model, ckpt = load_model(dense)
    space = space_for(model, "resnet20", ckpt.meta["input_size"], ckpt.meta["num_classes"])
    splits = load_dataset(dataset, input_size=ckpt.meta["input_size"])
    start = time.perf_counter()
    job = SensitivityJob(unit="group", device="cpu")  # SR-init, 3 seeds, every search image
    sens = measure_sensitivity(job, model, space, splits.search, Provenance(arch="resnet20"))
    sens_path = sens.save(work / f"{dataset}-sens.json")
    rows.append(f"{dataset}: SR-init group sensitivity {time.perf_counter() - start:.0f} s")

    recal_batches = EvalBatches.from_dataset(splits.train_plain, batch, recal * batch, seed=0)
    search = EvalBatches.from_dataset(splits.search, batch)
    uniform = project_to_budget(space, uniform_preferences(len(space.groups)), flops=FLOPS)
    score = RecalProxy(model, space, recal_batches, search, device=model.fc.weight.device).score(uniform.plan)
    rows.append(
        f"{dataset}: uniform plan at FLOPs {uniform.flops_ratio:.4f}: proxy accuracy {score.accuracy:.4f}"
    )
    for sampler in ("tpe", "random"):
        config = SearchConfig(
            arch="resnet20",
            dataset=dataset,
            flops=FLOPS,
            checkpoint=str(dense),
            sensitivity=str(sens_path),
            sampler=sampler,
            pruner="none",
            trials=trials,
            seed=0,
            study=f"{dataset}-{sampler}",
            out=str(work / f"{dataset}-{sampler}"),
            device="cpu",
            recal_batches=recal,
            batch_size=batch,
        )
        start = time.perf_counter()
        result = run_search(config)
        minutes = (time.perf_counter() - start) / 60
        best = result.best
        rows.append(
            f"{dataset}: {sampler:6s} best proxy accuracy after {trials} trials {best.values[0]:.4f} "
            f"(trial {best.number}, FLOPs {best.user_attrs['flops_ratio']:.4f}); "
            f"{trials / minutes:.1f} trials/min"
        )
    return rows


def bench_projection(n: int) -> list[str]:
    """Random preferences and budgets on every built-in arch: misses of the 0.5 % band, and time."""
    rows = []
    for arch in ("resnet20", "resnet32", "resnet56", "resnet110", "mobilenetv2", "vgg16"):
        space = space_for(create_model(arch, 10, 32), arch, 32, 10)
        rng = np.random.default_rng(123)
        times, misses = [], 0
        for _ in range(n):
            prefs = np.exp(rng.uniform(-3, 3, len(space.groups)))
            target = rng.uniform(0.3, 0.95)
            kind = str(rng.choice(["flops", "params"]))
            start = time.perf_counter()
            projection = project_to_budget(space, prefs, **{kind: target})
            times.append(time.perf_counter() - start)
            ratio = projection.flops_ratio if kind == "flops" else projection.params_ratio
            misses += not (target * 0.995 <= ratio <= target)
        rows.append(
            f"projection {arch}: {len(space.groups)} groups, "
            f"{misses}/{n} outside [99.5 %, 100 %] of the budget, "
            f"mean {np.mean(times):.3f} s, max {np.max(times):.3f} s"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--digits-epochs", type=int, default=15)
    parser.add_argument("--fmnist-epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--recal-batches", type=int, default=8)
    parser.add_argument("--skip-fashion-mnist", action="store_true")
    parser.add_argument("--projection", type=int, default=0, help="Only time N random projections per arch.")
    args = parser.parse_args()
    if args.projection:
        torch.set_num_threads(1)
        for row in bench_projection(args.projection):
            print(row, flush=True)
        return
    datasets = [("digits", args.digits_epochs)]
    if not args.skip_fashion_mnist and (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        datasets.append(("fashion-mnist", args.fmnist_epochs))
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, epochs in datasets:
            for row in bench(dataset, args.trials, epochs, Path(tmp), args.batch, args.recal_batches):
                print(row, flush=True)


if __name__ == "__main__":
    main()
