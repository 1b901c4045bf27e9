"""Proxy fidelity: how well each cheap score ranks plans the way fine-tuning ranks them.

For each arch (resnet20; mobilenetv2 at width 0.5) on Fashion-MNIST (see fmnist_bench.py:
cached dense checkpoint, training subsample, input size) at one FLOPs budget, K plans that
differ in shape are projected onto the budget: the uniform plan, the SR-init prior (top-1 Δ),
the prior from the loss Δ, a damped prior (p ** 0.5), the inverted prior (1 / p: cuts the
sensitive groups), random preferences (log-uniform in [e^-1.5, e^1.5] per group) and the
best distinct plans of a short TPE search with the recal proxy (``autoprune search``).

Ground truth: each plan pruned (L1) and fine-tuned with one schedule (fmnist_bench.finetune),
test top-1, for two seeds. The ceiling is Kendall τ between the two seeds. Each proxy is then
compared with the mean of the two seeds (Kendall τ, top-3 overlap), with its wall time per plan:

* recal: the library's RecalProxy (BN recalibration on ``--recal-batches`` batches, top-1 on
  the search split), and again with 4× the recalibration batches;
* short-ft: ``--short-steps`` SGD steps (lr 0.01, batch 64) from the inherited weights, top-1 on
  the search split;
* supernet-acc / supernet-stage-loss: the library's SupernetProxy on a supernet trained
  ``--supernet-steps`` steps (each count in the list is trained and scored).

The prior is measured the same way: per group, the Spearman correlation (over the K plans)
between the group's keep ratio and the fine-tuned accuracy is its *effect* (how much keeping
it helps); Kendall τ between the sensitivity Δ (top-1 and loss) and the effect says whether
ranking groups by Δ predicts which groups can be cut. The fine-tuned accuracy of the named
plans (uniform, prior, loss prior, damped, inverted) is printed beside it.

    .venv/bin/python benchmarks/bench_proxy.py --quick          # resnet20 only, small sizes
    .venv/bin/python benchmarks/bench_proxy.py                  # resnet20 + mobilenetv2
    .venv/bin/python benchmarks/bench_proxy.py --quick --truth-from runs/bench/bench_proxy-quick.json \
        --supernet-steps 1000   # other proxies against stored ground truth

Prints markdown tables and writes runs/bench/bench_proxy[-quick].json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from fmnist_bench import (
    Scale,
    autoprune_search,
    finetune,
    keep_vector,
    kendall,
    log,
    plan_key,
    prepare,
    prior_prefs,
    project,
    pruned_model,
    random_prefs,
    run_archs,
    short_finetune_score,
    supernet_for,
    top_k_overlap,
    trial_plans,
)

from autoprune.data import EvalBatches, load_dataset
from autoprune.search.proxies import RecalProxy


def build_plans(bench, flops: float, n_random: int, n_tpe: int, tpe_trials: int) -> list[tuple[str, object]]:
    d = bench.deltas
    named = [
        ("uniform", np.ones(len(d))),
        ("prior", prior_prefs(d)),
        ("prior-loss", prior_prefs(bench.loss_deltas)),
        ("prior-damped0.5", prior_prefs(d, 0.5)),
        ("prior-inverse", 1.0 / prior_prefs(d)),
    ]
    rng = np.random.default_rng(0)
    named += [(f"random{i}", random_prefs(len(d), rng)) for i in range(n_random)]
    plans, seen = [], set()
    for label, prefs in named:
        plan = project(bench, prefs, flops)
        if plan_key(bench, plan) not in seen:
            seen.add(plan_key(bench, plan))
            plans.append((label, plan))
    if n_tpe:
        result, seconds = autoprune_search(bench, flops, tpe_trials, seed=0)
        log(f"{bench.arch}: TPE search, {tpe_trials} trials, recal proxy ({seconds:.0f} s)")
        picks = 0
        for _, plan in trial_plans(bench, result):
            if picks >= n_tpe:
                break
            if plan_key(bench, plan) not in seen:
                seen.add(plan_key(bench, plan))
                plans.append((f"tpe{picks}", plan))
                picks += 1
    return plans


def stored_truth(bench, path: str):
    """Plans and fine-tuned top-1 of an earlier run (its JSON), to score other proxies against."""
    stored = next(r for r in json.loads(Path(path).read_text())["results"] if r["arch"] == bench.arch)
    groups = bench.space.groups
    plans = [
        (p["label"], bench.space.plan_from_channels([p["channels"][g.id] for g in groups]))
        for p in stored["plans"]
    ]
    return plans, np.array(stored["truth"]), [stored["finetune_seconds_median"]]


def timed_scores(fn, plans) -> tuple[list[float], float]:
    values, times = [], []
    for _, plan in plans:
        start = time.perf_counter()
        values.append(float(fn(plan)))
        times.append(time.perf_counter() - start)
    return values, float(np.median(times))


def bench_arch(arch: str, scale: Scale, args) -> dict:
    bench = prepare(arch, scale)
    log(
        f"{arch}: dense test top-1 {bench.dense_acc:.4f}, {bench.dense_macs} MACs, "
        f"{len(bench.space.groups)} groups"
    )
    if args.truth_from:
        plans, truth, ft_seconds = stored_truth(bench, args.truth_from)
        log(f"{arch}: {len(plans)} plans and their fine-tuned top-1 from {args.truth_from}")
    else:
        plans = build_plans(bench, args.flops, args.random, args.tpe, args.tpe_trials)
        log(f"{arch}: {len(plans)} plans")
        truth = np.zeros((len(args.seeds), len(plans)))
        ft_seconds = []
        for si, seed in enumerate(args.seeds):
            for pi, (label, plan) in enumerate(plans):
                r = finetune(bench, pruned_model(bench, plan), seed)
                truth[si, pi] = r["acc"]
                ft_seconds.append(r["seconds"])
                log(f"{arch}: seed {seed} {label}: fine-tuned top-1 {r['acc']:.4f} ({r['seconds']:.0f} s)")
    mean_truth = truth.mean(0)
    ceiling = kendall(truth[0], truth[1]) if len(args.seeds) > 1 else float("nan")

    proxies: dict[str, tuple[list[float], float, float | None]] = {}  # name -> values, s/plan, train s
    model, space = bench.model, bench.space
    recal = RecalProxy(model, space, bench.recal, bench.search, device=torch.device("cpu"))
    proxies[f"recal ({scale.recal_batches} batches)"] = (
        *timed_scores(lambda p: recal.score(p).accuracy, plans),
        None,
    )
    full = load_dataset("fashion-mnist", input_size=scale.input_size, seed=0)
    more = EvalBatches.from_dataset(
        full.train_plain, scale.batch, 4 * scale.recal_batches * scale.batch, seed=0
    )
    recal4 = RecalProxy(model, space, more, bench.search, device=torch.device("cpu"))
    proxies[f"recal ({4 * scale.recal_batches} batches)"] = (
        *timed_scores(lambda p: recal4.score(p).accuracy, plans),
        None,
    )
    proxies[f"short-ft ({args.short_steps} steps)"] = (
        *timed_scores(lambda p: short_finetune_score(bench, pruned_model(bench, p), args.short_steps), plans),
        None,
    )
    from autoprune.supernet import SupernetProxy

    for steps in args.supernet_steps:
        net, train_s, _ = supernet_for(bench, steps)
        for metric in ("acc", "stage-loss"):
            proxy = SupernetProxy(net, bench.recal, bench.search, device="cpu", metric=metric)
            values, per = timed_scores(lambda p, proxy=proxy: proxy.score(p).accuracy, plans)
            proxies[f"supernet-{metric} ({steps} steps)"] = (values, per, train_s)

    rows = []
    for name, (values, per, train_s) in proxies.items():
        tau = kendall(values, mean_truth)
        rows.append(
            {
                "proxy": name,
                "tau": tau,
                "tau_over_ceiling": tau / ceiling if ceiling > 0 else float("nan"),
                "top3": top_k_overlap(mean_truth, values),
                "seconds_per_plan": per,
                "train_seconds": train_s,
                "values": values,
            }
        )

    keeps = np.array([keep_vector(bench, p) for _, p in plans])  # (K, G)
    effect = np.array(
        [
            np.corrcoef(np.argsort(np.argsort(keeps[:, g])), np.argsort(np.argsort(mean_truth)))[0, 1]
            if keeps[:, g].std() > 0
            else np.nan
            for g in range(keeps.shape[1])
        ]
    )
    ok = ~np.isnan(effect)
    prior = {
        "tau_delta_effect": kendall(bench.deltas[ok], effect[ok]),
        "tau_lossdelta_effect": kendall(bench.loss_deltas[ok], effect[ok]),
        "groups": [g.id for g in space.groups],
        "deltas": bench.deltas.tolist(),
        "loss_deltas": bench.loss_deltas.tolist(),
        "effect": effect.tolist(),
        "named": {
            label: truth[:, i].tolist()
            for i, (label, _) in enumerate(plans)
            if not label.startswith(("random", "tpe"))
        },
    }
    return {
        "arch": arch,
        "dense_acc": bench.dense_acc,
        "dense_macs": bench.dense_macs,
        "checkpoint": str(bench.checkpoint),
        "plans": [{"label": lbl, "channels": p.channels} for lbl, p in plans],
        "truth": truth.tolist(),
        "ceiling": ceiling,
        "finetune_seconds_median": float(np.median(ft_seconds)),
        "proxies": rows,
        "prior": prior,
    }


def report(result: dict, args, scale: Scale) -> None:
    a = result["arch"]
    print(
        f"\n### {a} (dense test top-1 {result['dense_acc']:.4f}), FLOPs {args.flops}, "
        f"{len(result['plans'])} plans, seeds {args.seeds}\n"
    )
    print(
        f"Ground-truth ceiling (Kendall τ between fine-tune seeds): {result['ceiling']:.3f}; "
        f"fine-tune median {result['finetune_seconds_median']:.0f} s per plan (under load)\n"
    )
    print(
        "| proxy | Kendall τ vs fine-tuned | τ / ceiling | top-3 overlap | s per plan (under load) "
        "| training s (under load) |"
    )
    print("|---|---|---|---|---|---|")
    for r in result["proxies"]:
        train = "–" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        print(
            f"| {r['proxy']} | {r['tau']:.3f} | {r['tau_over_ceiling']:.2f} | {r['top3']}/3 | "
            f"{r['seconds_per_plan']:.2f} | {train} |"
        )
    p = result["prior"]
    print(
        f"\nPrior: Kendall τ(top-1 Δ, per-group effect) = {p['tau_delta_effect']:.3f}, "
        f"τ(loss Δ, effect) = {p['tau_lossdelta_effect']:.3f}\n"
    )
    print("| group | top-1 Δ | loss Δ | effect (Spearman keep vs fine-tuned top-1) |")
    print("|---|---|---|---|")
    for g, d, ld, e in zip(p["groups"], p["deltas"], p["loss_deltas"], p["effect"], strict=True):
        print(f"| {g} | {d:.4f} | {ld:.4f} | {e:.3f} |")
    print("\n| named plan | fine-tuned top-1 per seed |\n|---|---|")
    for label, accs in p["named"].items():
        print(f"| {label} | {' / '.join(f'{v:.4f}' for v in accs)} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="resnet20, 6k images, 10 plans, 3-epoch fine-tunes"
    )
    parser.add_argument("--archs", nargs="+")
    parser.add_argument("--flops", type=float, default=0.5)
    parser.add_argument("--random", type=int, help="random-preference plans (default 6, quick 3)")
    parser.add_argument("--tpe", type=int, help="TPE picks (default 5, quick 2)")
    parser.add_argument("--tpe-trials", type=int, help="trials of the TPE search (default 40, quick 20)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--short-steps", type=int, help="steps of the short-fine-tune proxy (default 200, quick 60)"
    )
    parser.add_argument("--supernet-steps", type=int, nargs="+", help="default 1000 3000, quick 300")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--truth-from", help="reuse the plans and fine-tuned top-1 of an earlier run's JSON (no fine-tuning)"
    )
    parser.add_argument("--out", help="JSON path (default runs/bench/bench_proxy[-quick].json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    q = args.quick
    args.archs = args.archs or (["resnet20"] if q else ["resnet20", "mobilenetv2"])
    args.random = args.random if args.random is not None else (3 if q else 6)
    args.tpe = args.tpe if args.tpe is not None else (2 if q else 5)
    args.tpe_trials = args.tpe_trials or (20 if q else 40)
    args.short_steps = args.short_steps or (60 if q else 200)
    args.supernet_steps = args.supernet_steps or ([300] if q else [1000, 3000])
    run_archs(args, bench_arch, report, "bench_proxy", Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
