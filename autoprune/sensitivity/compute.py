"""Computing sensitivities: the entry point, which ties the parts together.

Both paths score the same *variants* of each unit (one per seed for SR-init, one
per (seed, sigma) for SBPF; :mod:`.perturbation`) on the same images in the same
chunks (:mod:`.images`), and reduce per-image correctness and cross-entropy the
same way (:mod:`.job`, :mod:`.assemble`), so their values are equal whenever the
logits are: the cached path (:mod:`.cached`) only skips recomputing the clean
prefix in front of each unit that the naive reference (:mod:`.naive`) reruns.
Near-ties that the engine's rounding could flip are rescored by the plain model
(:mod:`.rescore`); adaptive mode (:mod:`.adaptive`) stops once the ranking of
the units is settled.

The arguments come in groups, each a small frozen dataclass: what to perturb
(:class:`Perturbation`), which images (:class:`Images`), when to stop early
(:class:`Adaptive`), how the passes run (:class:`Execution`) and what the JSON
records about the inputs (:class:`Provenance`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import Dataset

from autoprune.errors import AutopruneError
from autoprune.progress import SILENT, Reporter
from autoprune.sensitivity.adaptive import Adaptive, adaptive_config
from autoprune.sensitivity.assemble import assemble, assemble_bn_gamma, assemble_scored
from autoprune.sensitivity.cached import run_cached
from autoprune.sensitivity.engine import Engine
from autoprune.sensitivity.images import Data, Images, as_dataset, chunks, default_chunk, example, order
from autoprune.sensitivity.job import Job, Scores
from autoprune.sensitivity.naive import run_naive
from autoprune.sensitivity.perturbation import Perturbation
from autoprune.sensitivity.rescore import Rescore
from autoprune.sensitivity.scored import run_scored
from autoprune.sensitivity.units import Unit, units_from_space

if TYPE_CHECKING:
    from autoprune.sensitivity.result import Sensitivity
    from autoprune.space import PruningSpace


@dataclass(frozen=True)
class Execution:
    """How the passes run. ``naive``: rerun the whole network for every unit and variant (the
    reference). ``fold_bn``/``channels_last``/``fuse``: see :mod:`autoprune.sensitivity.engine`;
    all off (:meth:`plain`) with ``naive``: the plain module, the true baseline. ``kernels``
    (with ``fuse``): None fuses conv chains into :mod:`autoprune.kernels` ops on CUDA and into
    oneDNN calls on the CPU; a kernel backend (``auto``, ``torch``, ``triton``, ``numba``)
    forces the kernel ops on any device (a test and benchmark hook)."""

    naive: bool = False
    fold_bn: bool = True
    channels_last: bool = True
    fuse: bool = True
    device: torch.device | str = "cpu"
    kernels: str | None = None

    @classmethod
    def plain(cls, *, naive: bool = False, device: torch.device | str = "cpu") -> Execution:
        """No folding, fusion or channels-last: the plain module's arithmetic."""
        return cls(naive=naive, fold_bn=False, channels_last=False, fuse=False, device=device)

    @property
    def rewrites(self) -> bool:
        """Whether the engine's arithmetic may differ from the plain module's."""
        return self.fold_bn or self.channels_last or self.fuse


@dataclass(frozen=True)
class Provenance:
    """What the JSON records about the inputs. ``arch`` (default ``space.arch``) also picks
    SR-init's default initializer."""

    arch: str | None = None
    dataset: str | None = None
    checkpoint_sha256: str | None = None


_PERTURBATION, _IMAGES, _EXECUTION, _PROVENANCE = Perturbation(), Images(), Execution(), Provenance()


def compute_sensitivity(
    model: nn.Module,
    space: PruningSpace,
    data: Data | None = None,
    *,
    unit: str = "block",
    perturbation: Perturbation = _PERTURBATION,
    images: Images = _IMAGES,
    adaptive: bool | Adaptive = False,
    execution: Execution = _EXECUTION,
    provenance: Provenance = _PROVENANCE,
    reporter: Reporter = SILENT,
) -> Sensitivity:
    """Sensitivity of every unit of ``model`` (block or channel group of ``space``).

    ``data``: the search split, a Dataset of (image, label) or an (images, labels)
    pair (not needed by bn-gamma). ``adaptive``: True for the default :class:`Adaptive`.
    The argument groups are described in the module docstring.
    """
    start = time.perf_counter()
    cfg = adaptive_config(adaptive)
    if cfg is not None and execution.naive:
        raise AutopruneError("the naive reference evaluates every image; it has no adaptive mode")
    device = torch.device(execution.device)
    ref = copy.deepcopy(model).eval().to(device)
    units = units_from_space(space, unit, ref)
    header = _header(space, unit, perturbation.method, provenance, ref)
    if perturbation.method == "bn-gamma":
        return assemble_bn_gamma(ref, units, header, start)
    if data is None:
        raise AutopruneError(f"{perturbation.method} needs data (the search split)")
    dataset = as_dataset(data)
    arch = header["arch"]
    job, engine = _prepare(ref, units, dataset, perturbation, images, cfg, execution, arch, reporter)
    adaptive_record = None
    if execution.naive:
        run_naive(ref, engine, job)
    else:
        assert engine is not None
        adaptive_record = run_cached(engine, job, images.max_memory, cfg)
    engine_info = {
        "cached": not execution.naive,
        "fold_bn": execution.fold_bn,
        "channels_last": execution.channels_last,
        "fused": 0 if engine is None else engine.fused,
        "chunk": job.chunk,
        "device": str(device),
        "tie_tolerance": job.rescore.tolerance,
        "rescored": job.rescore.count,
    }
    if engine is not None and engine.kernels is not None:  # fused chains run as autoprune.kernels ops
        engine_info["kernels"] = engine.kernels
    run = {"images_available": len(dataset), "adaptive": adaptive_record, "engine": engine_info}
    return assemble(header, units, perturbation, job.scores, run, start)


def compute_sensitivity_naive(
    model: nn.Module, space: PruningSpace, data: Data, *, execution: Execution = _EXECUTION, **kwargs
) -> Sensitivity:
    """The naive reference: :func:`compute_sensitivity` with ``execution.naive`` set."""
    naive = dataclasses.replace(execution, naive=True)
    return compute_sensitivity(model, space, data, execution=naive, **kwargs)


def compute_sensitivity_scored(
    model: nn.Module,
    space: PruningSpace,
    score_fn: Callable[[nn.Module], float],
    *,
    unit: str = "block",
    perturbation: Perturbation = _PERTURBATION,
    device: torch.device | str = "cpu",
    provenance: Provenance = _PROVENANCE,
    reporter: Reporter = SILENT,
) -> Sensitivity:
    """Sensitivity by a user's metric (higher is better): Δ = score_fn(model) − score_fn(perturbed).

    Each unit's variants (:class:`Perturbation`) are swapped into a copy of ``model`` in place
    (:mod:`.scored`); ``score_fn`` gets that copy on ``device`` in eval mode under
    ``torch.no_grad()`` and must not change it. ``acc0`` holds the clean score; no loss fields.
    """
    start = time.perf_counter()
    ref = copy.deepcopy(model).eval().to(torch.device(device))
    units = units_from_space(space, unit, ref)
    header = _header(space, unit, perturbation.method, provenance, ref)
    if perturbation.method == "bn-gamma":
        return assemble_bn_gamma(ref, units, header, start)
    overrides = perturbation.overrides_for(ref, header["arch"])
    variants = perturbation.variants()
    score0, drops = run_scored(ref, units, variants, overrides, score_fn, reporter)
    engine = {"score_fn": True, "device": str(device)}
    return assemble_scored(header, units, perturbation, score0, drops, engine, start)


def _header(space: PruningSpace, unit: str, method: str, provenance: Provenance, ref: nn.Module) -> dict:
    """The JSON fields that describe the inputs."""
    return {
        "method": method,
        "unit": unit,
        "arch": provenance.arch or getattr(space, "arch", None),
        "input_size": getattr(space, "input_size", None),
        "num_classes": getattr(space, "num_classes", None),
        "checkpoint_sha256": provenance.checkpoint_sha256,
        "model_sha256": state_sha256(ref),
        "dataset": provenance.dataset,
    }


def _prepare(
    ref: nn.Module,
    units: list[Unit],
    dataset: Dataset,
    perturbation: Perturbation,
    images: Images,
    cfg: Adaptive | None,
    execution: Execution,
    arch: str | None,
    reporter: Reporter,
) -> tuple[Job, Engine | None]:
    """The job both paths run, and the engine (None: the plain module)."""
    device = torch.device(execution.device)
    raw_overrides = perturbation.overrides_for(ref, arch)
    variants = perturbation.variants()
    order_ = order(len(dataset), images.count, images.seed)
    example_ = example(dataset, order_)
    engine = None
    if not (execution.naive and not execution.rewrites):
        engine = Engine(
            ref,
            fold_bn=execution.fold_bn,
            channels_last=execution.channels_last,
            fuse=execution.fuse,
            example=example_,
            device=device,
            kernels=execution.kernels,
        )
    perturb = raw_overrides if engine is None else (lambda u, v: engine.derive(raw_overrides(u, v)))
    chunk = images.chunk
    if chunk is None:
        per_image = None if engine is None else engine.bytes_per_image(example_)
        chunk = default_chunk(ref, per_image, example_, images.max_memory, device)
    if cfg is not None:  # at most the adaptive check interval
        chunk = min(chunk, cfg.chunk)
    chunk = max(1, min(chunk, len(order_)))
    rescore = Rescore(ref, raw_overrides, device)
    if engine is not None and execution.rewrites:
        x, _ = next(chunks(dataset, order_, chunk))
        with torch.inference_mode():
            rescore.calibrate(engine.forward(engine.format(x)), x)
    scores = Scores(units, len(variants), len(order_))
    return Job(units, variants, perturb, dataset, order_, chunk, scores, rescore, reporter), engine


def state_sha256(model: nn.Module) -> str:
    """A hash of ``model``'s state (names, shapes, dtypes and bytes)."""
    h = hashlib.sha256()
    for key, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
