"""Progress reporting from long library calls without the library printing.

Long-running functions take a ``reporter``; the CLI passes one that draws a
live line, tests and library users get the silent default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


class Reporter:
    """Receives progress events; this base class ignores them."""

    def start(self, phase: str, total: int | None = None) -> None:
        """A new phase begins, with ``total`` steps if known."""

    def advance(self, n: int = 1, **info: object) -> None:
        """``n`` more steps are done; ``info`` holds figures worth showing (loss, acc)."""

    def note(self, message: str) -> None:
        """A one-off message worth showing (e.g. 'training the dense model first')."""

    def finish(self) -> None:
        """The current phase is over."""


SILENT = Reporter()


@dataclass(frozen=True)
class ProgressEvent:
    """One progress event, as a :class:`CallbackReporter` passes it on.

    ``kind``: ``"start"`` (``phase``, ``total``), ``"advance"`` (``n`` more steps, ``done`` so
    far in the phase, ``info``: figures such as the best score), ``"note"`` (``message``) or
    ``"finish"`` (the phase is over).
    """

    kind: str
    phase: str | None = None
    total: int | None = None
    n: int = 0
    done: int = 0
    message: str | None = None
    info: dict[str, object] = field(default_factory=dict)


class CallbackReporter(Reporter):
    """A :class:`Reporter` that hands every event to ``callback(ProgressEvent)``: how the Python
    API's ``progress=`` is wrapped (the CLI's rich bars are another Reporter)."""

    def __init__(self, callback: Callable[[ProgressEvent], object]) -> None:
        self.callback = callback
        self.phase: str | None = None
        self.total: int | None = None
        self.done = 0

    def start(self, phase: str, total: int | None = None) -> None:
        self.phase, self.total, self.done = phase, total, 0
        self.callback(ProgressEvent("start", phase, total))

    def advance(self, n: int = 1, **info: object) -> None:
        self.done += n
        self.callback(ProgressEvent("advance", self.phase, self.total, n, self.done, info=dict(info)))

    def note(self, message: str) -> None:
        self.callback(ProgressEvent("note", self.phase, self.total, message=message))

    def finish(self) -> None:
        self.callback(ProgressEvent("finish", self.phase, self.total, done=self.done))


def as_reporter(progress: Reporter | Callable[[ProgressEvent], object] | None) -> Reporter:
    """``progress`` as a Reporter: itself, a :class:`CallbackReporter` around a callable, or silent."""
    if progress is None:
        return SILENT
    if isinstance(progress, Reporter):
        return progress
    if callable(progress):
        return CallbackReporter(progress)
    raise TypeError(f"progress must be a Reporter or a callable, got {type(progress).__name__}")
