"""Shared fixtures: run the CLI in-process, and one small trained checkpoint per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from autoprune.cli import main

torch.set_num_threads(2)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys):
    """Run ``autoprune ARGS`` in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> Path:
    """A resnet20 trained briefly on digits (a few seconds): real weights for CLI tests."""
    from autoprune.jobs import train_dense

    path = tmp_path_factory.mktemp("ckpt") / "dense.pt"
    train_dense("resnet20", "digits", path, epochs=2, device="cpu")
    return path
