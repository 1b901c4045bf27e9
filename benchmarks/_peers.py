"""Peer tools run the way the benchmarks compare against them (optional dependencies)."""

from __future__ import annotations

import copy

import torch

from autoprune.flops import measured_macs

BISECTION_STEPS = 14
MAX_RATIO = 0.95


def torch_pruning_at_flops(
    model: torch.nn.Module, example: torch.Tensor, flops: float, *, global_pruning: bool
) -> tuple[torch.nn.Module, float]:
    """Torch-Pruning's L1-magnitude pruning (``MagnitudePruner``, ``MagnitudeImportance(p=1)``,
    the last linear layer ignored; ``global_pruning``: one threshold over all layers, else the
    same ratio per layer) at the smallest pruning ratio whose pruned network's MACs
    (FlopCounterMode) are at or under ``flops`` x the dense model's, found by bisection.
    Returns (pruned copy, ratio). Raises ImportError without ``torch_pruning``."""
    import torch_pruning as tp

    target = flops * measured_macs(model, example)

    def pruned(ratio: float) -> tuple[torch.nn.Module, int]:
        m = copy.deepcopy(model).eval()
        last = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)][-1]
        pruner = tp.pruner.MagnitudePruner(
            m,
            example,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=ratio,
            global_pruning=global_pruning,
            ignored_layers=[last],
        )
        pruner.step()
        return m, measured_macs(m, example)

    lo, hi, best = 0.0, MAX_RATIO, None
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        m, macs = pruned(mid)
        if macs <= target:
            hi, best = mid, (m, mid)
        else:
            lo = mid
    if best is None:
        raise RuntimeError(f"no pruning ratio up to {MAX_RATIO} meets FLOPs {flops}")
    return best
