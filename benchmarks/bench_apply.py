"""Pruning mechanism benchmark: does the pruned model get faster as its FLOPs say, and how
long do tracing + surgery take?

    .venv/bin/python benchmarks/bench_apply.py [--threads 1] [--repeats 15]

1. Dense vs pruned CPU latency (batch 64, 32x32 inputs) of ``mobilenetv2`` pruned to
   0.67 of its FLOPs and ``resnet56`` to 0.5 (uniform keep ratio, found by bisection
   on the cost model); reports the latency ratio next to the FLOPs ratio, with the
   default channel rounding, ``round_to=8`` and ``round_to=16`` (the AVX-512 block of oneDNN).
2. Graph build (``PruningSpace.from_model``) and ``apply_plan`` (uniform 0.5, l1) wall
   time for mobilenetv2, resnet56 and torchvision resnet50 (1x3x224x224 example).
3. Cost model throughput: FLOPs + params of 1000 mobilenetv2 plans.

Times are medians (and minima) over ``--repeats`` runs after a warm-up; dense and
pruned are timed alternately, so a shared machine's load affects both alike.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import warnings

import numpy as np
import torch
from _timing import paired_latency, timed

import autoprune
from autoprune.budget import plan_cost
from autoprune.cost import CostModel
from autoprune.flops import measured_macs
from autoprune.space import PruningSpace
from autoprune.surgery import apply_plan


def uniform_for_flops(space: PruningSpace, target: float):
    """The largest uniform-keep plan whose FLOPs are at most ``target`` x dense."""
    lo, hi = 0.0, 1.0
    cost = CostModel(space)
    dense = cost.dense_flops
    for _ in range(40):
        mid = (lo + hi) / 2
        flops = cost.flops(space.channels_from_ratios(np.full(len(space.groups), mid)))[0]
        lo, hi = (mid, hi) if flops <= target * dense else (lo, mid)
    return space.uniform(max(lo, 1e-3))


def bench_latency(name: str, target: float, repeats: int, round_to: int | None) -> dict:
    model = autoprune.create_model(name, 10, 32).eval()
    x1 = torch.randn(1, 3, 32, 32)
    space = PruningSpace.from_model(model, x1, arch=name, round_to=round_to)
    plan = uniform_for_flops(space, target)
    pruned = apply_plan(model, plan, space=space).model.eval()
    flops, _ = plan_cost(space, plan)
    assert flops == measured_macs(pruned, x1)
    batch = torch.randn(64, 3, 32, 32)
    ta, tb = paired_latency(model, pruned, batch, repeats)
    dense_s, pruned_s = statistics.median(ta), statistics.median(tb)
    return {
        "model": name,
        "round_to": "default" if round_to is None else str(round_to),
        "flops_ratio": flops / CostModel(space).dense_flops,
        "dense_ms": dense_s * 1e3,
        "pruned_ms": pruned_s * 1e3,
        "latency_ratio": pruned_s / dense_s,
        "min_ratio": min(tb) / min(ta),
    }


def bench_apply(name: str, example: torch.Tensor, repeats: int) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = autoprune.create_model(
            name, 1000 if name.startswith("torchvision:") else 10, example.shape[-1]
        )
    model.eval()
    space = PruningSpace.from_model(model, example)
    plan = space.uniform(0.5)
    build = timed(lambda: PruningSpace.from_model(model, example), repeats)
    apply = timed(lambda: apply_plan(model, plan, space=space), repeats)
    both = timed(lambda: apply_plan(model, plan, example_inputs=example), repeats)
    return {"model": name, "groups": len(space.groups), "build_s": build, "apply_s": apply, "total_s": both}


def bench_cost(repeats: int) -> float:
    model = autoprune.create_model("mobilenetv2", 10, 32)
    space = PruningSpace.from_model(model, torch.randn(1, 3, 32, 32))
    plans = space.channels_from_ratios(np.random.default_rng(0).uniform(0.1, 1, (1000, len(space.groups))))
    cm = CostModel(space)
    med, low = timed(lambda: (cm.flops(plans), cm.params(plans)), repeats)
    return med * 1e3, low * 1e3


def fmt(t: tuple[float, float]) -> str:
    return f"{t[0]:.3f} / {t[1]:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}"
    )
    print(
        "\n| model | round_to | FLOPs ratio | dense ms (b64) | pruned ms (b64) | latency ratio | min ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, target in (("mobilenetv2", 0.67), ("resnet56", 0.5)):
        for round_to in (None, 8, 16):
            r = bench_latency(name, target, args.repeats, round_to)
            print(
                f"| {r['model']} | {r['round_to']} | {r['flops_ratio']:.3f} | {r['dense_ms']:.1f} "
                f"| {r['pruned_ms']:.1f} | {r['latency_ratio']:.3f} | {r['min_ratio']:.3f} |"
            )
    print("\n| model | example | groups | graph build s | apply s | build + apply s |  (median / min)")
    print("|---|---|---|---|---|---|")
    for name, size in (("mobilenetv2", 32), ("resnet56", 32), ("torchvision:resnet50", 224)):
        r = bench_apply(name, torch.randn(1, 3, size, size), max(5, args.repeats // 3))
        print(
            f"| {r['model']} | 1x3x{size}x{size} | {r['groups']} | {fmt(r['build_s'])} | {fmt(r['apply_s'])} "
            f"| {fmt(r['total_s'])} |"
        )
    med, low = bench_cost(args.repeats)
    print(f"\ncost model: FLOPs + params of 1000 mobilenetv2 plans: {med:.2f} ms median, {low:.2f} ms min")


if __name__ == "__main__":
    main()
