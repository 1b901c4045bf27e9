"""Shared by bench_proxy.py and bench_quality.py: Fashion-MNIST setup, cached dense model, fine-tune.

Not a benchmark itself. What both scripts need, once:

* the data: Fashion-MNIST (the Debian package's files) at ``input_size`` px (the library's
  bilinear resize of the 28 px images); the search split is the library's (``load_dataset``,
  seed 0: 6,000 images carved from the 60,000), and fine-tuning reads a **subsample** of
  ``train_images`` of the remaining training images (seeded), test top-1 on the first
  ``test_images`` test images;
* a dense checkpoint per (arch, input size, images, epochs), trained once with the library's
  ``train`` and cached under ``runs/bench/`` (gitignored), and its SR-init group sensitivity
  (3 seeds) cached beside it;
* ``finetune``: the one fine-tune schedule every plan / row gets (Nesterov SGD, cosine, no
  warm-up, batch 64, weight decay 5e-4, the library's ``train``), then test top-1;
* plan helpers (projection of preferences onto a FLOPs budget), Kendall τ, top-k overlap and a
  one-line description of the machine.
"""

from __future__ import annotations

import copy
import os
import platform
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch.utils.data import Subset

from autoprune import create_model
from autoprune.budget import project_to_budget
from autoprune.checkpoint import file_sha256, load_model, save_checkpoint
from autoprune.data import DataSplits, EvalBatches, load_dataset
from autoprune.evaluation import evaluate
from autoprune.flops import measured_macs
from autoprune.jobs.sensitivity import SensitivityJob, measure_sensitivity
from autoprune.plan import Plan
from autoprune.prior import EPSILON, preferences_from_sensitivity
from autoprune.search_spaces import space_for
from autoprune.sensitivity import Provenance, load_sensitivity
from autoprune.space import PruningSpace
from autoprune.surgery import apply_plan
from autoprune.train import TrainConfig, train

CACHE = Path("runs/bench")
DATASET = "fashion-mnist"
MODEL_KWARGS = {"resnet20": {}, "mobilenetv2": {"width_mult": 0.5}}


@dataclass(frozen=True)
class Scale:
    """Sizes of one run (``--quick`` shrinks them)."""

    input_size: int = 16
    train_images: int = 12_000
    dense_epochs: int = 10
    test_images: int = 10_000
    search_images: int = 1_000
    recal_batches: int = 8
    batch: int = 128
    sens_images: int = 1_000
    ft_epochs: int = 4
    ft_lr: float = 0.02


@dataclass
class Bench:
    """One arch's dense model, space, data and prior inputs."""

    arch: str
    scale: Scale
    model: torch.nn.Module
    checkpoint: Path
    sha256: str
    space: PruningSpace
    splits: DataSplits  # train / train_plain: the subsample; search: the library's split; test: first N
    recal: EvalBatches
    search: EvalBatches
    test: EvalBatches
    sens_path: Path
    deltas: np.ndarray  # SR-init top-1 Δ per group (space order)
    loss_deltas: np.ndarray  # SR-init cross-entropy rise per group
    dense_acc: float
    dense_macs: int

    def example(self) -> torch.Tensor:
        return torch.zeros(1, 3, self.scale.input_size, self.scale.input_size)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare(arch: str, scale: Scale) -> Bench:
    """Data, the cached dense checkpoint (trained here once) and its cached group sensitivity."""
    full = load_dataset(DATASET, input_size=scale.input_size, seed=0)
    order = torch.randperm(len(full.train), generator=torch.Generator().manual_seed(1))[: scale.train_images]
    idx = order.tolist()
    splits = DataSplits(
        name=DATASET,
        train=Subset(full.train, idx),
        train_plain=Subset(full.train_plain, idx),
        search=full.search,
        test=Subset(full.test, range(min(scale.test_images, len(full.test)))),
        num_classes=full.num_classes,
        input_size=full.input_size,
    )
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = f"{arch}-fmnist{scale.input_size}-{scale.train_images}img-{scale.dense_epochs}ep"
    ckpt = CACHE / f"{stem}.pt"
    test = EvalBatches.from_dataset(splits.test, 500)
    if not ckpt.is_file():
        torch.manual_seed(0)
        model = create_model(arch, 10, scale.input_size, **MODEL_KWARGS[arch])
        start = time.perf_counter()
        train(model, splits, TrainConfig(epochs=scale.dense_epochs, lr=0.1, batch_size=64, seed=0))
        acc = evaluate(model, test.batches).accuracy
        save_checkpoint(
            ckpt,
            model,
            arch=arch,
            dataset=DATASET,
            num_classes=10,
            input_size=scale.input_size,
            accuracy=acc,
            seed=0,
            epochs=scale.dense_epochs,
            model_kwargs=MODEL_KWARGS[arch],
        )
        log(
            f"{arch}: dense trained {scale.dense_epochs} epochs on {scale.train_images} images, "
            f"test top-1 {acc:.4f} ({time.perf_counter() - start:.0f} s) -> {ckpt}"
        )
    model, _ = load_model(ckpt)
    model.eval()
    sha = file_sha256(ckpt)
    space = space_for(model, arch, scale.input_size, 10)
    recal = EvalBatches.from_dataset(full.train_plain, scale.batch, scale.recal_batches * scale.batch, seed=0)
    search = EvalBatches.from_dataset(full.search, scale.batch, scale.search_images)
    sens_path = CACHE / f"{stem}-sens{scale.sens_images}.json"
    if not sens_path.is_file():
        start = time.perf_counter()
        job = SensitivityJob(unit="group", images=scale.sens_images, device="cpu")  # SR-init, 3 seeds
        sens = measure_sensitivity(job, model, space, full.search, Provenance(arch, DATASET, sha))
        sens.save(sens_path)
        log(
            f"{arch}: SR-init group sensitivity, 3 seeds, {scale.sens_images} images "
            f"({time.perf_counter() - start:.0f} s)"
        )
    sens = load_sensitivity(sens_path, space, unit="group")
    deltas = np.array([sens[g.id].delta for g in space.groups])
    loss_deltas = np.array([sens[g.id].loss_delta for g in space.groups])
    dense_acc = evaluate(model, test.batches).accuracy
    macs = measured_macs(model, torch.zeros(1, 3, scale.input_size, scale.input_size))
    return Bench(
        arch,
        scale,
        model,
        ckpt,
        sha,
        space,
        splits,
        recal,
        search,
        test,
        sens_path,
        deltas,
        loss_deltas,
        dense_acc,
        macs,
    )


# --------------------------------------------------------------------------- plans


def project(bench: Bench, prefs: np.ndarray, flops: float) -> Plan:
    return project_to_budget(bench.space, np.asarray(prefs, dtype=np.float64), flops=flops).plan


def prior_prefs(deltas: np.ndarray, damp: float = 1.0) -> np.ndarray:
    """The library's preferences (ε + Δ/max Δ), optionally damped: p ** damp (damp < 1 flattens)."""
    return preferences_from_sensitivity(deltas, EPSILON) ** damp


def random_prefs(n: int, rng: np.random.Generator, spread: float = 1.5) -> np.ndarray:
    """Log-uniform preferences in [e^-spread, e^spread] per group."""
    return np.exp(rng.uniform(-spread, spread, n))


def plan_key(bench: Bench, plan: Plan) -> tuple[int, ...]:
    return tuple(int(v) for v in bench.space.channels_vector(plan))


def keep_vector(bench: Bench, plan: Plan) -> np.ndarray:
    return bench.space.channels_vector(plan) / bench.space.max_counts


def pruned_model(bench: Bench, plan: Plan) -> torch.nn.Module:
    return apply_plan(bench.model, plan, "l1", space=bench.space).model


# --------------------------------------------------------------------------- fine-tune


def finetune(bench: Bench, model: torch.nn.Module, seed: int, epochs: int | None = None) -> dict[str, float]:
    """The one fine-tune schedule (on a copy of ``model``): test top-1 / loss, MACs, seconds."""
    s = bench.scale
    net = copy.deepcopy(model)
    start = time.perf_counter()
    config = TrainConfig(
        epochs=epochs or s.ft_epochs, lr=s.ft_lr, batch_size=64, warmup_epochs=0.0, seed=seed
    )
    train(net, bench.splits, config)
    seconds = time.perf_counter() - start
    result = evaluate(net, bench.test.batches)
    return {
        "acc": result.accuracy,
        "loss": result.loss,
        "seconds": seconds,
        "macs": measured_macs(net, bench.example()),
    }


def short_finetune_score(bench: Bench, model: torch.nn.Module, steps: int, lr: float = 0.01) -> float:
    """The short-fine-tune proxy: ``steps`` SGD steps (batch 64, constant lr, seed 0) from the
    inherited weights on the training subsample, then top-1 on the search split."""
    net = copy.deepcopy(model).train()
    torch.manual_seed(0)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(
        bench.splits.train,
        batch_size=64,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    done = 0
    while done < steps:
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done >= steps:
                break
    net.eval()
    return evaluate(net, bench.search.batches).accuracy


# --------------------------------------------------------------------------- statistics


def kendall(a, b) -> float:
    tau = stats.kendalltau(np.asarray(a), np.asarray(b)).statistic
    return float("nan") if tau is None else float(tau)


def top_k_overlap(a, b, k: int = 3) -> int:
    """How many of ``a``'s k best items are among ``b``'s k best (higher = better)."""
    return len(set(np.argsort(-np.asarray(a))[:k]) & set(np.argsort(-np.asarray(b))[:k]))


def mean_std(values) -> str:
    v = np.asarray(values, dtype=np.float64)
    return f"{v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.4f}"


def machine() -> str:
    """lscpu model name, logical CPUs, torch threads, load average, date, commit."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (ln.split(":", 1)[1].strip() for ln in lines.splitlines() if ln.startswith("Model name")), "?"
        )
    except OSError:
        model = platform.processor() or "?"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), load {load}, {time.strftime('%Y-%m-%d %H:%M %Z')}, "
        f"commit {commit}"
    )


def with_scale(scale: Scale, **changes) -> Scale:
    return replace(scale, **{k: v for k, v in changes.items() if v is not None})


# --------------------------------------------------------------------------- supernet, search


def supernet_for(bench: Bench, steps: int):
    """The supernet of ``bench``'s checkpoint trained ``steps`` steps (SupernetConfig defaults
    otherwise, on the training subsample), cached; returns (Supernet, training seconds, path)."""
    from autoprune.supernet import Supernet, SupernetConfig, train_supernet

    stem = bench.checkpoint.stem
    path = CACHE / f"{stem}-supernet{steps}.pt"
    if path.is_file():
        net = Supernet.load(path, bench.model, bench.space, arch=bench.arch, checkpoint_sha256=bench.sha256)
        return net, float(net.meta.get("train_seconds", float("nan"))), path
    meta = {
        "arch": bench.arch,
        "checkpoint_sha256": bench.sha256,
        "dataset": DATASET,
        "input_size": bench.scale.input_size,
        "num_classes": 10,
    }
    net = Supernet.from_dense(bench.model, bench.space, criterion="l1", meta=meta)
    start = time.perf_counter()
    train_supernet(net, bench.splits, SupernetConfig(steps=steps, seed=0))
    seconds = time.perf_counter() - start
    net.meta["train_seconds"] = round(seconds, 1)
    net.save(path)
    log(f"{bench.arch}: supernet {steps} steps trained ({seconds:.0f} s) -> {path}")
    return net, seconds, path


def autoprune_search(
    bench: Bench,
    flops: float,
    trials: int,
    seed: int,
    proxy: str = "recal",
    supernet_path: Path | None = None,
):
    """``autoprune search`` (the CLI's job) on the cached checkpoint and sensitivity: TPE, pruner
    off, the bench's recal / search sizes. Returns (result, seconds). A fresh run folder each time;
    for ``proxy="supernet"`` the given supernet is placed there first (its training is not timed)."""
    import shutil

    from autoprune.jobs import SearchConfig, run_search

    s = bench.scale
    name = f"{bench.checkpoint.stem}-{proxy}-f{flops}-s{seed}-t{trials}"
    out = CACHE / "studies" / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if supernet_path is not None:
        shutil.copy(supernet_path, out / "supernet.pt")
    config = SearchConfig(
        arch=bench.arch,
        flops=flops,
        dataset=DATASET,
        checkpoint=str(bench.checkpoint.resolve()),
        sensitivity=str(bench.sens_path.resolve()),
        sampler="tpe",
        pruner="none",
        proxy=proxy,
        trials=trials,
        seed=seed,
        study=name,
        out=str(out),
        device="cpu",
        recal_batches=s.recal_batches,
        batch_size=s.batch,
        search_images=s.search_images,
    )
    start = time.perf_counter()
    result = run_search(config)
    return result, time.perf_counter() - start


def trial_plans(bench: Bench, result) -> list[tuple[float, Plan]]:
    """(proxy value, plan) of every completed trial, best first."""
    import optuna

    trials = [
        t for t in result.study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE
    ]
    out = []
    for t in sorted(trials, key=lambda t: -t.values[0]):
        ch = t.user_attrs["channels"]
        out.append((t.values[0], bench.space.plan_from_channels([ch[g.id] for g in bench.space.groups])))
    return out


def run_archs(args, bench_arch, report, name: str, out: Path | None = None) -> None:
    """The benchmarks' main loop: print the setup, bench and report each of ``args.archs`` and
    write every result to ``out`` (default runs/bench/<name>[-quick].json)."""
    import json

    scale = Scale(train_images=6000, test_images=5000, ft_epochs=3) if args.quick else Scale()
    print(f"machine: {machine()}\nscale: {scale}\nargs: {vars(args)}", flush=True)
    results = []
    for arch in args.archs:
        results.append(bench_arch(arch, scale, args))
        report(results[-1], args, scale)
    out = out or CACHE / f"{name}{'-quick' if args.quick else ''}.json"
    document = {"machine": machine(), "scale": vars(scale), "args": vars(args), "results": results}
    out.write_text(json.dumps(document, indent=1))
    log(f"wrote {out}")
