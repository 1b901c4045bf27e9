"""A resolved *model source*: what the search and sensitivity jobs need once their inputs are known.

The CLI's names (``--arch``, ``--dataset``, ``--checkpoint``) and the Python API's objects (a
model, an example input, DataLoaders, a ``score_fn``) both resolve to a :class:`ModelSource`:
the dense model, its :class:`~autoprune.space.PruningSpace`, the batches BN recalibration
draws from, the search batches or score function a candidate is scored by, and provenance
(the checkpoint and its sha256, or the in-memory model's state hash). Everything after
that point is one code path (:mod:`autoprune.jobs.search`, :mod:`autoprune.jobs.sensitivity`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.data import EvalBatches
from autoprune.errors import AutopruneError
from autoprune.search.proxies import Proxy, ScoreFnProxy, create_proxy
from autoprune.space import PruningSpace

ScoreFn = Callable[[nn.Module], float]
"""``score_fn(model) -> float``, higher is better (a detector's mAP, minus a regression loss)."""

PYTHON_SOURCE = "python"
"""``source`` of a study made by :func:`autoprune.search` on an in-memory model (workers refuse it)."""


@dataclass
class ModelSource:
    """The dense model and the data a job scores it on, resolved.

    ``recal``: batches BN statistics are re-estimated on (only their images are used);
    ``search``: labelled batches for top-1, or None when ``score_fn`` scores candidates;
    ``train``: re-iterable (images, labels) training batches the re-rank fine-tunes on (None:
    a study that re-ranks cannot run on this source);
    ``provenance``: arch, dataset, input_size, num_classes, checkpoint (a path or None),
    checkpoint_sha256, model_sha256 — what the study and the JSON files record.
    """

    model: nn.Module
    space: PruningSpace
    recal: EvalBatches
    search: EvalBatches | None = None
    score_fn: ScoreFn | None = None
    train: Iterable | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def checkpoint(self) -> Path | None:
        path = self.provenance.get("checkpoint")
        return None if path is None else Path(path)

    def proxy(self, name: str, device: torch.device, criterion: str, **options: Any) -> Proxy:
        """The proxy that scores candidates of this source: ``score_fn`` when given, else ``name``."""
        if self.score_fn is not None:
            if name != "recal":
                raise AutopruneError(f"a score_fn is scored with the recal proxy, not {name!r}")
            return ScoreFnProxy(
                self.model, self.space, self.recal, self.score_fn, device=device, criterion=criterion
            )
        if self.search is None:
            raise AutopruneError("no search batches and no score_fn: nothing to score candidates by")
        return create_proxy(
            name, self.model, self.space, self.recal, self.search, device, criterion, **options
        )


def images_of(batch: Any) -> torch.Tensor:
    """The images of one DataLoader item: the item itself, or its first element."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    if not isinstance(x, torch.Tensor):
        raise AutopruneError(
            f"a loader must yield image tensors or (images, ...) tuples, got {type(x).__name__}"
        )
    return x


def recal_batches(loader: Iterable, count: int) -> EvalBatches:
    """The first ``count`` batches of ``loader`` for BN recalibration (images only; labels unused)."""
    images = [images_of(b) for b in itertools.islice(iter(loader), count)]
    if not images:
        raise AutopruneError("train_loader yielded no batches (BN recalibration draws from it)")
    return EvalBatches([(x, torch.zeros(len(x), dtype=torch.long)) for x in images])


def labelled_batches(loader: Iterable, limit: int | None = None) -> EvalBatches:
    """(images, labels) batches of ``loader``, up to ``limit`` images (all when None)."""
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    seen = 0
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise AutopruneError("search_loader must yield (images, labels) batches (or pass score_fn)")
        x, y = images_of(batch), torch.as_tensor(batch[1])
        if limit is not None and seen + len(x) > limit:
            x, y = x[: limit - seen], y[: limit - seen]
        if len(x):
            out.append((x, y))
        seen += len(x)
        if limit is not None and seen >= limit:
            break
    if not out:
        raise AutopruneError("search_loader yielded no images")
    return EvalBatches(out)


def score_fn_name(score_fn: ScoreFn | None) -> str | None:
    """What a study and best_trial.json record about a score function (its qualified name)."""
    if score_fn is None:
        return None
    module = getattr(score_fn, "__module__", None) or "?"
    return f"{module}:{getattr(score_fn, '__qualname__', type(score_fn).__name__)}"
