"""Shared fixtures and helpers: run the CLI in-process, one small trained checkpoint per
session, one torch thread per module (``one_thread``) and randomized norms (``randomize``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from autoprune.cli import main

torch.set_num_threads(2)
pytest_plugins = ["pg_server"]  # fixture postgres_url: a real server on loopback


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """The tests' apply runs cache dense figures in a temp folder, never in the user's ~/.cache."""
    before = os.environ.get("AUTOPRUNE_CACHE")
    os.environ["AUTOPRUNE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        del os.environ["AUTOPRUNE_CACHE"]
    else:
        os.environ["AUTOPRUNE_CACHE"] = before


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


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests: small CPU passes on the shared, loaded cores run
    far faster than with two threads waiting on each other. Use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``. It returns a function that sets the
    count again, for tests that launch numba kernels (which resize the OpenMP pool torch uses)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield lambda: torch.set_num_threads(1)
    torch.set_num_threads(before)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics/affine and conv/linear biases, so dead channels are not trivially
    harmless and norms are not identities. Returns ``model`` (its mode unchanged)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.5, generator=g)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.uniform_(-0.1, 0.1, generator=g)
    return model


@pytest.fixture(scope="session")
def resnet20_latency():
    """(model, latency table, space) of a random-init resnet20: a small table (batch 2, one
    thread, 2 rounds, 3 grid points per axis) timed once per session."""
    import autoprune
    from autoprune.latency import build_latency_table
    from autoprune.space import PruningSpace

    torch.manual_seed(0)
    model = autoprune.create_model("resnet20", 10, 32).eval()
    table = build_latency_table(model, 32, arch="resnet20", batch_size=2, threads=1, rounds=2, max_points=3)
    space = PruningSpace.from_model(model, torch.zeros(1, 3, 32, 32), arch="resnet20")
    return model, table, space
