"""Which blocks and channel groups of a trained network matter: SR-init, SBPF, BN-gamma.

Library use::

    space = autoprune.PruningSpace.from_model(model, torch.zeros(1, 3, 32, 32), arch="resnet56")
    sens = compute_sensitivity(model, space, splits.search, unit="block",
                               perturbation=Perturbation("sr-init", seeds=3), images=Images(count=2000))
    sens.save("sens.json"); save_chart(sens, "sens.png")
    plan = depth_plan(space, sens, k=4)          # SR-init depth pruning -> Plan.removed_blocks

Units (:mod:`.units`): ``block`` = ``space.blocks`` (modules with a residual
sum), ``group`` = ``space.groups`` (the producer side of a channel group).
Methods: ``sr-init`` (redraw with the architecture's initializer, norms reset,
delta = top-1 drop on the search split), ``sbpf`` (relative Gaussian weight
noise at several sigmas), ``bn-gamma`` (mean |gamma|, no data). The fast path
(:mod:`.cached`, :mod:`.engine`) caches the clean prefix in front of each unit
and gives the naive method's (:mod:`.naive`) values exactly (same seeds, images
and arithmetic); :mod:`.compute` holds the entry point and its argument groups.

JSON (``"format": "autoprune.sensitivity/1"``)::

    {
      "format": "autoprune.sensitivity/1",
      "method": "sr-init" | "sbpf" | "bn-gamma",
      "unit": "block" | "group",
      "arch": "resnet56", "input_size": 32, "num_classes": 10,
      "dataset": "fashion-mnist", "split": "search",
      "seeds": [0, 1, 2],                   # [] for bn-gamma
      "sigmas": [0.1, 0.25, 0.5] | null,    # sbpf only
      "images": 2000,                       # images evaluated (adaptive: the most any unit used)
      "images_available": 6000,             # size of the split
      "adaptive": null | {"chunk": 128, "min_images": 256, "target": 0.95, "quantile": 0.1,
                          "resamples": 200, "seed": 0, "stability": 0.96, "stopped": "settled" | "budget"},
      "acc0": 0.91, "loss0": 0.25,          # clean top-1 / cross-entropy on those images (null: bn-gamma)
      "checkpoint_sha256": "..." | null,    # of the dense checkpoint file
      "model_sha256": "...",                # of the model's state (names, shapes, bytes)
      "engine": {"cached": true, "fold_bn": true, "channels_last": true, "chunk": 1024, "device": "cpu"},
      "seconds": 81.2,
      "units": [                            # network order
        {"id": "layer1.0", "kind": "block", "stage": 0,
         "removable": true,                                     # blocks only
         "delta": 0.031, "std": 0.004,                          # top-1 drop (bn-gamma: mean |gamma|)
         "per_seed": [0.027, 0.035, 0.031],
         "loss_delta": 0.12, "loss_per_seed": [...],            # cross-entropy rise (null: bn-gamma)
         "images": 2000,                                        # images this unit used
         "per_sigma": {"0.1": 0.0, "0.25": 0.01, "0.5": 0.05}}  # sbpf only: mean over seeds
      ]
    }

A drop is ``acc0 - acc`` over the unit's images; ``delta``/``loss_delta`` are
the means of the per-seed values, ``std`` their sample standard deviation
(0 with one seed). For SBPF a seed's value is the mean over sigmas of that
seed's draws. NaN is written as null. :func:`load_sensitivity` reads and
validates a file (against a ``PruningSpace`` if given).
"""

from autoprune.sensitivity.adaptive import Adaptive
from autoprune.sensitivity.chart import save_chart
from autoprune.sensitivity.compute import (
    Execution,
    Provenance,
    compute_sensitivity,
    compute_sensitivity_naive,
    compute_sensitivity_scored,
    state_sha256,
)
from autoprune.sensitivity.depth import depth_plan, select_blocks_to_remove
from autoprune.sensitivity.engine import Engine
from autoprune.sensitivity.images import DEFAULT_MAX_MEMORY, Images
from autoprune.sensitivity.perturbation import DEFAULT_SIGMAS, Perturbation
from autoprune.sensitivity.result import (
    FORMAT,
    METHODS,
    Sensitivity,
    UnitSensitivity,
    check_against,
    load_sensitivity,
)
from autoprune.sensitivity.units import (
    UNIT_KINDS,
    Unit,
    bn_gamma_value,
    sbpf_overrides,
    sr_init_overrides,
    units_from_space,
)

__all__ = [
    "DEFAULT_MAX_MEMORY",
    "DEFAULT_SIGMAS",
    "FORMAT",
    "METHODS",
    "UNIT_KINDS",
    "Adaptive",
    "Engine",
    "Execution",
    "Images",
    "Perturbation",
    "Provenance",
    "Sensitivity",
    "Unit",
    "UnitSensitivity",
    "bn_gamma_value",
    "check_against",
    "compute_sensitivity",
    "compute_sensitivity_naive",
    "compute_sensitivity_scored",
    "depth_plan",
    "load_sensitivity",
    "save_chart",
    "sbpf_overrides",
    "select_blocks_to_remove",
    "sr_init_overrides",
    "state_sha256",
    "units_from_space",
]
