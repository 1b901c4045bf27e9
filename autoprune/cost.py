"""FLOPs and params of pruning plans without building models, vectorized over many plans.

**FLOPs** here are multiply-adds (MACs) of conv and linear layers for one sample
at the space's input size: ``out_kept * in_kept / groups * kernel_area *
output_positions`` per conv call, ``out * in * positions`` per linear call, plus
the (frozen) functional conv/matmul ops of the graph. Norms, activations, pools
and residual adds are not counted. This equals ``FlopCounterMode``'s conv + mm
count / 2 (:func:`autoprune.flops.measured_macs`). **Params** are every
parameter of the model (``sum(p.numel())``), exactly as the pruned model has them.

Every term is a product of two *linear forms* in the group counts ``n``::

    cost = sum_t  w_t * (a_t . n + a0_t) * (b_t . n + b0_t)

(a conv's output side times its input side; a norm's params are ``2 * n_g``),
so a batch of plans costs two small matrix products. Terms of modules inside a
removed block are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from autoprune.space import PruningSpace, ResolvedLayer

Segs = tuple[tuple[int, int, int], ...]


@dataclass
class _Terms:
    """Dense coefficient matrices of a sum of products of linear forms."""

    a: np.ndarray  # (G, T)
    a0: np.ndarray  # (T,)
    b: np.ndarray  # (G, T)
    b0: np.ndarray  # (T,)
    w: np.ndarray  # (T,)
    blocks: np.ndarray  # (B, T) bool: term lies inside block

    def evaluate(self, n: np.ndarray, removed: np.ndarray | None) -> np.ndarray:
        # einsum, not @: tiny products are much faster without BLAS threads on busy machines
        left = np.einsum("pg,gt->pt", n, self.a) + self.a0
        right = np.einsum("pg,gt->pt", n, self.b) + self.b0
        prod = left * right
        if removed is not None and removed.any():
            dead = np.einsum("pb,bt->pt", removed.astype(np.float64), self.blocks) > 0
            prod = np.where(dead, 0.0, prod)
        return np.rint(np.einsum("pt,t->p", prod, self.w)).astype(np.int64)


class _TermBuilder:
    def __init__(self, n_groups: int, block_names: list[str]) -> None:
        self.g = n_groups
        self.block_names = block_names
        self.rows: list[tuple[dict[int, float], float, dict[int, float], float, float, str]] = []

    @staticmethod
    def form(segs: Segs | None, scale: float = 1.0) -> tuple[dict[int, float], float]:
        """Linear form of a layer dim: sum of mult * n_g over its segments (fixed ones constant)."""
        coef: dict[int, float] = {}
        const = 0.0
        for gi, size, mult in segs or ():
            if gi >= 0:
                coef[gi] = coef.get(gi, 0.0) + mult * scale
            else:
                const += size * mult * scale
        return coef, const

    def add(
        self,
        left: tuple[dict[int, float], float],
        right: tuple[dict[int, float], float],
        w: float,
        scope: str,
    ):
        if w:
            self.rows.append((left[0], left[1], right[0], right[1], float(w), scope))

    def build(self) -> _Terms:
        """Dense matrices, after merging terms: every term whose right side is the constant 1
        (or left side) folds into one linear term per block signature, and bilinear terms with
        equal forms add up, so a plan costs a handful of dot products."""
        merged: dict[tuple, list] = {}
        for ac, ak, bc, bk, wt, scope in self.rows:
            sig = tuple(
                j for j, name in enumerate(self.block_names) if scope == name or scope.startswith(name + ".")
            )
            if not bc or not ac:  # one side constant: linear in n
                (lin, k0), scale = ((ac, ak), bk) if not bc else ((bc, bk), ak)
                acc = merged.setdefault(("lin", sig), [{}, 0.0, {}, 1.0, 1.0, sig])
                for gi, c in lin.items():
                    acc[0][gi] = acc[0].get(gi, 0.0) + c * scale * wt
                acc[1] += k0 * scale * wt
                continue
            key = ("bi", sig, tuple(sorted(ac.items())), ak, tuple(sorted(bc.items())), bk)
            acc = merged.setdefault(key, [ac, ak, bc, bk, 0.0, sig])
            acc[4] += wt
        rows = list(merged.values())
        t = max(len(rows), 1)
        a, b = np.zeros((t, self.g)), np.zeros((t, self.g))
        a0, b0, w = np.zeros(t), np.zeros(t), np.zeros(t)
        blocks = np.zeros((len(self.block_names), t))
        for i, (ac, ak, bc, bk, wt, sig) in enumerate(rows):
            for gi, c in ac.items():
                a[i, gi] = c
            for gi, c in bc.items():
                b[i, gi] = c
            a0[i], b0[i], w[i] = ak, bk, wt
            blocks[list(sig), i] = 1.0
        return _Terms(np.ascontiguousarray(a.T), a0, np.ascontiguousarray(b.T), b0, w, blocks)


ONE = ({}, 1.0)


def _layer_flop_terms(tb: _TermBuilder, r: ResolvedLayer) -> None:
    layer = r.layer
    positions = float(sum(layer.positions))
    if layer.kind == "linear":
        tb.add(tb.form(r.out), tb.form(r.inp), positions, layer.name)
    elif layer.kind == "conv":
        right = ONE if layer.depthwise else tb.form(r.inp, 1.0 / layer.conv_groups)
        tb.add(tb.form(r.out), right, positions * layer.kernel, layer.name)


def _param_terms(tb: _TermBuilder, space: PruningSpace) -> None:
    for pname, owner, attr, shape in space.param_info:
        numel = float(np.prod(shape)) if shape else 1.0
        r = space.layers.get(owner)
        t = space.layers.get(pname)
        if t is not None and t.layer.kind == "tensor":
            size = shape[t.layer.axis]
            tb.add(tb.form(t.out), ONE, numel / size, pname)
        elif r is not None and attr in ("weight", "bias") and r.out is not None:
            layer = r.layer
            if layer.kind in ("conv", "linear") and attr == "weight":
                kernel = numel / (shape[0] * shape[1])
                if layer.kind == "conv" and layer.depthwise:
                    tb.add(tb.form(r.out), ONE, kernel, owner)
                else:
                    tb.add(tb.form(r.out), tb.form(r.inp, 1.0 / layer.conv_groups), kernel, owner)
            else:  # conv/linear bias, norm weight/bias, PReLU weight: one per output channel
                tb.add(tb.form(r.out), ONE, 1.0, owner)
        else:
            tb.add(ONE, ONE, numel, owner)


class CostModel:
    """Vectorized FLOPs/params of plans of one :class:`PruningSpace` (see the module docstring).

    ``channels`` arrays are int, shape (n_plans, n_groups) in ``space.groups`` order
    (a 1-D array is one plan); ``removed`` is an optional bool array (n_plans,
    n_blocks) over ``space.blocks``.
    """

    latency_model = None
    """An optional :class:`autoprune.latency.LatencyModel` of the same space; the budget
    projection sets it when it has a latency budget."""

    def __init__(self, space: PruningSpace) -> None:
        self.space = space
        names = [b.name for b in space.blocks]
        g = len(space.groups)
        fl, pa = _TermBuilder(g, names), _TermBuilder(g, names)
        for r in space.layers.values():
            _layer_flop_terms(fl, r)
        for scope, macs in space.extra_macs:
            fl.add(ONE, ONE, macs, scope)
        _param_terms(pa, space)
        self._flops, self._params = fl.build(), pa.build()
        full = space.max_counts
        low = space.min_counts
        self.dense_flops = int(self.flops(full)[0])
        self.dense_params = int(self.params(full)[0])
        self.min_flops = int(self.flops(low)[0])
        self.min_params = int(self.params(low)[0])

    @staticmethod
    def _prep(channels: np.ndarray, removed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        n = np.atleast_2d(np.asarray(channels, dtype=np.float64))
        if removed is not None:
            removed = np.atleast_2d(np.asarray(removed, dtype=bool))
        return n, removed

    def flops(self, channels: np.ndarray, removed: np.ndarray | None = None) -> np.ndarray:
        """MACs per sample of each plan (int64, shape (n_plans,))."""
        n, removed = self._prep(channels, removed)
        return self._flops.evaluate(n, removed)

    def params(self, channels: np.ndarray, removed: np.ndarray | None = None) -> np.ndarray:
        """Parameter count of each plan (int64, shape (n_plans,))."""
        n, removed = self._prep(channels, removed)
        return self._params.evaluate(n, removed)

    def cost(self, channels: np.ndarray, removed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.flops(channels, removed), self.params(channels, removed)
