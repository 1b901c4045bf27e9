"""The CLI's side of progress: live lines drawn with rich on stderr."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from autoprune.progress import Reporter

stderr = Console(stderr=True)
stdout = Console(highlight=False)
_LIVE: set[RichReporter] = set()


def finish_all() -> None:
    """Stop every live progress line (on Ctrl-C or an error, before the one message line)."""
    for reporter in list(_LIVE):
        reporter.finish()


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


class RichReporter(Reporter):
    """One live progress line per phase; finished phases stay on screen."""

    def __init__(self, console: Console = stderr) -> None:
        self._console = console
        self._progress: Progress | None = None
        self._task = None

    def start(self, phase: str, total: int | None = None) -> None:
        self.finish()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self._console,
            transient=False,
        )
        if not self._console.is_terminal:  # a log file or pipe sees the bars only when they end
            self._console.print(f"{phase} ...", highlight=False)
        self._progress.start()
        _LIVE.add(self)
        self._task = self._progress.add_task(phase, total=total, info="")

    def advance(self, n: int = 1, **info: object) -> None:
        if self._progress is None:
            return
        text = "  ".join(f"{k} {_fmt(v)}" for k, v in info.items())
        self._progress.update(self._task, advance=n, info=text)

    def note(self, message: str) -> None:
        self._console.print(message)

    def finish(self) -> None:
        _LIVE.discard(self)
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def run_job(job: Callable[..., Any], *args: Any, threads: int | None = None, **kwargs: Any) -> Any:
    """Call ``job`` with a live progress reporter and ``threads`` torch CPU threads: passed on
    when the job takes a ``threads`` argument, else set around the call."""
    from autoprune.jobs import torch_threads

    if "threads" in inspect.signature(job).parameters:
        kwargs["threads"], scope = threads, nullcontext()
    else:
        scope = torch_threads(threads)
    with scope:
        return job(*args, reporter=RichReporter(), **kwargs)
