"""Prediction from a latency table: :class:`LatencyModel` (many plans at once) and the
channel rounding the table's stairs prefer. See :mod:`autoprune.latency`."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from autoprune.errors import AutopruneError
from autoprune.latency.table import KINDS, LatencyTable

if TYPE_CHECKING:
    from autoprune.space import PruningSpace


# -- prediction ----------------------------------------------------------------------


def _form(segs, n_groups: int) -> tuple[np.ndarray, float]:
    coef = np.zeros(n_groups)
    const = 0.0
    for gi, size, mult in segs or ():
        if gi >= 0:
            coef[gi] += mult
        else:
            const += size * mult
    return coef, const


class LatencyModel:
    """Predicted latency (ms) of plans of one space from a :class:`LatencyTable`, vectorized.

    ``latency_ms(channels)`` takes int counts (n_plans, n_groups) in ``space.groups`` order
    (a 1-D array is one plan) and an optional bool mask (n_plans, n_blocks) of removed blocks.
    The dense prediction equals the table's measured dense latency (unless the layers alone
    exceeded it, when the remainder is 0).
    """

    def __init__(self, space: PruningSpace, table: LatencyTable) -> None:
        self.space = space
        self.table = table
        g = len(space.groups)
        by_shape: dict[str, list[tuple[np.ndarray, float, np.ndarray, float, str]]] = {}
        for entry in table.layers:
            r = space.layers.get(entry["name"])
            shape = table.shapes[entry["shape"]]
            if r is None:
                raise AutopruneError(
                    f"the latency table names layer {entry['name']!r}, which this model does not have "
                    "(was the table built for another architecture?)"
                )
            a_out, c_out = _form(r.out, g) if r.out is not None else (np.zeros(g), float(shape.outs[-1]))
            a_in, c_in = _form(r.inp, g) if r.inp is not None else (np.zeros(g), float(shape.ins[-1]))
            full = space.max_counts.astype(np.float64)
            if shape.tied:
                a_in, c_in = a_out, c_out
            if a_out @ full + c_out != shape.outs[-1] or (
                not shape.tied and a_in @ full + c_in != shape.ins[-1]
            ):
                raise AutopruneError(
                    f"the latency table's layer {entry['name']!r} has other widths than this model's; "
                    "build the table for this model"
                )
            by_shape.setdefault(entry["shape"], []).append((a_in, c_in, a_out, c_out, entry["name"]))
        self._groups = []
        names = [b.name for b in space.blocks]
        for key, rows in by_shape.items():
            a_in = np.stack([r[0] for r in rows], axis=1)
            a_out = np.stack([r[2] for r in rows], axis=1)
            c_in = np.array([r[1] for r in rows])
            c_out = np.array([r[3] for r in rows])
            blocks = np.array(
                [[r[4] == b or r[4].startswith(b + ".") for r in rows] for b in names], dtype=np.float64
            ).reshape(len(names), len(rows))
            self._groups.append((table.shapes[key], a_in, c_in, a_out, c_out, blocks))
        self.remainder_ms = table.remainder_ms
        self.dense_ms = float(self.latency_ms(space.max_counts)[0])

    def kind_ms(self, channels: np.ndarray, removed: np.ndarray | None = None) -> np.ndarray:
        """The table's layer times of each plan summed per layer kind, unscaled: (n_plans,
        len(KINDS)), in :data:`~autoprune.latency.table.KINDS` order."""
        n = np.atleast_2d(np.asarray(channels, dtype=np.float64))
        out = np.zeros((len(n), len(KINDS)))
        dead_any = removed is not None and np.asarray(removed).any()
        for shape, a_in, c_in, a_out, c_out, blocks in self._groups:
            w_in = np.einsum("pg,ge->pe", n, a_in) + c_in
            w_out = np.einsum("pg,ge->pe", n, a_out) + c_out
            t = shape.interpolate(w_in, w_out)
            if dead_any:
                rm = np.atleast_2d(np.asarray(removed, dtype=np.float64))
                t = np.where(np.einsum("pb,be->pe", rm, blocks) > 0, 0.0, t)
            out[:, KINDS.index(shape.spec["kind"])] += t.sum(axis=1)
        return out

    def latency_ms(self, channels: np.ndarray, removed: np.ndarray | None = None) -> np.ndarray:
        """Predicted ms per plan (float64, shape (n_plans,)): with the table's whole-network fit
        (:mod:`autoprune.latency.fit`), its remainder plus each kind's layers times its scale;
        without one, the measured remainder plus the layers times ``layer_scale``."""
        per_kind = self.kind_ms(channels, removed)
        fit = self.table.fit
        if fit is None:
            return self.remainder_ms + self.table.layer_scale * per_kind.sum(axis=1)
        scales = [fit.scale.get(k, self.table.layer_scale) for k in KINDS]
        return fit.remainder_ms + per_kind @ np.array(scales)

    def ratio(self, channels: np.ndarray, removed: np.ndarray | None = None) -> np.ndarray:
        """Predicted latency as a fraction of the dense model's."""
        return self.latency_ms(channels, removed) / self.dense_ms


def table_round_to(space: PruningSpace, table: LatencyTable) -> dict[str, int]:
    """Per group, the channel multiple its layers' stairs prefer (the widths at the top of
    each flat stair, where more channels cost nothing more): the largest output stair period
    among the layers that produce it, halved until the group has at least two stairs."""
    prefer: dict[int, int] = {}
    for entry in table.layers:
        r = space.layers.get(entry["name"])
        shape = table.shapes.get(entry["shape"])
        if r is None or shape is None:
            continue
        for gi, _, _ in r.out or ():
            if gi >= 0:
                prefer[gi] = max(prefer.get(gi, 1), shape.out_stair)
    out = {}
    for gi, g in enumerate(space.groups):
        p = prefer.get(gi, g.round_to)
        while p > 1 and g.channels < 2 * p:
            p //= 2
        out[g.id] = max(p, 1)
    return out


def with_table_rounding(space: PruningSpace, table: LatencyTable) -> PruningSpace:
    """``space`` with each group's ``round_to`` chosen by :func:`table_round_to`."""
    chosen = table_round_to(space, table)
    return replace(space, groups=[replace(g, round_to=chosen[g.id]) for g in space.groups])
