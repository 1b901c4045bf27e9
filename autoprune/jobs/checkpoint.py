"""The one place a job trains the dense model first when its checkpoint does not exist yet."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoprune.data import load_dataset
from autoprune.device import resolve_device
from autoprune.errors import AutopruneError
from autoprune.jobs import dense
from autoprune.jobs.paths import check_writable_file
from autoprune.models import create_model
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
    trust_code: bool = False  # build a module:callable arch (the user named it, or allowed it)
    weights: str | None = None  # start from published weights (torchvision:/timm: archs)

    @classmethod
    def from_options(
        cls, options: Any, dataset: str, *, epochs: int, input_size: int | None = None
    ) -> DenseRecipe:
        """The recipe of a job's options (a SearchConfig, a SensitivityJob): their ``arch``,
        ``data_dir``, ``seed`` (None: 0), ``device``, ``trust_code`` and ``weights``."""
        return cls(
            options.arch,
            dataset,
            options.data_dir,
            epochs=epochs,
            seed=options.seed or 0,
            input_size=input_size,
            device=options.device,
            trust_code=options.trust_code,
            weights=options.weights,
        )


def ensure_checkpoint(
    given: str | os.PathLike | None,
    default: Path,
    recipe: DenseRecipe,
    reporter: Reporter = SILENT,
    *,
    train_missing: bool = False,
) -> Path:
    """The dense checkpoint to use: ``given``, else ``default``; trained first if it does not exist.

    A ``given`` path that does not exist is an error unless ``train_missing`` (a mistyped
    path must not start a long training run); the ``default`` path is trained when missing,
    and later runs find the file and reuse it. The dataset, device and model are checked
    before the training note is printed, so a bad name is one error line.
    """
    path = Path(given) if given is not None else default
    if path.is_file():
        if given is None:
            reporter.note(f"using the dense checkpoint {path} from a previous run")
        return path
    if path.is_dir():
        raise AutopruneError(f"checkpoint {str(path)!r} is a folder, not a file")
    if given is not None and not train_missing:
        raise AutopruneError(
            f"checkpoint {str(path)!r} does not exist; check the path, or pass --train-missing "
            "(with --arch) to train a dense model there first"
        )
    if recipe.arch is None:
        raise AutopruneError(f"checkpoint {str(path)!r} does not exist; give --arch to train one there first")
    check_writable_file(path, "checkpoint")
    resolve_device(recipe.device)
    splits = load_dataset(recipe.dataset, recipe.data_dir, input_size=recipe.input_size)
    create_model(
        recipe.arch,
        splits.num_classes,
        splits.input_size,
        trust_code=recipe.trust_code,
        weights=recipe.weights,
    )
    reporter.note(
        f"no checkpoint at {path}: training a dense {recipe.arch} on {recipe.dataset} first "
        f"({recipe.epochs} epochs{f' from weights {recipe.weights}' if recipe.weights else ''}; "
        "later runs reuse it)"
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
        trust_code=recipe.trust_code,
        weights=recipe.weights,
    )
    return path
