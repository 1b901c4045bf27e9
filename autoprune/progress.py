"""Progress reporting from long library calls without the library printing.

Long-running functions take a ``reporter``; the CLI passes one that draws a
live line, tests and library users get the silent default.
"""

from __future__ import annotations


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
