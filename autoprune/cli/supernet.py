"""The `supernet` command: train a weight-shared supernet from a dense checkpoint."""

from __future__ import annotations

import click

from autoprune.cli import options as opt
from autoprune.cli.console import run_job, stdout
from autoprune.registry import CHANNEL_CRITERIA


@click.command()
@opt.file_option("--checkpoint", required=True, help="The dense checkpoint.")
@opt.data_options("digits")
@opt.count_option("--steps", None, "Training steps (overrides --epochs).")
@opt.positive_option("--epochs", 5.0)
@opt.count_option("--batch-size", 64)
@opt.positive_option("--lr", 0.01)
@opt.choice_option(
    "--criterion",
    CHANNEL_CRITERIA.names,
    "l1",
    "Channel importance that orders each group (first-k = top-k).",
)
@opt.seed_option()
@opt.threads_option
@opt.device_option
@opt.out_option("supernet.pt")
def supernet(checkpoint, dataset, out, **options) -> None:
    """Train a stage-wise supernet (in-place distillation, sandwich sampling) from a dense checkpoint.

    Example: autoprune supernet --checkpoint dense.pt --dataset digits --steps 200 --out supernet.pt

    `autoprune search --proxy supernet` trains one into its run folder, or reuses the one there.
    """
    from autoprune.jobs.supernet import run_supernet

    result = run_job(run_supernet, checkpoint, dataset, out, **options)
    losses = " / ".join(f"{v:.3f}" for v in result.stage_losses)
    stdout.print(
        f"supernet: {result.steps} steps in {result.seconds:.0f} s, stage losses {losses} -> {result.path}"
    )
