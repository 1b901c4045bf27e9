"""End-to-end quality: fine-tuned top-1 of pruned networks from each way of choosing widths.

Same data, dense checkpoints and fine-tune schedule as bench_proxy.py (fmnist_bench.py: Fashion-
MNIST subsample, cached dense model, one schedule for every row). For each arch and FLOPs
budget, rows:

  (a) uniform width (uniform preferences projected onto the budget);
  (b) the SR-init sensitivity prior alone (projected, no search);
  (c) global L1-magnitude channel pruning by Torch-Pruning (``MagnitudePruner``,
      ``MagnitudeImportance(p=1)``, ``global_pruning=True``, its default normalization; the
      last linear layer ignored), pruning ratio bisected until FLOPs (FlopCounterMode) are at
      or under the budget; "not installed" when ``torch_pruning`` does not import;
  (d) random plans at the budget (log-uniform preferences, a different plan per seed);
  (e) ``autoprune search`` with the recal proxy (TPE, ``--trials``, pruner off);
  (f) ``autoprune search`` with the supernet proxy (supernet trained ``--supernet-steps``);
  (g) NVIDIA Model Optimizer FastNAS (``modelopt.torch.prune``, mode ``fastnas``, FLOPs
      constraint as a percentage, its channel ratios 0.05..1 with channel divisor 4, BN
      calibration on the recal batches, score = top-1 on the same search split), or
      "not run: <reason>";
  (h) (e)'s study with its ``--rerank`` best distinct plans re-ranked by a ``--rerank-steps``
      fine-tune on the training subsample, scored on the search split (the library's
      ``autoprune search --rerank``; its time is (e)'s search plus the re-rank).

Each row's network is fine-tuned with seeds 0..N-1 (mean ± std of test top-1); the dense model
fine-tuned with the same schedule gives the noise level of the dense network. FLOPs are counted
by FlopCounterMode on the pruned network; search wall time is the study's (under load).

Torch-Pruning and Model Optimizer are optional: run with the interpreter that has them, e.g. a
venv whose .pth points at this repository and its venv's site-packages:

    /tmp/benchvenv/bin/python benchmarks/bench_quality.py --quick
    /tmp/benchvenv/bin/python benchmarks/bench_quality.py

Prints a markdown table and writes runs/bench/bench_quality[-quick].json.
"""

from __future__ import annotations

import argparse
import copy
import time
import traceback

import fmnist_bench as fb
import numpy as np
import torch
from _peers import torch_pruning_at_flops

from autoprune.evaluation import evaluate


def torch_pruning_model(bench, flops: float):
    """Global L1-magnitude pruning with Torch-Pruning, ratio bisected onto the FLOPs budget."""
    model, ratio = torch_pruning_at_flops(bench.model, bench.example(), flops, global_pruning=True)
    return model, f"ratio {ratio:.3f}"


RATIOS = tuple(round(0.05 * i, 2) for i in range(1, 21))
FASTNAS_RULES = {  # FastNAS's own ratios; channel divisor 4 (its default 32 leaves resnet20 nothing to prune)
    "nn.Conv2d": {"channels_ratio": RATIOS, "kernel_size": (), "channel_divisor": 4},
    "nn.BatchNorm2d": {"features_ratio": RATIOS, "feature_divisor": 4},
}


def fastnas_model(bench, flops: float, search_seconds: list[float]):
    """NVIDIA Model Optimizer FastNAS at the FLOPs budget, scored by top-1 on the search split."""
    import modelopt.torch.prune as mtp

    model = copy.deepcopy(bench.model).eval()
    loader = [(x, y) for x, y in bench.recal.batches]

    def score(m):
        return evaluate(m, bench.search.batches).accuracy

    start = time.perf_counter()
    ckpt = fb.CACHE / f"fastnas-{bench.checkpoint.stem}-{flops}.pth"
    ckpt.unlink(missing_ok=True)
    out = mtp.prune(
        model=model,
        mode=[("fastnas", FASTNAS_RULES)],
        constraints={"flops": f"{flops * 100:g}%"},
        dummy_input=bench.example(),
        config={
            "data_loader": loader,
            "score_func": score,
            "checkpoint": str(ckpt),
            "collect_func": lambda batch: batch[0],
        },
    )
    search_seconds.append(time.perf_counter() - start)
    pruned = out[0] if isinstance(out, tuple) else out
    return pruned, "fastnas"


def bench_arch(arch: str, scale: fb.Scale, args) -> dict:
    bench = fb.prepare(arch, scale)
    fb.log(f"{arch}: dense test top-1 {bench.dense_acc:.4f}")
    dense_ft = [fb.finetune(bench, bench.model, s)["acc"] for s in args.seeds]
    rows = [
        {
            "flops": 1.0,
            "row": "dense (checkpoint / + same fine-tune)",
            "accs": dense_ft,
            "macs": bench.dense_macs,
            "search_s": None,
            "note": f"checkpoint {bench.dense_acc:.4f}",
        }
    ]
    supernet_s, supernet_path = 0.0, None
    if args.supernet_steps:  # 0: no supernet, no row (f)
        _, supernet_s, supernet_path = fb.supernet_for(bench, args.supernet_steps)
    for flops in args.flops:
        rows += budget_rows(bench, flops, args, supernet_path, supernet_s)
    return {"arch": arch, "dense_acc": bench.dense_acc, "dense_macs": bench.dense_macs, "rows": rows}


def best_plan(bench, trial):
    channels = trial.user_attrs["channels"]
    return bench.space.plan_from_channels([channels[g.id] for g in bench.space.groups])


def fixed_plan(bench, plan):
    return lambda seed: (fb.pruned_model(bench, plan), None)


def reranked(bench, result, flops: float, args):
    """(best trial, seconds): the library's re-rank of the study's finalists, fine-tuned on the
    bench's training subsample and scored on its search split, as ``--rerank`` does."""
    from autoprune.data import make_loader
    from autoprune.search.outputs import within_budget
    from autoprune.search.rerank import RERANK_BATCH, Rerank, rerank_trials, reranked_best

    rerank = Rerank(args.rerank, args.rerank_steps)
    trials = within_budget(result.study, flops)
    start = time.perf_counter()
    scores = rerank_trials(
        result.study,
        trials,
        rerank,
        model=bench.model,
        space=bench.space,
        criterion="l1",
        train=make_loader(bench.splits.train, RERANK_BATCH, shuffle=True, seed=0, drop_last=True),
        score=lambda m: evaluate(m, bench.search.batches).accuracy,
        device=torch.device("cpu"),
    )
    return reranked_best(trials, scores, args.rerank), time.perf_counter() - start


def budget_rows(bench, flops: float, args, supernet_path, supernet_s: float) -> list[dict]:
    n = len(bench.space.groups)

    def planned(prefs):
        return fb.pruned_model(bench, fb.project(bench, prefs, flops)), None

    builders = {
        "(a) uniform": lambda s: planned(np.ones(n)),
        "(b) sensitivity prior": lambda s: planned(fb.prior_prefs(bench.deltas)),
        "(c) Torch-Pruning global L1": lambda s: torch_pruning_model(bench, flops),
        "(d) random plan": lambda s: planned(fb.random_prefs(n, np.random.default_rng(100 + s))),
    }
    rows = [
        run_row(bench, flops, row, build, args, fixed=row.startswith("(c)"))
        for row, build in builders.items()
    ]
    # (e), (f): one search each (seed 0), its best plan fine-tuned with every seed; (h): (e)'s
    # study with its finalists re-ranked by a short fine-tune (the library's --rerank)
    searches = {f"(e) autoprune search, recal ({args.trials} trials)": ("recal", None, "")}
    if supernet_path is not None:
        searches[f"(f) autoprune search, supernet ({args.trials} trials)"] = (
            "supernet",
            supernet_path,
            f"+ supernet training ({args.supernet_steps} steps) {supernet_s:.0f} s",
        )
    for row, (proxy, path, note) in searches.items():
        result, seconds = fb.autoprune_search(
            bench, flops, args.trials, seed=0, proxy=proxy, supernet_path=path
        )
        plan = best_plan(bench, result.best)
        rows.append(
            run_row(bench, flops, row, fixed_plan(bench, plan), args, fixed=True, search_s=seconds, note=note)
        )
        if proxy == "recal" and args.rerank:
            best, rerank_s = reranked(bench, result, flops, args)
            rows.append(
                run_row(
                    bench,
                    flops,
                    f"(h) (e) + re-rank of its top {args.rerank} by a {args.rerank_steps}-step fine-tune",
                    fixed_plan(bench, best_plan(bench, best)),
                    args,
                    fixed=True,
                    search_s=seconds + rerank_s,
                    note=f"re-rank {rerank_s:.0f} s; trial {best.number} (recal: {result.best.number})",
                )
            )
    fast_s: list[float] = []
    rows.append(
        run_row(
            bench,
            flops,
            "(g) ModelOpt FastNAS",
            lambda s: fastnas_model(bench, flops, fast_s),
            args,
            fixed=True,
            search_s=fast_s,
        )
    )
    return rows


def run_row(bench, flops, row, build, args, *, fixed=False, search_s=None, note="") -> dict:
    """Build the row's network (once when ``fixed``, else per seed) and fine-tune it per seed."""
    accs, macs = [], None
    model = None
    try:
        for seed in args.seeds:
            if model is None or not fixed:
                model, extra = build(seed)
                note = note or (extra or "")
            r = fb.finetune(bench, model, seed)
            accs.append(r["acc"])
            macs = r["macs"]
    except ImportError as exc:
        note = f"not installed ({exc.name})"
    except Exception as exc:  # an optional tool failing is a row, not the end of the run
        traceback.print_exc()
        note = f"not run: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    if isinstance(search_s, list):
        search_s = search_s[0] if search_s else None
    out = {"flops": flops, "row": row, "accs": accs, "macs": macs, "search_s": search_s, "note": note}
    fb.log(f"{bench.arch} FLOPs {flops} {row}: {fb.mean_std(accs) if accs else '-'} {note}")
    return out


def report(result: dict, args) -> None:
    print(
        f"\n### {result['arch']}: dense test top-1 {result['dense_acc']:.4f}, {result['dense_macs']} MACs\n"
    )
    print(
        "| budget | row | fine-tuned top-1 (mean ± std, seeds) | FLOPs ratio (FlopCounterMode) "
        "| search s (under load) | note |"
    )
    print("|---|---|---|---|---|---|")
    for r in result["rows"]:
        acc = f"{fb.mean_std(r['accs'])} ({len(r['accs'])})" if r["accs"] else "–"
        ratio = "–" if r["macs"] is None else f"{r['macs'] / result['dense_macs']:.3f}"
        s = "–" if r["search_s"] is None else f"{r['search_s']:.0f}"
        print(f"| {r['flops']} | {r['row']} | {acc} | {ratio} | {s} | {r['note']} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="resnet20, 6k images, 2 seeds, 20 trials")
    parser.add_argument("--archs", nargs="+")
    parser.add_argument("--flops", type=float, nargs="+", default=[0.5, 0.25])
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--trials", type=int)
    parser.add_argument("--supernet-steps", type=int, help="0: no supernet row (f)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rerank", type=int, default=5, help="row (h): finalists re-ranked (0: no row)")
    parser.add_argument("--rerank-steps", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    q = args.quick
    args.archs = args.archs or (["resnet20"] if q else ["resnet20", "mobilenetv2"])
    args.seeds = args.seeds or ([0, 1] if q else [0, 1, 2])
    args.trials = args.trials or (20 if q else 60)
    if args.supernet_steps is None:
        args.supernet_steps = 300 if q else 1000
    fb.run_archs(args, bench_arch, lambda result, args, scale: report(result, args), "bench_quality")


if __name__ == "__main__":
    main()
