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


TRUST_CODE_HELP = (
    "Build module:callable models named by files (checkpoint, plan, study); "
    "only for files you trust: it imports and runs that code."
)


def trust_code_option(f):
    return click.option("--trust-code", is_flag=True, help=TRUST_CODE_HELP)(f)


def train_missing_option(f):
    return click.option(
        "--train-missing",
        is_flag=True,
        help="If the --checkpoint file does not exist, train a dense model there first "
        "(without this flag a missing path is an error).",
    )(f)


def names_user_builder(arch: str | None) -> bool:
    """``arch`` is a ``module:callable`` builder (not a built-in or torchvision name).

    Naming one with ``--arch`` on the command line counts as trusting it: the user typed
    the name, no file supplied it.
    """
    return bool(arch) and ":" in arch and not arch.startswith("torchvision:")
