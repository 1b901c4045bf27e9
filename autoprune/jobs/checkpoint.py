"""The one place a job trains the dense model first when its checkpoint does not exist yet."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from autoprune.data import load_dataset
from autoprune.errors import AutopruneError
from autoprune.jobs import dense
from autoprune.progress import SILENT, Reporter


@dataclass(frozen=True)
class DenseRecipe:
    """How to train the dense model when there is no checkpoint (``arch`` None: cannot)."""

    arch: str | None
    dataset: str
    data_dir: str | os.PathLike | None = None
    epochs: int = 15
    seed: int = 0
    input_size: int | None = None
    device: str = "auto"


def ensure_checkpoint(
    given: str | os.PathLike | None, default: Path, recipe: DenseRecipe, reporter: Reporter = SILENT
) -> Path:
    """The dense checkpoint to use: ``given``, else ``default``; trained there first if it does not exist.

    Later runs find the file and reuse it.
    """
    path = Path(given) if given is not None else default
    if path.is_file():
        if given is None:
            reporter.note(f"using the dense checkpoint {path} from a previous run")
        return path
    if recipe.arch is None:
        raise AutopruneError(f"checkpoint {str(path)!r} does not exist; give --arch to train one there first")
    load_dataset(recipe.dataset, recipe.data_dir, input_size=recipe.input_size)  # fail before announcing
    reporter.note(
        f"no checkpoint at {path}: training a dense {recipe.arch} on {recipe.dataset} first "
        f"({recipe.epochs} epochs; later runs reuse it)"
    )
    dense.train_dense(
        recipe.arch,
        recipe.dataset,
        path,
        data_dir=recipe.data_dir,
        epochs=recipe.epochs,
        seed=recipe.seed,
        input_size=recipe.input_size,
        device=recipe.device,
        reporter=reporter,
    )
    return path
