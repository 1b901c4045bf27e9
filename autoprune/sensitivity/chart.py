"""The sensitivity chart: one bar per unit in network order, coloured by stage, seed spread as error bars."""

from __future__ import annotations

import os
from pathlib import Path

from autoprune.io import atomic_write
from autoprune.sensitivity.result import Sensitivity

_LABELS = {
    "sr-init": "top-1 drop after re-initialization (acc0 - acc)",
    "sbpf": "top-1 drop under relative weight noise",
    "bn-gamma": "mean |gamma|",
}


def save_chart(sens: Sensitivity, path: str | os.PathLike) -> Path:
    """Write the bar chart as a PNG, atomically (matplotlib's Agg backend, no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n = len(sens.units)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * n + 2.0), 4.2), dpi=110)
    cmap = plt.get_cmap("tab10")
    colors = [cmap(u.stage % 10) for u in sens.units]
    ax.bar(
        range(n),
        [u.delta for u in sens.units],
        yerr=[u.std for u in sens.units] if len(sens.seeds) > 1 else None,
        color=colors,
        edgecolor=["black" if u.removable is False else "none" for u in sens.units],
        capsize=2,
        error_kw={"elinewidth": 0.8},
    )
    ax.set_xticks(range(n))
    ax.set_xticklabels([u.id for u in sens.units], rotation=90, fontsize=6 if n > 30 else 7)
    ax.set_ylabel(_LABELS.get(sens.method, "sensitivity"), fontsize=8)
    seeds = f"{len(sens.seeds)} seeds, " if sens.seeds else ""
    images = f"{sens.images} images, " if sens.images else ""
    ax.set_title(
        f"{sens.method} per {sens.unit}: {sens.arch or 'model'} ({seeds}{images}acc0 {sens.acc0:.2%})"
        if sens.acc0 is not None
        else f"{sens.method} per {sens.unit}: {sens.arch or 'model'}",
        fontsize=9,
    )
    stages = sorted({u.stage for u in sens.units})
    handles = [Patch(color=cmap(s % 10), label=f"stage {s}") for s in stages]
    if any(u.removable is False for u in sens.units):
        handles.append(Patch(facecolor="white", edgecolor="black", label="shape-changing block"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.axhline(0, color="black", linewidth=0.6)
    fig.tight_layout()

    def write(tmp: Path) -> None:
        fig.savefig(tmp, format="png")

    try:
        return atomic_write(path, write)
    finally:
        plt.close(fig)
