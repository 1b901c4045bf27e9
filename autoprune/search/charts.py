"""Pictures of a search: one trial's keep ratios, and the study's summary."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from autoprune.io import atomic_write  # noqa: E402


def _save(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically; the figure is closed whether or not that worked."""
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def keep_ratio_chart(
    path: Path, group_ids: Sequence[str], ratios: Sequence[float], stages: Sequence[int], title: str
) -> Path:
    """Bars of the kept fraction per group in network order, coloured by stage."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(group_ids)), 3.2))
    colours = plt.get_cmap("tab10")(np.asarray(stages) % 10)
    ax.bar(range(len(ratios)), ratios, color=colours)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("kept fraction")
    ax.set_xticks(range(len(group_ids)), group_ids, rotation=90, fontsize=6)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def summary_chart(
    path: Path,
    trial_numbers: Sequence[int],
    scores: Sequence[float],
    group_ids: Sequence[str],
    best_channels: Sequence[int],
    uniform_channels: Sequence[int],
    dense_channels: Sequence[int],
) -> Path:
    """Proxy score over trials (with the best so far), and the best plan's widths vs uniform."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(7.0, 0.25 * len(group_ids)), 7))
    if len(scores):
        top.scatter(trial_numbers, scores, s=12, label="trial")
        top.step(
            trial_numbers, np.maximum.accumulate(np.asarray(scores)), where="post", color="C3", label="best"
        )
        top.legend(fontsize=8)
    top.set_xlabel("trial")
    top.set_ylabel("proxy score")
    x = np.arange(len(group_ids))
    bottom.bar(x - 0.2, dense_channels, 0.4, color="0.85", label="dense")
    bottom.bar(x - 0.2, uniform_channels, 0.4, color="C0", label="uniform at budget")
    bottom.bar(x + 0.2, best_channels, 0.4, color="C3", label="best plan")
    bottom.set_ylabel("channels")
    bottom.set_xticks(x, group_ids, rotation=90, fontsize=6)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
