"""Measured latency: a wall-clock timer, per-layer latency tables, and a vectorized latency model.

* :func:`latency_ms`: one forward pass of a whole model, timed the same way everywhere
  it is reported (minimum or median over repeats).
* :func:`build_latency_table`: every prunable layer of a model, i.e. each conv chain
  ``conv [→ BN] [→ activation]`` as :func:`autoprune.fx.conv_chains` finds it (and every
  linear layer), timed on the target device with the real runtime (torch eager;
  channels_last on the CPU, CUDA events on a GPU) at a small grid of (in, out) widths.
  Layers of identical shape share one set of timings. The grid along an axis is made
  of multiples of that axis's *stair*: the channel period of the runtime's kernels
  (oneDNN blocks output channels by 16 on AVX-512), found by a fine width scan of one
  representative layer per kind (1×1, k×k, depthwise, linear). The non-prunable
  remainder (pools, residual adds, the ops outside chains) is the dense model's
  measured latency minus the sum of its layers' times, at least 0.
* :class:`LatencyTable`: the table as JSON (``"format": "autoprune.latency_table/1"``) with
  the device name, runtime and versions, threads, batch size and date; a table made on
  another device or runtime is refused (:meth:`LatencyTable.check_target`) unless forced.
  Times are monotone in width by construction (cumulative max along each axis), and
  interpolation is monotone too: a width is first raised to the top of its stair, then
  interpolated linearly between grid points.
* :class:`LatencyModel`: the predicted latency of many plans at once, like
  :class:`autoprune.cost.CostModel`: a layer's in-width is its input groups' channels, its
  out-width its output groups', read from the space's resolved layers.
* :func:`fit_table`: the table fitted to whole pruned networks timed end to end (a scale per
  layer kind and a remainder, :class:`LatencyFit`); a fitted table predicts with the fit.
* :func:`table_round_to`: per group, the channel multiple the table's stairs prefer.
"""

from autoprune.latency.build import (
    CALIBRATION_ROUNDS_FACTOR,
    MAX_POINTS,
    SCAN_MAX,
    SCAN_ROUNDS_FACTOR,
    SCAN_STEP,
    build_latency_table,
)
from autoprune.latency.fit import FIT_PLANS, fit_table
from autoprune.latency.measure import (
    FLATNESS,
    INNER,
    ROUNDS,
    RUNTIMES,
    STAIRS,
    allocator,
    check_runtime,
    detect_stair,
    device_name,
    latency_ms,
)
from autoprune.latency.model import LatencyModel, table_round_to, with_table_rounding
from autoprune.latency.table import FORMAT, KINDS, LatencyFit, LatencyTable, ShapeTiming

__all__ = [
    "CALIBRATION_ROUNDS_FACTOR",
    "FIT_PLANS",
    "FLATNESS",
    "FORMAT",
    "INNER",
    "KINDS",
    "MAX_POINTS",
    "ROUNDS",
    "RUNTIMES",
    "SCAN_MAX",
    "SCAN_ROUNDS_FACTOR",
    "SCAN_STEP",
    "STAIRS",
    "LatencyFit",
    "LatencyModel",
    "LatencyTable",
    "ShapeTiming",
    "allocator",
    "build_latency_table",
    "check_runtime",
    "detect_stair",
    "device_name",
    "fit_table",
    "latency_ms",
    "table_round_to",
    "with_table_rounding",
]
