"""autoprune: find per-layer channel counts under a FLOPs/params budget and build the smaller net.

From Python: ``autoprune.search(model, example_input, flops=0.5, train_loader=..., score_fn=...)``,
``autoprune.sensitivity(model, example_input, loader_or_score_fn)`` and
``autoprune.prune(model, plan)`` (:mod:`autoprune.api`). ``autoprune.search`` and
``autoprune.sensitivity`` are also the subpackages of those names: calling one runs
:func:`autoprune.api.search` / :func:`autoprune.api.sensitivity` (imported on first call, so
``import autoprune`` stays light), and ``autoprune.search.proxies`` etc. import as before.
"""

import types

from autoprune import cost, flops, search, sensitivity
from autoprune.errors import AutopruneError
from autoprune.models import available_models, create_model
from autoprune.plan import Plan
from autoprune.progress import ProgressEvent, Reporter
from autoprune.space import Block, Group, PruningSpace
from autoprune.surgery import (
    PruneResult,
    apply_plan,
    dead_channel_model,
    export_onnx,
    export_torchscript,
    load_pruned,
    module_out_masks,
    save_pruned,
)
from autoprune.version import __version__


class _CallablePackage(types.ModuleType):
    """A subpackage that is also the API function of its name (``autoprune.api.<name>``)."""

    def __call__(self, *args, **kwargs):
        from autoprune import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


search.__class__ = _CallablePackage
sensitivity.__class__ = _CallablePackage


def prune(model, plan, criterion="l1", *, example_input=None, loader=None):
    """:func:`autoprune.api.prune`: the physically smaller ``model`` that ``plan`` describes."""
    from autoprune.api import prune as run

    return run(model, plan, criterion, example_input=example_input, loader=loader)


def __getattr__(name: str):
    if name == "SearchResult":  # the API's result, without importing Optuna at `import autoprune`
        from autoprune.api import SearchResult

        return SearchResult
    raise AttributeError(f"module 'autoprune' has no attribute {name!r}")


__all__ = [
    "AutopruneError",
    "Block",
    "Group",
    "Plan",
    "PruneResult",
    "ProgressEvent",
    "PruningSpace",
    "Reporter",
    "SearchResult",
    "__version__",
    "apply_plan",
    "available_models",
    "cost",
    "create_model",
    "dead_channel_model",
    "export_onnx",
    "export_torchscript",
    "flops",
    "load_pruned",
    "module_out_masks",
    "prune",
    "save_pruned",
    "search",
    "sensitivity",
]
