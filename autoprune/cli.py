"""The ``autoprune`` command line: parse, call the library, print."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

import autoprune
from autoprune.console import RichReporter, stderr, stdout
from autoprune.errors import AutopruneError

DEVICE_HELP = "auto (CUDA if available), cpu, cuda or cuda:N"


def _device_option(f):
    return click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)(f)


def _data_options(f):
    f = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where datasets live or download to (default ~/.cache/autoprune/data or $AUTOPRUNE_DATA).",
    )(f)
    return click.option(
        "--dataset",
        default="digits",
        show_default=True,
        help="digits (offline, bundled), cifar10, cifar100, fashion-mnist, imagenet or folder:PATH.",
    )(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(autoprune.__version__, prog_name="autoprune")
def cli() -> None:
    """Find how many channels each layer of a trained CNN should keep under a budget,
    and build the physically smaller network."""


@cli.command()
def models() -> None:
    """List the model names `--arch` accepts."""
    for name in autoprune.available_models():
        stdout.print(name)
    stdout.print("package.module:callable   (your own builder, called with num_classes=)")


@cli.command()
@click.option("--arch", required=True, help="Model name (see `autoprune models`).")
@_data_options
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
@_device_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("dense.pt"),
    show_default=True,
)
def train(arch, dataset, data_dir, epochs, lr, batch_size, seed, input_size, device, out) -> None:
    """Train a dense model (SGD + cosine) and save a checkpoint.

    Example: autoprune train --arch resnet20 --dataset digits --epochs 15 --out dense.pt
    """
    from autoprune.pipeline import train_dense

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
    )
    stdout.print(f"test accuracy {result.accuracy:.2%} ({arch} on {dataset}) -> {out}")


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
def inspect(checkpoint: Path) -> None:
    """Print a checkpoint's arch, dataset, params, FLOPs and accuracy."""
    from autoprune.pipeline import describe_checkpoint

    info = describe_checkpoint(checkpoint)
    table = Table(show_header=False, box=None)
    for key, value in info.items():
        table.add_row(key, value)
    stdout.print(table)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        code = cli.main(args=argv, prog_name="autoprune", standalone_mode=False)
    except AutopruneError as exc:
        stderr.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        stderr.print(
            f"[red]error:[/red] {exc.format_message()}{hint}", highlight=False, soft_wrap=True
        )
        sys.exit(2)
    except click.ClickException as exc:
        stderr.print(f"[red]error:[/red] {exc.format_message()}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.Abort):
        stderr.print("interrupted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
