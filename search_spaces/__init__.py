"""Per-architecture overrides of the pruning space's defaults, and the one way to build a space.

A file ``<arch>.json`` here may set ``round_to`` (an int for every group, or a map
group id -> int) and ``min_channels``; any other model gets the defaults of
:meth:`autoprune.PruningSpace.from_model`. The search, ``apply`` and the
sensitivity all build their space through :func:`space_for`, so a plan found by
one always validates in the others.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import torch
from torch import nn

from autoprune.errors import AutopruneError
from autoprune.space import PruningSpace

FORMAT = "autoprune.search_space/1"
_KEYS = {"format", "arch", "round_to", "min_channels", "note"}


def overrides_for(arch: str) -> dict[str, Any]:
    """The override file of ``arch`` as a dict ({} when there is none)."""
    name = f"{arch.replace(':', '_').replace('/', '_')}.json"
    entry = resources.files(__name__).joinpath(name)
    if not entry.is_file():
        return {}
    data = json.loads(entry.read_text())
    unknown = set(data) - _KEYS
    if data.get("format") != FORMAT or unknown:
        raise AutopruneError(
            f"search space file {name} is invalid (format {data.get('format')!r}, keys {unknown})"
        )
    return data


def space_for(model: nn.Module, arch: str, input_size: int, num_classes: int) -> PruningSpace:
    """Trace ``model`` at ``input_size`` with ``arch``'s overrides applied."""
    options = overrides_for(arch)
    return PruningSpace.from_model(
        model,
        torch.zeros(1, 3, input_size, input_size),
        arch=arch,
        num_classes=num_classes,
        round_to=options.get("round_to"),
        min_channels=options.get("min_channels", 1),
    )
