"""Sensitivity speed: the naive method vs autoprune's cached engine vs --adaptive, in one run.

For each architecture and unit kind, three phases run, each in a fresh process;
peak resident memory is counted from after the model and data are loaded (the
kernel's peak-RSS counter is reset there), so it is the computation's own:

* ``naive``: the plain model (no folding/fusion, NCHW), the whole network rerun
  for every unit and seed on every chunk of images; the baseline;
* ``cached``: autoprune's default engine (prefix caching, BN folding, oneDNN
  conv+activation fusion, channels_last); its per-seed values are compared with
  the naive ones;
* ``adaptive``: the cached engine with adaptive sample size; the images each unit
  used and the Spearman correlation of its ranking with the full-data ranking
  (the cached phase's) are reported.

Models: resnet56 and mobilenetv2 trained briefly on a subset of fashion-mnist
(32x32; cached in --workdir), sensitivities on the first --images of a seeded
permutation of the search split (never the test split).

    .venv/bin/python benchmarks/bench_sensitivity.py --threads 1 --out /tmp/bench_sens.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ARCHS = ("resnet56", "mobilenetv2")
UNITS = ("block", "group")


def train_checkpoint(arch: str, path: Path, train_images: int, epochs: int, threads: int) -> dict:
    """Train ``arch`` on ``train_images`` fashion-mnist images (the search split held out)."""
    import torch
    from torch.utils.data import Subset

    from autoprune import create_model
    from autoprune.checkpoint import save_checkpoint
    from autoprune.data import load_dataset
    from autoprune.train import TrainConfig, evaluate_dataset, train

    torch.set_num_threads(threads)
    splits = load_dataset("fashion-mnist", seed=0)
    keep = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(1))[:train_images]
    small = replace(splits, train=Subset(splits.train, keep.tolist()))
    torch.manual_seed(0)
    model = create_model(arch, splits.num_classes, splits.input_size)
    start = time.perf_counter()
    train(model, small, TrainConfig(epochs=epochs, lr=0.05, batch_size=64, seed=0))
    test = Subset(splits.test, list(range(2000)))
    acc = evaluate_dataset(model, test).accuracy
    save_checkpoint(
        path,
        model,
        arch=arch,
        dataset="fashion-mnist",
        num_classes=splits.num_classes,
        input_size=splits.input_size,
        seed=0,
        epochs=epochs,
        train_images=train_images,
        accuracy=acc,
    )
    return {"accuracy_test2000": acc, "train_seconds": time.perf_counter() - start}


def run_phase(conn, phase: str, ckpt: str, unit: str, args: dict) -> None:
    """One phase in a child process: returns the sensitivity dict, times and peak RSS."""
    import torch

    from autoprune.checkpoint import load_model
    from autoprune.data import load_dataset
    from autoprune.sensitivity import (
        Adaptive,
        Execution,
        Images,
        Perturbation,
        Provenance,
        compute_sensitivity,
    )
    from autoprune.space import PruningSpace

    torch.set_num_threads(args["threads"])
    model, meta = load_model(ckpt)
    model.eval()
    size = meta.meta["input_size"]
    space = PruningSpace.from_model(model, torch.zeros(1, 3, size, size), arch=meta.arch)
    search = load_dataset("fashion-mnist", seed=0).search
    kwargs = {
        "unit": unit,
        "perturbation": Perturbation(seeds=args["seeds"]),
        "images": Images(count=args["images"], chunk=args.get("chunk_size")),
        "provenance": Provenance(arch=meta.arch),
    }
    if phase == "naive":
        kwargs.update(execution=Execution.plain(naive=True))
    elif phase == "adaptive":
        kwargs.update(adaptive=Adaptive(**args["adaptive"]))
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS (Linux >= 4.0)
    base_rss = _status_bytes("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    sens = compute_sensitivity(model, space, search, **kwargs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = _status_bytes("VmHWM")
    conn.send({"sens": sens.to_dict(), "wall": wall, "cpu": cpu, "peak_rss": peak, "base_rss": base_rss})
    conn.close()


def _status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def phase(name: str, ckpt: Path, unit: str, args: dict) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=run_phase, args=(child, name, str(ckpt), unit, args))
    p.start()
    child.close()
    result = parent.recv()
    p.join()
    return result


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def compare(x: dict, y: dict) -> dict:
    """Largest per-seed differences between two sensitivity dicts (same units, seeds)."""
    d_acc = d_loss = 0.0
    for u, v in zip(x["units"], y["units"], strict=True):
        assert u["id"] == v["id"]
        d_acc = max(d_acc, max(abs(p - q) for p, q in zip(u["per_seed"], v["per_seed"], strict=True)))
        d_loss = max(
            d_loss, max(abs(p - q) for p, q in zip(u["loss_per_seed"], v["loss_per_seed"], strict=True))
        )
    return {"max_abs_diff_delta": d_acc, "max_abs_diff_loss_delta": d_loss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default=",".join(ARCHS), help="Comma-separated architectures.")
    ap.add_argument("--units", default=",".join(UNITS), help="Comma-separated unit kinds (block, group).")
    ap.add_argument("--images", type=int, default=2000, help="Search-split images per phase.")
    ap.add_argument("--seeds", type=int, default=3, help="SR-init seeds.")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads in each phase.")
    ap.add_argument("--phases", default="naive,cached,adaptive", help="Comma-separated phases to run.")
    ap.add_argument(
        "--train-images", type=int, default=6000, help="Training images for the cached checkpoints."
    )
    ap.add_argument("--train-epochs", type=int, default=2, help="Training epochs for the cached checkpoints.")
    ap.add_argument("--adaptive-chunk", type=int, default=128, help="Images per adaptive chunk.")
    ap.add_argument(
        "--adaptive-min-images", type=int, default=256, help="Images before the adaptive rule may stop."
    )
    ap.add_argument("--adaptive-target", type=float, default=0.95, help="Bootstrap rank-stability target.")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path("/tmp/autoprune-bench-sensitivity"),
        help="Where trained checkpoints are cached.",
    )
    ap.add_argument(
        "--chunk-sweep",
        default="",
        help="Instead of the comparison: time each of --phases at these comma-separated chunk sizes "
        "(block units, --images, one seed).",
    )
    ap.add_argument("--table", type=Path, default=None, help="Only print the tables of an --out file.")
    ap.add_argument("--out", type=Path, default=None, help="Also write all figures as JSON here.")
    a = ap.parse_args()
    if a.table:
        _table(json.loads(a.table.read_text()))
        return
    a.workdir.mkdir(parents=True, exist_ok=True)
    args = {
        "threads": a.threads,
        "seeds": a.seeds,
        "images": a.images,
        "adaptive": {
            "chunk": a.adaptive_chunk,
            "min_images": a.adaptive_min_images,
            "target": a.adaptive_target,
        },
    }
    report: dict = {"machine": _machine(), "command": " ".join(sys.argv), "args": args, "runs": []}
    phases = a.phases.split(",")
    for arch in a.archs.split(","):
        ckpt = a.workdir / f"{arch}-fmnist-{a.train_images}x{a.train_epochs}.pt"
        if not ckpt.is_file():
            print(
                f"training {arch} on {a.train_images} fashion-mnist images, {a.train_epochs} epochs",
                flush=True,
            )
            info = train_checkpoint(arch, ckpt, a.train_images, a.train_epochs, max(a.threads, 1))
            print(f"  {info}", flush=True)
        if a.chunk_sweep:
            chunks = [int(c) for c in a.chunk_sweep.split(",")]
            report["runs"].append(chunk_sweep(arch, ckpt, chunks, phases, args))
            _save(report, a.out)
            continue
        for unit in a.units.split(","):
            run = {"arch": arch, "unit": unit, "load_before": os.getloadavg()[0]}
            for name in phases:
                print(f"{arch} {unit} {name} ...", flush=True)
                r = phase(name, ckpt, unit, args)
                run[name] = r
                mib = r["peak_rss"] / 2**20
                extra = (r["peak_rss"] - r["base_rss"]) / 2**20
                print(
                    f"  wall {r['wall']:.1f} s  cpu {r['cpu']:.1f} s  peak RSS {mib:.0f} MiB (+{extra:.0f})  "
                    f"images {r['sens']['images']}  acc0 {r['sens']['acc0']:.4f}  "
                    f"rescored {r['sens']['engine'].get('rescored', 0)}",
                    flush=True,
                )
            run["load_after"] = os.getloadavg()[0]
            _summarize(run)
            report["runs"].append(run)
            _save(report, a.out)
    _table(report)


def _save(report: dict, out: Path | None) -> None:
    """Rewrite ``out`` with everything measured so far (a long run keeps its finished parts)."""
    if out:
        out.write_text(json.dumps(report, indent=1))


def chunk_sweep(arch: str, ckpt: Path, chunks: list[int], phases: list[str], args: dict) -> dict:
    """Wall and CPU time of each phase per chunk size (block units, one seed)."""
    out: dict = {"arch": arch, "chunk_sweep": {}}
    for name in phases:
        for c in chunks:
            r = phase(name, ckpt, "block", {**args, "seeds": 1, "chunk_size": c})
            out["chunk_sweep"][f"{name} {c}"] = {"wall": r["wall"], "cpu": r["cpu"]}
            print(f"{arch} {name} chunk {c}: wall {r['wall']:.2f} s  cpu {r['cpu']:.2f} s", flush=True)
    return out


def _summarize(run: dict) -> None:
    s = {}
    if "naive" in run and "cached" in run:
        s["speedup_wall"] = run["naive"]["wall"] / run["cached"]["wall"]
        s["speedup_cpu"] = run["naive"]["cpu"] / run["cached"]["cpu"]
        s.update(compare(run["cached"]["sens"], run["naive"]["sens"]))
    if "adaptive" in run:
        ad = run["adaptive"]["sens"]
        s["adaptive_images_mean"] = float(np.mean([u["images"] for u in ad["units"]]))
        s["adaptive_images_max"] = ad["images"]
        if "cached" in run:
            full = run["cached"]["sens"]
            s["spearman"] = spearman([u["delta"] for u in full["units"]], [u["delta"] for u in ad["units"]])
            s["spearman_loss"] = spearman(
                [u["loss_delta"] for u in full["units"]], [u["loss_delta"] for u in ad["units"]]
            )
        if "naive" in run:
            s["adaptive_speedup_wall"] = run["naive"]["wall"] / run["adaptive"]["wall"]
            s["adaptive_speedup_cpu"] = run["naive"]["cpu"] / run["adaptive"]["cpu"]
    run["summary"] = s
    print("  " + "  ".join(f"{k} {v:.4g}" for k, v in s.items()), flush=True)


def _table(report: dict) -> None:
    """The markdown tables of RESULTS.md: speed and agreement, then peak memory (comparison runs;
    a chunk sweep prints its figures as it goes)."""
    runs = [r for r in report["runs"] if "summary" in r]
    if not runs:
        return
    nan = float("nan")
    print(
        "\n| arch | unit | units | naive s | cached s | speedup | max Δ diff / loss-Δ diff "
        "| adaptive s | images | speedup vs naive | Spearman Δ / loss-Δ |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        s = r["summary"]
        n = len(next(r[p] for p in ("cached", "naive", "adaptive") if p in r)["sens"]["units"])

        def t(p: str, r: dict = r) -> str:
            return f"{r[p]['wall']:.1f}" if p in r else "-"

        print(
            f"| {r['arch']} | {r['unit']} | {n} | {t('naive')} | {t('cached')} | "
            f"{s.get('speedup_wall', nan):.2f}× | "
            f"{s.get('max_abs_diff_delta', nan):.2g} / {s.get('max_abs_diff_loss_delta', nan):.2g} | "
            f"{t('adaptive')} | {s.get('adaptive_images_max', '-')} | "
            f"{s.get('adaptive_speedup_wall', nan):.1f}× | "
            f"{s.get('spearman', nan):.3f} / {s.get('spearman_loss', nan):.3f} |"
        )
    print("\n| arch | unit | peak RSS MiB over the loaded model and data: naive | cached | adaptive |")
    print("|---|---|---|---|---|")
    for r in runs:

        def m(p: str, r: dict = r) -> str:
            return f"{(r[p]['peak_rss'] - r[p]['base_rss']) / 2**20:.0f}" if p in r else "-"

        print(f"| {r['arch']} | {r['unit']} | {m('naive')} | {m('cached')} | {m('adaptive')} |")


def _machine() -> dict:
    import torch

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = "?"
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": commit,
    }


if __name__ == "__main__":
    main()
