"""A small cache of a dense checkpoint's measured figures (test accuracy, CPU latency), keyed by
the checkpoint file's sha256, so `autoprune apply` does not measure the same dense model again.

The cache is one JSON file, ``$AUTOPRUNE_CACHE/dense_figures.json`` (default
``~/.cache/autoprune``), written atomically; an unreadable or damaged cache is ignored (and
replaced on the next write), and a cache that cannot be written is skipped silently.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from autoprune.io import write_json

CACHE_ENV = "AUTOPRUNE_CACHE"
CACHE_NAME = "dense_figures.json"


def cache_path() -> Path:
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "autoprune"
    return Path(root) / CACHE_NAME


def _read() -> dict:
    try:
        document = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def cached_figure(sha256: str, key: str) -> float | None:
    """The figure stored for ``key`` of the checkpoint with this sha256, or None."""
    entry = _read().get(sha256)
    value = entry.get(key) if isinstance(entry, dict) else None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def store_figure(sha256: str, key: str, value: float) -> None:
    document = _read()
    entry = document.get(sha256)
    document[sha256] = {**(entry if isinstance(entry, dict) else {}), key: float(value)}
    try:
        cache_path().parent.mkdir(parents=True, exist_ok=True)
        write_json(cache_path(), document)
    except OSError:
        pass  # a cache only saves time
