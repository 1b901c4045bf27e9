"""Latency-table jobs: ``autoprune latency-table``, and the table a search with ``--latency`` uses.

A search takes ``--latency-table FILE`` (refused when measured on another device or runtime,
unless forced), else the table cached in its run folder as ``latency_table.json``, built there
first with the search's device, torch threads and batch size. A cached table made for another
target (device, runtime, threads, batch size, model) is refused with one line: another study in
the same folder may name it by hash, so it is rebuilt only with ``force``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from autoprune.checkpoint import load_model
from autoprune.errors import AutopruneError
from autoprune.jobs.paths import check_writable_file, removed_on_failure
from autoprune.latency import (
    ROUNDS,
    LatencyTable,
    allocator,
    build_latency_table,
    check_runtime,
    device_name,
    fit_table,
    with_table_rounding,
)
from autoprune.models import create_model
from autoprune.progress import SILENT, Reporter
from autoprune.search_spaces import space_for

LATENCY_TABLE = "latency_table.json"


def latency_table_job(
    arch: str,
    out: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    input_size: int = 32,
    num_classes: int = 10,
    device: str = "cpu",
    runtime: str = "torch",
    batch_size: int = 1,
    threads: int | None = None,
    rounds: int = ROUNDS,
    fit_plans: int = 0,
    trust_code: bool = False,
) -> LatencyTable:
    """Time every prunable layer of ``arch`` (the checkpoint's model, else a fresh one) on
    ``device``, fit the table to ``fit_plans`` whole pruned networks (0: no fit), and save it
    to ``out``; nothing is written on failure."""
    check_runtime(runtime)
    check_writable_file(out, "--out")
    if fit_plans == 1:
        raise AutopruneError("--fit-plans must be 0 (no fit) or at least 2")
    if checkpoint is not None:
        model, ckpt = load_model(checkpoint, arch=arch, trust_code=trust_code)
        input_size, num_classes = ckpt.meta["input_size"], ckpt.meta["num_classes"]
    else:
        model = create_model(arch, num_classes, input_size)
    table = build_latency_table(
        model,
        input_size,
        arch=arch,
        device=device,
        batch_size=batch_size,
        threads=threads,
        runtime=runtime,
        rounds=rounds,
    )
    table = fitted(table, model, num_classes, fit_plans)
    with removed_on_failure(out):
        table.save(out)
    return table


def fitted(table: LatencyTable, model: torch.nn.Module, num_classes: int, plans: int) -> LatencyTable:
    """``table`` fitted to whole networks (:func:`~autoprune.latency.fit_table`) pruned by plans
    of the space a search of this model uses (the table's rounding); ``plans`` 0: as it is."""
    if not plans:
        return table
    space = with_table_rounding(space_for(model, table.arch, table.input_size, num_classes), table)
    return fit_table(table, model, space, plans=plans)


def _differences(table: LatencyTable, want: dict[str, object]) -> list[str]:
    have = {
        "device": table.device_name,
        "runtime": table.runtime,
        "threads": table.threads,
        "batch size": table.batch_size,
        "arch": table.arch,
        "input size": table.input_size,
        "allocator": table.versions.get("allocator"),
    }
    return [f"{k} {have[k]!r} (not {v!r})" for k, v in want.items() if have[k] not in (v, None)]


def search_latency_table(
    model: torch.nn.Module,
    arch: str,
    input_size: int,
    run_dir: Path,
    *,
    given: str | os.PathLike | None,
    device: torch.device,
    batch_size: int,
    force: bool = False,
    reporter: Reporter = SILENT,
) -> tuple[LatencyTable, Path]:
    """The table a new study uses and where it lies (module docstring)."""
    if given is not None:
        # its runtime is the target's (torch eager or ONNX Runtime); its device must be this one
        table = LatencyTable.load(given)
        table.check_target(device, table.runtime, force=force)
        return table, Path(given)
    path = run_dir / LATENCY_TABLE
    want = {
        "device": device_name(device),
        "runtime": "torch",
        "threads": torch.get_num_threads(),
        "batch size": batch_size,
        "arch": arch,
        "input size": input_size,
        **({"allocator": allocator()} if device.type == "cpu" else {}),
    }
    if path.is_file():
        table = LatencyTable.load(path)
        differ = _differences(table, want)
        if not differ:
            reporter.note(f"using the cached latency table {path} ({table.describe()})")
            return table, path
        if not force:
            raise AutopruneError(
                f"the cached latency table {path} was made for another target: {', '.join(differ)}; "
                "pass --force to rebuild it, or --latency-table FILE"
            )
        reporter.note(f"rebuilding the cached latency table {path}: it had {', '.join(differ)}")
    reporter.note(f"timing the model's layers for a latency table (-> {path})")
    table = build_latency_table(model, input_size, arch=arch, device=device, batch_size=batch_size)
    with removed_on_failure(path):
        table.save(path)
    return table, path
