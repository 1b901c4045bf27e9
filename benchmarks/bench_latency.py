"""Pruned must mean faster: latency tables, the latency model and table-chosen widths, measured.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_latency.py [--quick] [--threads 1]

For each case (mobilenetv2 and resnet56 at 32x32, batch 1 and 32, ``--quick``: batch 32 only;
torchvision resnet50 and mobilenet_v2 at 224x224, batch 1, ``--big``: batch 32 too) it
builds a latency table on this CPU and measures the latency ratio (pruned / dense, the two
timed alternately, ratio of minima) of

(a) the FLOPs-0.67 uniform plan with the old default rounding (8 for >= 32 channels, else 1),
(b) the FLOPs-0.67 uniform plan with the table's widths (``with_table_rounding``),
(c) the uniform preferences projected under ``--latency`` = (b)'s measured ratio with the
    table fitted to whole networks (``fit_table``; a projection, not a search),
(d) Torch-Pruning's uniform L1 pruning (the same ratio per layer, its default rounding),
    ratio bisected to FLOPs 0.67: "FLOPs / latency", only when ``torch_pruning`` is installed.

Then, for mobilenetv2 and resnet56 at 32x32 (batch 32), the predicted vs measured latency of
20 random plans: median absolute relative error and Spearman rank correlation, predicted by
the per-layer table (layer sum) and by the same table fitted to 8 whole pruned networks.
The header names the CPU memory allocator (glibc's defaults page-fault large activations on
every call; run once more with ``MALLOC_MMAP_THRESHOLD_=33554432`` to compare).
Prints markdown; nothing is written.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import time
import warnings

import numpy as np
import torch
from _peers import torch_pruning_at_flops
from _timing import paired_ratio
from scipy.stats import spearmanr

import autoprune
from autoprune.budget import project_to_budget
from autoprune.cost import CostModel
from autoprune.flops import measured_macs
from autoprune.latency import (
    LatencyModel,
    allocator,
    build_latency_table,
    device_name,
    fit_table,
    with_table_rounding,
)
from autoprune.prior import uniform_preferences
from autoprune.space import PruningSpace
from autoprune.surgery import apply_plan


def old_rounding(space: PruningSpace) -> dict[str, int]:
    return {g.id: 8 if g.channels >= 32 else 1 for g in space.groups}


def load_model(name: str, size: int) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return autoprune.create_model(name, 1000 if name.startswith("torchvision:") else 10, size).eval()


def bench_case(name: str, size: int, batch: int, rounds: int, table_rounds: int) -> dict:
    model = load_model(name, size)
    example = torch.zeros(1, 3, size, size)
    t0 = time.perf_counter()
    table = build_latency_table(model, size, arch=name, batch_size=batch, rounds=table_rounds)
    build_s = time.perf_counter() - t0
    base = PruningSpace.from_model(model, example, arch=name)
    old = PruningSpace.from_model(model, example, arch=name, round_to=old_rounding(base))
    tabled = with_table_rounding(base, table)
    prefs = uniform_preferences(len(base.groups))
    x = torch.randn(batch, 3, size, size)
    row = {"model": name, "size": size, "batch": batch, "build_s": build_s, "dense_ms": table.dense_ms}
    for label, space, kwargs in (("a", old, {"flops": 0.67}), ("b", tabled, {"flops": 0.67})):
        proj = project_to_budget(space, prefs, **kwargs)
        pruned = apply_plan(model, proj.plan, space=space).model
        row[label] = (proj.flops_ratio, *paired_ratio(model, pruned, x, rounds))
    lm = LatencyModel(tabled, fit_table(table, model, tabled))
    target = min(1.0, row["b"][1])
    proj = project_to_budget(tabled, prefs, latency=target, latency_model=lm)
    pruned = apply_plan(model, proj.plan, space=tabled).model
    row["c"] = (proj.flops_ratio, *paired_ratio(model, pruned, x, rounds), proj.latency_ratio, target)
    if importlib.util.find_spec("torch_pruning") is None:
        row["d"] = "not installed"
    else:
        tp_model, _ = torch_pruning_at_flops(model, example, 0.67, global_pruning=False)
        flops = measured_macs(tp_model, example) / measured_macs(model, example)
        row["d"] = f"{flops:.3f} / {paired_ratio(model, tp_model, x, rounds)[0]:.3f}"
    return row


def bench_prediction(name: str, batch: int, plans: int, rounds: int, table_rounds: int) -> dict:
    model = load_model(name, 32)
    table = build_latency_table(model, 32, arch=name, batch_size=batch, rounds=table_rounds)
    space = with_table_rounding(PruningSpace.from_model(model, torch.zeros(1, 3, 32, 32), arch=name), table)
    fitted = fit_table(table, model, space)
    rng = np.random.default_rng(1)  # not the fit's plans (seed 0)
    ratios = rng.uniform(0.2, 1.0, (plans, len(space.groups)))
    channels = space.channels_from_ratios(ratios)
    predicted = {
        "layers": LatencyModel(space, table).ratio(channels),
        "fitted": LatencyModel(space, fitted).ratio(channels),
    }
    measured = []
    x = torch.randn(batch, 3, 32, 32)
    for row in channels:
        pruned = apply_plan(model, space.plan_from_channels(row), space=space).model
        measured.append(paired_ratio(model, pruned, x, rounds)[0])
    measured = np.array(measured)
    flops = CostModel(space).flops(channels) / CostModel(space).dense_flops
    out = {"model": name, "plans": plans, "spearman_flops": float(spearmanr(flops, measured).statistic)}
    for label, p in predicted.items():
        out[label] = (
            float(np.median(np.abs(p - measured) / measured)),
            float(spearmanr(p, measured).statistic),
        )
    out["fit_plans"] = fitted.fit.plans
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases and repeats")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--big", action="store_true", help="also batch 32 at 224x224 (hours on 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"# {device_name('cpu')}, torch {torch.__version__}, threads {args.threads}, commit {commit}, "
        f"allocator {allocator()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, quick={args.quick}"
    )
    rounds, table_rounds = (7, 3) if args.quick else (15, 5)
    cases = [("mobilenetv2", 32, b) for b in ((32,) if args.quick else (1, 32))]
    cases += [("resnet56", 32, b) for b in ((32,) if args.quick else (1, 32))]
    cases += [
        (n, 224, b)
        for n in ("torchvision:resnet50", "torchvision:mobilenet_v2")
        for b in ((1, 32) if args.big else (1,))
    ]
    print(
        "\n| model | input | batch | table build s | dense ms | (a) FLOPs / latency, old rounding "
        "| (b) FLOPs / latency, table widths | (c) latency budget: FLOPs / latency (predicted) "
        "| (d) Torch-Pruning | GPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, size, batch in cases:
        r = bench_case(
            name,
            size,
            batch,
            rounds if size == 32 else max(3, rounds // 3),
            table_rounds if size == 32 else 2,
        )
        a, b, c = r["a"], r["b"], r["c"]
        print(
            f"| {name} | {size} | {batch} | {r['build_s']:.0f} | {r['dense_ms']:.1f} "
            f"| {a[0]:.3f} / {a[1]:.3f} | {b[0]:.3f} / {b[1]:.3f} "
            f"| {c[0]:.3f} / {c[1]:.3f} ({c[3]:.3f} ≤ {c[4]:.3f}) | {r['d']} | not measured (no GPU) |",
            flush=True,
        )
    print(
        "\n| model | batch | plans | layer sum: median abs. error / Spearman "
        "| fitted: median abs. error / Spearman | Spearman (FLOPs) |"
    )
    print("|---|---|---|---|---|---|")
    for name in ("mobilenetv2", "resnet56"):
        p = bench_prediction(name, 32, 20, rounds, table_rounds)
        (e0, s0), (e1, s1) = p["layers"], p["fitted"]
        print(
            f"| {name} | 32 | {p['plans']} | {e0:.1%} / {s0:.3f} | {e1:.1%} / {s1:.3f} "
            f"(fit on {p['fit_plans']} plans) | {p['spearman_flops']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
