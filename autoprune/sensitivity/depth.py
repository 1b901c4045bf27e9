"""Depth pruning from block sensitivities (SR-init's own use).

:func:`select_blocks_to_remove` picks the blocks to drop; :func:`depth_plan`
turns them into a :class:`autoprune.Plan` that keeps every channel and lists the
blocks in ``removed_blocks`` (``autoprune.apply_plan`` replaces them by identity).
A block whose input and output shapes differ (``removable`` false: the first
block of a stage) is never selected.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from autoprune.errors import AutopruneError
from autoprune.sensitivity.result import Sensitivity

if TYPE_CHECKING:
    from autoprune.plan import Plan
    from autoprune.space import PruningSpace


def select_blocks_to_remove(sens: Sensitivity, tau: float | None = None, k: int | None = None) -> list[str]:
    """Removable blocks with ``delta <= tau``, or the ``k`` least sensitive ones (network order).

    Exactly one of ``tau`` and ``k`` must be given. Ties in ``delta`` are broken
    by the smaller cross-entropy rise, then by network order. Asking for more
    blocks than are removable is an error that says how many are.
    """
    if sens.unit != "block":
        raise AutopruneError(
            f"depth pruning needs block sensitivities, this one is per {sens.unit} (use --unit block)"
        )
    if sens.method == "bn-gamma":
        raise AutopruneError("depth pruning needs a data-driven drop (sr-init or sbpf), not bn-gamma")
    if (tau is None) == (k is None):
        raise AutopruneError("give exactly one of --prune-blocks TAU and --remove K")
    candidates = [u for u in sens.units if u.removable and not math.isnan(u.delta)]
    if tau is not None:
        chosen = {u.id for u in candidates if u.delta <= tau}
    else:
        check_removal_count(k, len(candidates), len(sens.units))
        ranked = sorted(
            range(len(candidates)),
            key=lambda i: (candidates[i].delta, _loss(candidates[i].loss_delta), i),
        )
        chosen = {candidates[i].id for i in ranked[:k]}
    return [u.id for u in sens.units if u.id in chosen]


def check_removal_count(k: int, removable: int, blocks: int) -> None:
    """AutopruneError unless ``k`` blocks can be removed (called before computing, to fail fast)."""
    if k < 0:
        raise AutopruneError(f"--remove must be >= 0, got {k}")
    if k > removable:
        raise AutopruneError(
            f"cannot remove {k} blocks: only {removable} of {blocks} are removable "
            "(the first block of each stage changes the shape)"
        )


def _loss(value: float | None) -> float:
    return 0.0 if value is None or math.isnan(value) else value


def depth_plan(
    space: PruningSpace, sens: Sensitivity, tau: float | None = None, k: int | None = None
) -> Plan:
    """A full-width :class:`autoprune.Plan` of ``space`` that removes the selected blocks."""
    from autoprune.sensitivity.result import check_against

    check_against(sens, space)
    return space.uniform(1.0, removed_blocks=select_blocks_to_remove(sens, tau=tau, k=k))
