"""autoprune: find per-layer channel counts under a FLOPs/params budget and build the smaller net."""

__version__ = "0.1.0"

from autoprune import cost
from autoprune.errors import AutopruneError
from autoprune.models import available_models, create_model
from autoprune.plan import Plan
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

__all__ = [
    "AutopruneError",
    "Block",
    "Group",
    "Plan",
    "PruneResult",
    "PruningSpace",
    "__version__",
    "apply_plan",
    "available_models",
    "cost",
    "create_model",
    "dead_channel_model",
    "export_onnx",
    "export_torchscript",
    "load_pruned",
    "module_out_masks",
    "save_pruned",
]
