"""``autoprune latency-table``: time every prunable layer of a model on this device."""

from __future__ import annotations

import click

from autoprune.cli.console import stdout
from autoprune.cli.options import arch_option, choice_option, count_option, file_option, threads_option


@click.command("latency-table")
@arch_option()
@file_option(
    "--checkpoint", help="Dense checkpoint (its widths and input size); default: a fresh --arch model."
)
@count_option("--input-size", 32, "Image side when no checkpoint is given.", minimum=8)
@count_option("--num-classes", 10, "Classes when no checkpoint is given.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N (the target device).")
@choice_option("--runtime", ["torch", "onnxruntime"], "torch")
@count_option("--batch-size", 1)
@threads_option
@count_option("--rounds", 5, "Timing rounds per grid point (minimum kept).")
@count_option(
    "--fit-plans",
    0,
    "Also time this many whole pruned networks and fit the table to them (a scale per layer kind "
    "and a remainder; 8 is a good size); 0: the per-layer table as measured. Measured on this "
    "CPU the fit did not beat the per-layer table (benchmarks/RESULTS.md, Latency).",
    minimum=0,
)
@file_option("--out", required=True, help="Table JSON.")
def latency_table(out, **options):
    """Build a latency table: each conv/linear layer (with its BN and activation) timed on a
    grid of widths on DEVICE, plus the dense model's remainder.

    Example: autoprune latency-table --arch resnet20 --batch-size 32 --threads 1 --out lut.json
    """
    from autoprune.jobs import latency_table_job

    table = latency_table_job(out=out, **options)
    stairs = ", ".join(f"{kind} {axes['out']}" for kind, axes in table.stairs.items())
    stdout.print(
        f"{len(table.shapes)} layer shapes ({len(table.layers)} layers) timed in {table.build_s:.1f} s: "
        f"dense {table.dense_ms:.2f} ms, remainder {table.remainder_ms:.2f} ms, "
        f"output stairs {stairs}"
    )
    if table.fit is not None:
        fit = table.fit
        stdout.print(
            f"fitted to {fit.plans} whole networks: median error on them "
            f"{fit.error_before:.1%} -> {fit.error_after:.1%}"
        )
    stdout.print(f"saved {out} ({table.describe()})")
