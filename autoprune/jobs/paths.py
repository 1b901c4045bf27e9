"""Output paths of a job: checked before any work starts, and removed again if the job fails.

A job that cannot write its result should say so in one line before it trains or measures
anything, and a job that fails (or is interrupted) should leave the folders it created
behind it gone, never anything that was there before.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autoprune.errors import AutopruneError


def outermost_missing(path: Path) -> Path | None:
    """The highest folder of ``path`` that does not exist yet (what creating it would add)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def check_writable_file(path: str | os.PathLike, what: str) -> Path:
    """AutopruneError unless a file can be written at ``path`` (its folder may not exist yet)."""
    path = Path(path)
    if path.is_dir():
        raise AutopruneError(f"cannot write {what} {str(path)!r}: it is a folder")
    _check_parent(path.parent, what, path)
    return path


def check_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """AutopruneError unless ``path`` is a folder, or a folder can be made there."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AutopruneError(f"cannot write {what} {str(path)!r}: it is a file, not a folder")
    _check_parent(path if path.is_dir() else path.parent, what, path)
    return path


def _check_parent(folder: Path, what: str, path: Path) -> None:
    existing = folder
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise AutopruneError(f"cannot write {what} {str(path)!r}: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise AutopruneError(f"cannot write {what} {str(path)!r}: {str(existing)!r} is not writable")


@contextmanager
def removed_on_failure(*paths: str | os.PathLike) -> Iterator[None]:
    """On any exception (Ctrl-C included) remove the folders this block would create for ``paths``.

    Only folders missing when the block starts are removed; existing files and folders are
    never touched (files themselves are written atomically by :mod:`autoprune.io`).
    """
    fresh = {m for m in (outermost_missing(Path(p).parent) for p in paths) if m is not None}
    try:
        yield
    except BaseException:
        for folder in fresh:
            shutil.rmtree(folder, ignore_errors=True)
        raise
