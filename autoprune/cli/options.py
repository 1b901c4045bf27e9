"""Options shared by several commands, each defined once here."""

from __future__ import annotations

import os
from pathlib import Path

import click

DEVICE_HELP = "auto (CUDA if available), cpu, cuda or cuda:N"
THREADS_ENV = "OMP_NUM_THREADS"
THREADS_HELP = (
    f"Torch CPU threads (default: ${THREADS_ENV} when set, else torch's). One thread can be faster "
    "when another process holds a core (measured: 2-4x on a shared 2-core machine)."
)


def file_option(name: str, *decls: str, default: Path | str | None = None, **kwargs):
    """A file path option (``--out``, ``--checkpoint``, ...); a default is shown in --help."""
    if default is not None:
        kwargs.setdefault("show_default", True)
    return click.option(
        name, *decls, type=click.Path(dir_okay=False, path_type=Path), default=default, **kwargs
    )


def folder_option(name: str, **kwargs):
    return click.option(name, type=click.Path(file_okay=False, path_type=Path), default=None, **kwargs)


def choice_option(name: str, names, default: str, help: str | None = None):
    """A choice among a registry's names, its default shown in --help."""
    return click.option(name, type=click.Choice(names), default=default, show_default=True, help=help)


def count_option(name: str, default: int | None, help: str | None = None, *, minimum: int = 1, **kwargs):
    """A whole number >= ``minimum``; a default other than None is shown in --help."""
    return click.option(
        name,
        type=click.IntRange(minimum),
        default=default,
        show_default=default is not None,
        help=help,
        **kwargs,
    )


def positive_option(name: str, default: float | None, help: str | None = None):
    """A number > 0; a default other than None is shown in --help."""
    return click.option(
        name,
        type=click.FloatRange(0, min_open=True),
        default=default,
        show_default=default is not None,
        help=help,
    )


def seed_option(default: int | None = 0, help: str | None = None):
    return click.option("--seed", type=int, default=default, show_default=default is not None, help=help)


def out_option(default: Path | str):
    return file_option("--out", default=Path(default))


def device_option(f):
    return click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)(f)


def _threads_default(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """``--threads``, else ``$OMP_NUM_THREADS`` when it is a positive whole number, else None."""
    if value is not None:
        return value
    env = os.environ.get(THREADS_ENV, "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else None


def threads_option(f):
    """``--threads N`` for compute commands; honours OMP_NUM_THREADS when not given."""
    return click.option(
        "--threads", type=click.IntRange(1), default=None, callback=_threads_default, help=THREADS_HELP
    )(f)


def data_dir_option(help: str | None = None):
    return folder_option(
        "--data-dir",
        help=help
        or "Where datasets live or download to (default ~/.cache/autoprune/data or $AUTOPRUNE_DATA).",
    )


def data_options(default: str):
    """``--dataset`` (defaulting to ``default``) and ``--data-dir``."""

    def decorate(f):
        f = data_dir_option()(f)
        return click.option(
            "--dataset",
            default=default,
            show_default=True,
            help="digits (offline, bundled), cifar10, cifar100, fashion-mnist, imagenet or folder:PATH "
            "(imagenet and folders: random resized crop + flip for training, resize to 8/7 of "
            "--input-size and centre crop for evaluation).",
        )(f)

    return decorate


ARCH_HELP = "Model name (see `autoprune models`)."
WEIGHTS_HELP = (
    "Start from published weights: a torchvision weights name (DEFAULT, IMAGENET1K_V1, or "
    "ResNet18_Weights.IMAGENET1K_V1) for torchvision:<name>, DEFAULT or a pretrained tag for "
    "timm:<name>. Files come from torch hub's cache ($TORCH_HOME/hub/checkpoints), downloaded "
    "there unless AUTOPRUNE_OFFLINE=1; a head for another number of classes starts fresh."
)


def arch_option(required: bool = True, help: str = ARCH_HELP, default: str | None = None):
    return click.option("--arch", required=required, default=default, help=help)


def weights_option(f):
    return click.option("--weights", default=None, metavar="NAME", help=WEIGHTS_HELP)(f)


def input_size_option(default: int | None = None, help: str = "Image side (dataset default)."):
    return count_option("--input-size", default, help, minimum=8)


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


def dense_checkpoint_option(default_text: str):
    """``--checkpoint``: a dense checkpoint trained first at a default path when missing."""
    return file_option(
        "--checkpoint",
        help=f"Dense checkpoint (default {default_text}). A --checkpoint path that does not exist "
        "is an error unless --train-missing.",
    )


def names_user_builder(arch: str | None) -> bool:
    """``arch`` is a ``module:callable`` builder (not a built-in, torchvision or timm name).

    Naming one with ``--arch`` on the command line counts as trusting it: the user typed
    the name, no file supplied it.
    """
    return bool(arch) and ":" in arch and not arch.startswith(("torchvision:", "timm:"))
