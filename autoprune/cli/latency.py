"""``autoprune latency-table``: time every prunable layer of a model on this device."""

from __future__ import annotations

from pathlib import Path

import click

from autoprune.cli.console import stdout


@click.command("latency-table")
@click.option("--arch", required=True, help="Model name (see `autoprune models`).")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Dense checkpoint (its widths and input size); default: a fresh --arch model.",
)
@click.option(
    "--input-size",
    type=click.IntRange(8),
    default=32,
    show_default=True,
    help="Image side when no checkpoint is given.",
)
@click.option(
    "--num-classes",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Classes when no checkpoint is given.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N (the target device).")
@click.option("--runtime", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=1, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="torch threads (default: torch's).")
@click.option(
    "--rounds",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="Timing rounds per grid point (minimum kept).",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Table JSON.")
def latency_table(
    arch, checkpoint, input_size, num_classes, device, runtime, batch_size, threads, rounds, out
):
    """Build a latency table: each conv/linear layer (with its BN and activation) timed on a
    grid of widths on DEVICE, plus the dense model's remainder.

    Example: autoprune latency-table --arch resnet20 --batch-size 32 --threads 1 --out lut.json
    """
    from autoprune.jobs import latency_table_job

    table = latency_table_job(
        arch,
        out,
        checkpoint=checkpoint,
        input_size=input_size,
        num_classes=num_classes,
        device=device,
        runtime=runtime,
        batch_size=batch_size,
        threads=threads,
        rounds=rounds,
    )
    stairs = ", ".join(f"{kind} {axes['out']}" for kind, axes in table.stairs.items())
    stdout.print(
        f"{len(table.shapes)} layer shapes ({len(table.layers)} layers) timed in {table.build_s:.1f} s: "
        f"dense {table.dense_ms:.2f} ms, remainder {table.remainder_ms:.2f} ms, "
        f"output stairs {stairs}"
    )
    stdout.print(f"saved {out} ({table.describe()})")
