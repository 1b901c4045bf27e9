"""The supernet job: train a weight-shared supernet from a dense checkpoint and save it.

Also what the search job needs for ``--proxy supernet``: a supernet in the run folder
(``supernet.pt``, trained there first when missing, refused when it belongs to another
checkpoint) and the options that build the proxy from the study's stored config.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autoprune.checkpoint import file_sha256, load_model
from autoprune.data import DataSplits, load_dataset
from autoprune.device import resolve_device
from autoprune.errors import AutopruneError
from autoprune.jobs.threads import torch_threads
from autoprune.progress import SILENT, Reporter
from autoprune.search_spaces import space_for
from autoprune.supernet import Supernet, SupernetConfig, train_supernet

SEARCH_SUPERNET = "supernet.pt"


@dataclass(frozen=True)
class SupernetResult:
    path: Path
    steps: int
    stage_losses: list[float]  # the last step's, per stage (mean over its plans)
    seconds: float


def run_supernet(
    checkpoint: str | os.PathLike,
    dataset: str,
    out: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    config: SupernetConfig | None = None,
    steps: int | None = None,
    epochs: float | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    criterion: str = "l1",
    device: str = "auto",
    threads: int | None = None,
    reporter: Reporter = SILENT,
    stop: threading.Event | None = None,
) -> SupernetResult:
    """Train a supernet initialized from the dense ``checkpoint`` on ``dataset``; save it to ``out``.

    ``steps``, ``epochs``, ``batch_size``, ``lr``, ``seed`` (when given) override ``config``'s.
    """
    given = {"steps": steps, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
    config = replace(config or SupernetConfig(), **{k: v for k, v in given.items() if v is not None})
    if threads is not None and threads < 1:
        raise AutopruneError(f"--threads must be at least 1, got {threads}")
    if not Path(checkpoint).is_file():
        raise AutopruneError(f"checkpoint {str(checkpoint)!r} does not exist")
    with torch_threads(threads):
        supernet, splits = _dense_supernet(checkpoint, dataset, data_dir, config, criterion)
        start = time.perf_counter()
        history = train_supernet(
            supernet, splits, config, device=resolve_device(device), reporter=reporter, stop=stop
        )
        seconds = time.perf_counter() - start
        path = supernet.save(out)
    return SupernetResult(
        path, history.steps, history.stage_losses[-1] if history.stage_losses else [], seconds
    )


def _dense_supernet(
    checkpoint: str | os.PathLike,
    dataset: str,
    data_dir: str | os.PathLike | None,
    config: SupernetConfig,
    criterion: str,
) -> tuple[Supernet, DataSplits]:
    """The untrained supernet of the dense ``checkpoint`` (its meta records where it came from)
    and the dataset's splits."""
    model, ckpt = load_model(checkpoint)
    meta = ckpt.meta
    if meta.get("dataset") not in (None, dataset):
        raise AutopruneError(f"checkpoint {checkpoint} was trained on {meta['dataset']}, not {dataset}")
    splits = load_dataset(dataset, data_dir, input_size=meta["input_size"], seed=config.seed)
    space = space_for(model, ckpt.arch, meta["input_size"], meta["num_classes"])
    supernet = Supernet.from_dense(
        model,
        space,
        criterion=criterion,
        meta={
            "arch": ckpt.arch,
            "checkpoint_sha256": file_sha256(checkpoint),
            "dataset": dataset,
            "input_size": meta["input_size"],
            "num_classes": meta["num_classes"],
            "lr": config.lr,
            "batch_size": config.batch_size,
            "seed": config.seed,
        },
    )
    return supernet, splits


def prepare_search_supernet(
    config: Any, checkpoint: Path, checkpoint_sha256: str, run_dir: Path, reporter: Reporter = SILENT
) -> dict[str, Any]:
    """For a new ``--proxy supernet`` study: the run folder's ``supernet.pt``, trained first when
    missing; a supernet there of another checkpoint is refused. Returns what the study stores."""
    path = run_dir / SEARCH_SUPERNET
    if path.is_file():
        model, ckpt = load_model(checkpoint)
        space = space_for(model, ckpt.arch, ckpt.meta["input_size"], ckpt.meta["num_classes"])
        Supernet.load(path, model, space, arch=ckpt.arch, checkpoint_sha256=checkpoint_sha256)
        reporter.note(f"using the supernet {path} from a previous run")
    else:
        steps = config.supernet_steps
        reporter.note(
            f"no supernet at {path}: training one first "
            f"({f'{steps} steps' if steps else f'{SupernetConfig().epochs:g} epochs'}; later runs reuse it)"
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        run_supernet(
            checkpoint,
            config.dataset,
            path,
            data_dir=config.data_dir,
            config=SupernetConfig(steps=steps, seed=config.seed or 0, r_min=config.r_min),
            criterion=config.criterion,
            device=config.device,
            reporter=reporter,
        )
    return {"supernet": SEARCH_SUPERNET, "supernet_sha256": file_sha256(path)}


def search_supernet_options(stored: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """``create_proxy`` options of a ``--proxy supernet`` study, for this process (first or worker)."""
    name = stored.get("supernet") or SEARCH_SUPERNET
    path = Path(name) if Path(name).is_absolute() else Path(run_dir) / name
    if not path.is_file():
        raise AutopruneError(
            f"the study's supernet {name} is missing (looked for {path.resolve()}); "
            "workers need the run folder's files"
        )
    want = stored.get("supernet_sha256")
    if want is not None and file_sha256(path) != want:
        raise AutopruneError(
            f"the study's supernet {path.resolve()} differs from the one the study was made with "
            f"(sha256 {want[:12]}...)"
        )
    return {
        "supernet": str(path),
        "arch": stored["arch"],
        "checkpoint_sha256": stored["checkpoint_sha256"],
        "metric": stored.get("proxy_metric", "acc"),
    }
