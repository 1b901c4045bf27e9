"""Commands about dense models: `models`, `train`, `import`, `inspect`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

import autoprune
from autoprune.cli.console import run_job, stdout
from autoprune.cli.options import (
    arch_option,
    count_option,
    data_options,
    device_option,
    input_size_option,
    names_user_builder,
    out_option,
    positive_option,
    seed_option,
    threads_option,
    trust_code_option,
    weights_option,
)


@click.command()
def models() -> None:
    """List the model names `--arch` accepts."""
    for name in autoprune.available_models():
        stdout.print(name)
    stdout.print("package.module:callable   (your own builder, called with num_classes=)")


@click.command()
@arch_option(help="Model name (see `autoprune models`); naming a module:callable here imports and runs it.")
@weights_option
@data_options("digits")
@count_option("--epochs", 15)
@positive_option("--lr", 0.1)
@count_option("--batch-size", 64)
@count_option("--train-images", None, "Train on a seeded subset of this many training images (default: all).")
@seed_option()
@input_size_option(help="Image side in pixels (dataset default).")
@device_option
@threads_option
@out_option("dense.pt")
@trust_code_option
def train(arch, dataset, out, trust_code, **options) -> None:
    """Train a dense model (SGD + cosine) and save a checkpoint.

    Example: autoprune train --arch resnet20 --dataset digits --epochs 15 --out dense.pt

    A module:callable --arch is built because you named it on the command line (--trust-code
    is implied here). --weights starts from published weights instead of random ones.
    Ctrl-C stops within one batch and writes nothing.
    """
    from autoprune.jobs import train_dense

    trust_code = trust_code or names_user_builder(arch)
    result = run_job(train_dense, arch, dataset, out, trust_code=trust_code, **options)
    stdout.print(f"test accuracy {result.accuracy:.2%} ({arch} on {dataset}) -> {out}")


@click.command("import")
@click.argument("weights", type=click.Path(dir_okay=False, path_type=Path))
@arch_option(help="Model name the weights belong to (see `autoprune models`).")
@count_option("--num-classes", None, "Classes of the model's head.", required=True)
@count_option("--input-size", None, "Image side in pixels the model is used at.", minimum=8, required=True)
@click.option("--dataset", default=None, help="Dataset later commands evaluate on (kept in the checkpoint).")
@out_option("dense.pt")
@trust_code_option
def import_(weights, arch, num_classes, input_size, dataset, out, trust_code) -> None:
    """Turn a plain state_dict file (WEIGHTS, loaded weights-only; a dict with a state_dict or
    model key is accepted) into an autoprune checkpoint, checking that it fits --arch.

    Example: autoprune import resnet18.pth --arch torchvision:resnet18 --num-classes 1000
    --input-size 224 --dataset imagenet --out dense.pt
    """
    from autoprune.jobs import import_weights

    path = import_weights(
        weights,
        arch,
        out,
        num_classes=num_classes,
        input_size=input_size,
        dataset=dataset,
        trust_code=trust_code or names_user_builder(arch),
    )
    stdout.print(f"imported {weights} as a {arch} checkpoint -> {path}")


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
