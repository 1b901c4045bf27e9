"""The ``autoprune`` command line: parse, call the library, print.

Each command lives in a module of this package and is registered below.
"""

from __future__ import annotations

import os
import sys
import threading

import click
from rich.markup import escape

import autoprune
from autoprune.cli import apply, dense, search, supernet
from autoprune.cli import latency as latency_cmd
from autoprune.cli import sensitivity as sensitivity_cmd
from autoprune.cli.console import finish_all, stderr
from autoprune.errors import AutopruneError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(autoprune.__version__, prog_name="autoprune")
def cli() -> None:
    """Find how many channels each layer of a trained CNN should keep under a budget,
    and build the physically smaller network."""


for command in (
    dense.models,
    dense.train,
    dense.import_,
    dense.inspect,
    search.search,
    search.worker,
    apply.apply,
    search.dashboard,
    sensitivity_cmd.sensitivity,
    latency_cmd.latency_table,
    supernet.supernet,
):
    cli.add_command(command)


def main(argv: list[str] | None = None, *, process: bool = False) -> None:
    """Entry point: user errors become one line on stderr and exit code 2.

    An OSError that reaches here (a full disk, a permission refused while writing) is the
    environment's problem, not a bug: one line too, after the atomic writers have kept
    every previous file intact. Ctrl-C exits with 130 and one line; with ``process`` (the
    ``autoprune`` program itself, not a caller in the same process) within
    :data:`EXIT_GRACE_S` even if the orderly exit hangs.
    """
    try:
        code = cli.main(args=argv, prog_name="autoprune", standalone_mode=False)
    except BaseException as exc:
        if process and isinstance(exc, (KeyboardInterrupt, click.Abort)):  # click: Ctrl-C is Abort
            _exit_within(EXIT_GRACE_S, 130)
        finish_all()
        try:
            raise
        except AutopruneError as exc:
            _error(str(exc))
            sys.exit(2)
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            _error(f"{exc.format_message()}{hint}")
            sys.exit(2)
        except click.ClickException as exc:
            _error(exc.format_message())
            sys.exit(exc.exit_code)
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            _error(f"{exc.strerror or exc}{where}")
            sys.exit(2)
        except (KeyboardInterrupt, click.Abort):
            stderr.print("interrupted")
            sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


EXIT_GRACE_S = 5.0
"""After Ctrl-C, the process exits with 130 within this many seconds even if cleanup hangs."""


def _exit_within(seconds: float, code: int) -> None:
    """Make sure the process ends: a daemon timer that exits hard with ``code`` if the orderly
    exit (closing progress bars, the interpreter's shutdown) has not finished by then. Every
    file autoprune writes is written atomically, so a hard exit loses nothing. Seen once in a
    loaded test run: a Ctrl-C that landed mid-startup left the process waiting forever."""

    def hard_exit() -> None:
        os.write(2, b"interrupted\n")  # the raw descriptor: a hung print may hold stderr's lock
        os._exit(code)

    timer = threading.Timer(seconds, hard_exit)
    timer.daemon = True
    timer.start()


def run() -> None:
    """The process entry point: the ``autoprune`` script and ``python -m autoprune.cli``."""
    main(process=True)


def _error(message: str) -> None:
    """One line ``error: ...`` on stderr (newlines in a message are folded)."""
    line = " ".join(message.split("\n"))
    stderr.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
