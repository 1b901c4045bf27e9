"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path

import click

DEVICE_HELP = "auto (CUDA if available), cpu, cuda or cuda:N"


def device_option(f):
    return click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)(f)


def data_options(default: str):
    """``--dataset`` (defaulting to ``default``) and ``--data-dir``."""

    def decorate(f):
        f = click.option(
            "--data-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Where datasets live or download to (default ~/.cache/autoprune/data or $AUTOPRUNE_DATA).",
        )(f)
        return click.option(
            "--dataset",
            default=default,
            show_default=True,
            help="digits (offline, bundled), cifar10, cifar100, fashion-mnist, imagenet or folder:PATH.",
        )(f)

    return decorate
