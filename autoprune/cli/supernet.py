"""The `supernet` command: train a weight-shared supernet from a dense checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from autoprune.cli.console import RichReporter, stdout
from autoprune.cli.options import data_options, device_option
from autoprune.registry import CHANNEL_CRITERIA


@click.command()
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The dense checkpoint.",
)
@data_options("digits")
@click.option("--steps", type=click.IntRange(1), default=None, help="Training steps (overrides --epochs).")
@click.option("--epochs", type=click.FloatRange(0, min_open=True), default=5.0, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=0.01, show_default=True)
@click.option(
    "--criterion",
    type=click.Choice(CHANNEL_CRITERIA.names),
    default="l1",
    show_default=True,
    help="Channel importance that orders each group (first-k = top-k).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="Torch CPU threads (default: torch's).")
@device_option
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("supernet.pt"), show_default=True
)
def supernet(
    checkpoint, dataset, data_dir, steps, epochs, batch_size, lr, criterion, seed, threads, device, out
):
    """Train a stage-wise supernet (in-place distillation, sandwich sampling) from a dense checkpoint.

    Example: autoprune supernet --checkpoint dense.pt --dataset digits --steps 200 --out supernet.pt

    `autoprune search --proxy supernet` trains one into its run folder, or reuses the one there.
    """
    from autoprune.jobs.supernet import run_supernet

    result = run_supernet(
        checkpoint,
        dataset,
        out,
        data_dir=data_dir,
        steps=steps,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        criterion=criterion,
        device=device,
        threads=threads,
        reporter=RichReporter(),
    )
    losses = " / ".join(f"{v:.3f}" for v in result.stage_losses)
    stdout.print(
        f"supernet: {result.steps} steps in {result.seconds:.0f} s, stage losses {losses} -> {result.path}"
    )
