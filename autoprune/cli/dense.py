"""Commands about dense models: `models`, `train`, `inspect`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

import autoprune
from autoprune.cli.console import RichReporter, stdout
from autoprune.cli.options import data_options, device_option, names_user_builder, trust_code_option


@click.command()
def models() -> None:
    """List the model names `--arch` accepts."""
    for name in autoprune.available_models():
        stdout.print(name)
    stdout.print("package.module:callable   (your own builder, called with num_classes=)")


@click.command()
@click.option(
    "--arch",
    required=True,
    help="Model name (see `autoprune models`); naming a module:callable here imports and runs it.",
)
@data_options("digits")
@click.option("--epochs", type=click.IntRange(1), default=15, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=0.1, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--input-size",
    type=click.IntRange(8),
    default=None,
    help="Image side in pixels (dataset default).",
)
@device_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("dense.pt"),
    show_default=True,
)
@trust_code_option
def train(arch, dataset, data_dir, epochs, lr, batch_size, seed, input_size, device, out, trust_code) -> None:
    """Train a dense model (SGD + cosine) and save a checkpoint.

    Example: autoprune train --arch resnet20 --dataset digits --epochs 15 --out dense.pt

    A module:callable --arch is built because you named it on the command line (--trust-code
    is implied here). Ctrl-C stops within one batch and writes nothing.
    """
    from autoprune.jobs import train_dense

    result = train_dense(
        arch,
        dataset,
        out,
        data_dir=data_dir,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        input_size=input_size,
        device=device,
        reporter=RichReporter(),
        trust_code=trust_code or names_user_builder(arch),
    )
    stdout.print(f"test accuracy {result.accuracy:.2%} ({arch} on {dataset}) -> {out}")


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@trust_code_option
def inspect(checkpoint: Path, trust_code: bool) -> None:
    """Print a checkpoint's arch, dataset, params, FLOPs and accuracy."""
    from autoprune.jobs import describe_checkpoint

    info = describe_checkpoint(checkpoint, trust_code=trust_code)
    table = Table(show_header=False, box=None)
    for key, value in info.items():
        table.add_row(key, value)
    stdout.print(table)
