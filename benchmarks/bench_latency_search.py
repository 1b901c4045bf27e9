"""A search under a latency budget against the table-width uniform plan at the same measured
latency (issue 15.5: (c) against (b), on proxy accuracy).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_latency_search.py [--archs mobilenetv2 resnet56]

Digits at 32x32 (the library's offline dataset); each arch's dense model is trained once into
runs/bench/ (``--epochs``). A batch-32 latency table is built on this CPU, and each group rounded
to the table's widths. Rows:

(b) uniform preferences projected onto FLOPs 0.67 (the table's widths): its measured latency
    ratio L_b (pruned / dense, timed alternately, ratio of minima);
(c) ``autoprune search --latency L_b`` (TPE, ``--trials``, the SR-init prior, the table above):
    its best plan;
(f) ``autoprune search --flops 0.67``: what a FLOPs budget finds, for reference.

Every plan is scored by the same recal proxy (BN recalibrated on 8 training batches of 128,
top-1 on the library's search split), and its latency measured the same way. Prints markdown.
"""

from __future__ import annotations

import argparse
import shutil
import time

import torch
from _timing import paired_ratio
from fmnist_bench import CACHE

from autoprune.budget import project_to_budget
from autoprune.checkpoint import load_model
from autoprune.cost import CostModel
from autoprune.data import EvalBatches, load_dataset
from autoprune.jobs import SearchConfig, run_search
from autoprune.jobs.checkpoint import DenseRecipe, ensure_checkpoint
from autoprune.latency import LatencyModel, allocator, build_latency_table, device_name, with_table_rounding
from autoprune.prior import uniform_preferences
from autoprune.search.proxies import create_proxy
from autoprune.search_spaces import space_for
from autoprune.surgery import apply_plan

BATCH = 32
FLOPS = 0.67


def searched(arch: str, checkpoint, table_path, trials: int, **budget):
    name = f"latsearch-{arch}-" + "-".join(f"{k}{v:.3f}" for k, v in budget.items())
    out = CACHE / "studies" / name
    shutil.rmtree(out, ignore_errors=True)
    config = SearchConfig(
        arch=arch, dataset="digits", checkpoint=str(checkpoint), latency_table=str(table_path),
        trials=trials, seed=0, study=name, out=str(out), device="cpu", **budget,
    )  # fmt: skip
    start = time.perf_counter()
    result = run_search(config)
    return result.best, time.perf_counter() - start


def bench_arch(arch: str, args) -> list[dict]:
    checkpoint = ensure_checkpoint(
        None,
        CACHE / f"{arch}-digits32-{args.epochs}ep.pt",
        DenseRecipe(arch, "digits", epochs=args.epochs, input_size=32, device="cpu"),
    )
    model, _ = load_model(checkpoint)
    table = build_latency_table(model, 32, arch=arch, batch_size=BATCH, threads=1, rounds=args.table_rounds)
    table_path = table.save(CACHE / f"latsearch-{arch}-table.json")
    space = with_table_rounding(space_for(model, arch, 32, 10), table)
    lm = LatencyModel(space, table)
    cost = CostModel(space)
    splits = load_dataset("digits", None, input_size=32, seed=0)
    recal = EvalBatches.from_dataset(splits.train_plain, 128, 8 * 128, seed=0)
    search = EvalBatches.from_dataset(splits.search, 128)
    proxy = create_proxy("recal", model, space, recal, search, torch.device("cpu"), "l1")

    def row(label: str, plan, seconds=None) -> dict:
        channels = space.channels_vector(plan)[None, :]
        pruned = apply_plan(model, plan, space=space).model
        return {
            "arch": arch,
            "row": label,
            "flops": float(cost.flops(channels)[0] / cost.dense_flops),
            "predicted": float(lm.ratio(channels)[0]),
            "measured": paired_ratio(model, pruned, torch.randn(BATCH, 3, 32, 32), args.rounds)[0],
            "proxy": proxy.score(plan).accuracy,
            "seconds": seconds,
        }

    b = project_to_budget(space, uniform_preferences(len(space.groups)), flops=FLOPS).plan
    rows = [row("(b) uniform, table widths, FLOPs 0.67", b)]
    target = min(1.0, rows[0]["measured"])
    best, seconds = searched(arch, checkpoint, table_path, args.trials, latency=target)
    plan_c = space.plan_from_channels([best.user_attrs["channels"][g.id] for g in space.groups])
    rows.append(row(f"(c) search --latency {target:.3f} ({args.trials} trials)", plan_c, seconds))
    best, seconds = searched(arch, checkpoint, table_path, args.trials, flops=FLOPS)
    plan_f = space.plan_from_channels([best.user_attrs["channels"][g.id] for g in space.groups])
    rows.append(row(f"(f) search --flops {FLOPS} ({args.trials} trials)", plan_f, seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["mobilenetv2", "resnet56"])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--table-rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"# {device_name('cpu')}, torch {torch.__version__}, 1 thread, allocator {allocator()}, batch {BATCH}"
    )
    print("\n| arch | row | FLOPs ratio | latency ratio predicted / measured | proxy top-1 | search s |")
    print("|---|---|---|---|---|---|")
    for arch in args.archs:
        for r in bench_arch(arch, args):
            s = "–" if r["seconds"] is None else f"{r['seconds']:.0f}"
            print(
                f"| {r['arch']} | {r['row']} | {r['flops']:.3f} | {r['predicted']:.3f} / {r['measured']:.3f} "
                f"| {r['proxy']:.4f} | {s} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
