"""Which images, in which order and chunks: the search split as every path reads it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from autoprune.errors import AutopruneError

DEFAULT_MAX_MEMORY = 4 * 2**30
"""4 GiB for cached activations and one pass: a sixth of a 24 GB machine."""
MAX_CHUNK = 1024
"""The largest chunk on other devices (a GPU wants large batches; not tuned, no GPU here)."""
CPU_CHUNK = 128
"""The largest default chunk on CPU."""
CPU_CHUNK_BYTES = 32 * 2**20
"""On CPU the default chunk is the largest power of two (up to ``CPU_CHUNK``) whose largest
activation fits this: past it the activations leave the caches and each image costs more.
It puts resnet56 (64 KiB per image at 32x32) at 128 images and mobilenetv2 (576 KiB) at
32, at or next to the fastest cached chunk of each (benchmarks/RESULTS.md)."""

Data = Dataset | tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Images:
    """``count``: the first ``count`` images (default all) of a permutation seeded by
    ``seed``. ``chunk``: images per pass (default: :func:`default_chunk`).
    ``max_memory``: bytes for cached activations plus one pass; caps the default chunk."""

    count: int | None = None
    seed: int = 0
    chunk: int | None = None
    max_memory: int = DEFAULT_MAX_MEMORY

    def __post_init__(self) -> None:
        if self.count is not None and self.count < 1:
            raise AutopruneError(f"images must be >= 1, got {self.count}")
        if self.max_memory < 1:
            raise AutopruneError(f"max_memory must be positive, got {self.max_memory}")
        if self.chunk is not None and self.chunk < 1:
            raise AutopruneError(f"chunk size must be >= 1, got {self.chunk}")


def as_dataset(data: Data) -> Dataset:
    if isinstance(data, tuple):
        images, labels = data
        if len(images) != len(labels):
            raise AutopruneError(f"{len(images)} images but {len(labels)} labels")
        return TensorDataset(images, labels)
    return data


def order(n: int, images: int | None, seed: int) -> list[int]:
    """A seeded permutation of the data, cut to ``images``."""
    if n == 0:
        raise AutopruneError("the data is empty")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return perm[: min(images or n, n)]


def example(dataset: Dataset, order: list[int]) -> torch.Tensor:
    """Two copies of the first image: a batch for shape and memory probes."""
    x = torch.as_tensor(dataset[order[0]][0])
    return torch.stack([x, x])


def default_chunk(
    ref: nn.Module, bytes_per_image: int | None, example: torch.Tensor, max_memory: int, device: torch.device
) -> int:
    """Images per chunk when none is given: cache-sized on CPU (``CPU_CHUNK_BYTES``), large
    elsewhere, and within ``max_memory`` for the engine's cache plus one pass
    (``bytes_per_image``; None: no engine). The plain naive path gets the same chunk unless
    ``max_memory`` caps the engine's. ``ref`` is on ``device``."""
    if device.type == "cpu":
        fit = max(1, CPU_CHUNK_BYTES // largest_activation(ref, example))
        chunk = min(CPU_CHUNK, 1 << (fit.bit_length() - 1))
    else:
        chunk = MAX_CHUNK
    if bytes_per_image is not None:
        chunk = min(chunk, int(max_memory // (bytes_per_image * 1.25)))
    return max(1, chunk)


def largest_activation(model: nn.Module, example: torch.Tensor) -> int:
    """Bytes per image of the largest tensor any module of ``model`` returns on ``example``
    (both on the same device)."""
    largest = example[0].numel() * example.element_size()

    def record(_module: nn.Module, _inputs: object, out: object) -> None:
        nonlocal largest
        if isinstance(out, torch.Tensor) and out.dim() > 0 and len(out) == len(example):
            largest = max(largest, out[0].numel() * out.element_size())

    handles = [m.register_forward_hook(record) for m in model.modules()]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return largest


def chunks(dataset: Dataset, order: list[int], size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) batches of ``size`` in ``order``."""
    from autoprune.data import make_loader

    if isinstance(dataset, TensorDataset):
        images, labels = dataset.tensors
        for i in range(0, len(order), size):
            idx = torch.tensor(order[i : i + size])
            yield images[idx], labels[idx]
        return
    yield from make_loader(Subset(dataset, order), size)
