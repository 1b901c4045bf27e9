"""Atomic file writes (a reader never sees a half-written result) and checked JSON reads."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoprune.errors import AutopruneError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file over ``path``.

    The temporary file lives in the destination folder so the rename is atomic;
    on any failure (Ctrl-C included) it is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The parsed JSON of ``path``; a missing or malformed file is an AutopruneError naming ``what``."""
    path = Path(path)
    if not path.is_file():
        raise AutopruneError(f"{what} file {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AutopruneError(f"{what} file {str(path)!r} is not valid JSON ({exc})") from None
