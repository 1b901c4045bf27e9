"""The cached (fast) path: every variant of a unit runs from the clean prefix cached at its cut.

Per chunk of images: advance the clean pass from cut to cut (a cut is the first
graph node that reads a unit's tensors; units are visited in network order); at
each cut run every variant of every unit there from the cached live values to
the logits; finish the clean pass for acc0. All seeds of a unit share the cached
prefix, the generated sub-modules are built once per cut and the perturbed
tensors once per (unit, variant). Memory holds one cut's values per chunk plus
one pass's working set; ``max_memory`` sets the chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from autoprune.sensitivity.adaptive import Adaptive, Stopper
from autoprune.sensitivity.engine import Engine
from autoprune.sensitivity.images import chunks
from autoprune.sensitivity.job import Job
from autoprune.sensitivity.perturbation import Variant
from autoprune.sensitivity.units import Overrides, Unit


def run_cached(engine: Engine, job: Job, max_memory: int, cfg: Adaptive | None) -> dict | None:
    """Prefix-cached passes, chunk by chunk (see the module docstring); the adaptive record."""
    units, variants, chunk, order = job.units, job.variants, job.chunk, job.order
    scores, rescore, reporter = job.scores, job.rescore, job.reporter
    cache = OverrideCache(job.perturb, budget=max_memory // 4)
    cuts = {u.id: engine.cut_for(cache.get(u, variants[0], 0)) for u in units}
    by_cut = sorted(units, key=lambda u: (cuts[u.id], units.index(u)))
    n_chunks = -(-len(order) // chunk)
    stop = Stopper(cfg) if cfg is not None else None
    reporter.start("sensitivity", len(units) * n_chunks)
    with torch.inference_mode():
        for ci, (raw, y) in enumerate(chunks(job.dataset, order, chunk)):
            at = ci * chunk
            x, y = engine.format(raw), y.to(engine.device)
            values, pos, tail = [x], 0, []
            for u in by_cut:
                cut = cuts[u.id]
                if cut == engine.end:  # reads nothing the engine runs: equals the clean model
                    tail.append(u)
                    continue
                if cut != pos:
                    values, pos = list(engine.run(pos, cut, values)), cut
                for vi, v in enumerate(variants):
                    logits = engine.run(cut, engine.end, values, cache.get(u, v, vi))
                    scores.unit(u.id, vi, at, rescore(logits, raw, y, u, v), y)
                reporter.advance(1, unit=u.id, images=at + len(y))
            logits0 = rescore(engine.run(pos, engine.end, values), raw, y)
            scores.clean(at, logits0, y)
            for u in tail:
                for vi in range(len(variants)):
                    scores.unit(u.id, vi, at, logits0, y)
                reporter.advance(1, unit=u.id)
            if stop is not None and stop.settled(scores):
                reporter.advance(len(units) * (n_chunks - ci - 1))
                break
    reporter.finish()
    return None if stop is None else stop.record(len(order))


class OverrideCache:
    """Perturbed engine tensors per (unit, variant), kept while they fit ``budget`` bytes."""

    def __init__(self, perturb: Callable[[Unit, Variant], Overrides], budget: int) -> None:
        self.perturb, self.budget, self.used = perturb, budget, 0
        self.store: dict[tuple[str, int], Overrides] = {}

    def get(self, u: Unit, v: Variant, vi: int) -> Overrides:
        key = (u.id, vi)
        hit = self.store.get(key)
        if hit is not None:
            return hit
        value = self.perturb(u, v)
        size = sum(t.numel() * t.element_size() for t in value.values())
        if self.used + size <= self.budget:
            self.store[key] = value
            self.used += size
        return value
