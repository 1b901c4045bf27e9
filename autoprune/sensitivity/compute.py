"""Computing sensitivities: the cached (fast) path, the naive reference, adaptive stopping.

Both paths score the same *variants* of each unit (one per seed for SR-init, one
per (seed, sigma) for SBPF) on the same images in the same chunks, and reduce
per-image correctness and cross-entropy the same way, so their values are equal
whenever the logits are: the cached path only skips recomputing the clean
prefix in front of each unit.

Cached path, per chunk of images: advance the clean pass from cut to cut (a cut
is the first graph node that reads a unit's tensors; units are visited in
network order); at each cut run every variant of every unit there from the
cached live values to the logits; finish the clean pass for acc0. All seeds of
a unit share the cached prefix, the generated sub-modules are built once per cut
and the perturbed tensors once per (unit, variant). Memory holds one cut's
values per chunk plus one pass's working set; ``max_memory`` sets the chunk.

Near-ties: folding and fusion change the last bits of the logits (by at most
2.1e-6 of ``1 + max |logit|`` on the benchmark's trained resnet56 and
mobilenetv2), enough to flip top-1 on an image whose label logit and best other
logit are closer than that. Before the run, the engine's and the plain model's
logits on the first chunk are compared; the tolerance is ``TIE_FACTOR`` times the
largest deviation seen, at least ``TIE_TOLERANCE``. Whenever a chunk's engine
logits hold an image within the tolerance of a flip, that chunk is scored again
by the plain model, with the arithmetic and chunking of the naive method; top-1 Δ
therefore equals the naive method's. The JSON records the tolerance and the
rescored passes (at most 1.2 % of them on the benchmark models).

Adaptive mode (:class:`Adaptive`): every ``chunk`` images (from ``min_images``
on; the engine's own chunks may be smaller) the ranking of the units is tested for
stability by a paired bootstrap over the images seen so far: ``resamples``
resamples of those images give resampled per-unit drops, each is ranked, and
its Spearman correlation with the current ranking is taken. The ranking is
*settled* when the ``quantile`` (default the 10th percentile) of those
correlations reaches ``target`` (0.95): a fresh sample of as many images would,
nine times in ten, rank the units at least that similarly. The run stops there
or when the image budget is spent; the JSON records the images used, the final
stability and why it stopped. A pairwise rule (stop when the 95 % intervals of
neighbours separate) never stops when two units are truly equal, and the
bootstrap accounts for every pair at once, with the images' pairing.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from autoprune.errors import AutopruneError
from autoprune.progress import SILENT, Reporter
from autoprune.sensitivity.engine import Engine
from autoprune.sensitivity.result import METHODS, Sensitivity, UnitSensitivity
from autoprune.sensitivity.units import (
    Initializer,
    Overrides,
    Unit,
    bn_gamma_value,
    sbpf_overrides,
    sr_init_overrides,
    units_from_space,
)

if TYPE_CHECKING:
    from autoprune.space import PruningSpace

DEFAULT_SIGMAS = (0.1, 0.25, 0.5)
TIE_TOLERANCE = 2e-5
"""The least near-tie tolerance, as a fraction of ``1 + max |logit|`` (see the module docstring)."""
TIE_FACTOR = 10.0
"""The near-tie tolerance over the largest engine-vs-plain deviation measured on the first chunk."""
DEFAULT_MAX_MEMORY = 4 * 2**30
"""4 GiB for cached activations and one pass: a sixth of a 24 GB machine."""
MAX_CHUNK = 1024
"""The largest chunk on other devices (a GPU wants large batches; not tuned, no GPU here)."""
CPU_CHUNK = 128
"""The largest default chunk on CPU."""
CPU_CHUNK_BYTES = 32 * 2**20
"""On CPU the default chunk is the largest power of two (up to ``CPU_CHUNK``) whose largest
activation fits this: past it the activations leave the caches and each image costs more.
It puts resnet56 (64 KiB per image at 32x32) at 128 images and mobilenetv2 (576 KiB) at
32, at or next to the fastest cached chunk of each (benchmarks/RESULTS.md)."""


@dataclass(frozen=True)
class Adaptive:
    """Adaptive sample size: see the module docstring."""

    chunk: int = 128
    min_images: int = 256
    target: float = 0.95
    quantile: float = 0.1
    resamples: int = 200
    seed: int = 0


@dataclass(frozen=True)
class _Variant:
    seed: int
    sigma: float | None


Data = Dataset | tuple[torch.Tensor, torch.Tensor]


def compute_sensitivity(
    model: nn.Module,
    space: PruningSpace,
    data: Data | None = None,
    *,
    method: str = "sr-init",
    unit: str = "block",
    seeds: int | Sequence[int] = 3,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    images: int | None = None,
    arch: str | None = None,
    initializer: Initializer | None = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
    chunk_size: int | None = None,
    adaptive: bool | Adaptive = False,
    fold_bn: bool = True,
    channels_last: bool = True,
    fuse: bool = True,
    device: torch.device | str = "cpu",
    data_seed: int = 0,
    naive: bool = False,
    checkpoint_sha256: str | None = None,
    dataset: str | None = None,
    reporter: Reporter = SILENT,
) -> Sensitivity:
    """Sensitivity of every unit of ``model`` (block or channel group of ``space``).

    ``data``: the search split, a Dataset of (image, label) or an (images, labels)
    pair; the first ``images`` of a seeded permutation (``data_seed``) are used.
    ``method``: sr-init, sbpf or bn-gamma (no data). ``seeds``: a count (seeds
    0..n-1) or explicit seeds. ``initializer``: SR-init's redraw, default the
    architecture's own (:func:`autoprune.models.initializer_for`). ``naive``:
    rerun the whole network for every unit and variant (the reference).
    ``fold_bn``/``channels_last``/``fuse``: see :mod:`autoprune.sensitivity.engine`
    (all off + ``naive``: the plain module, the true baseline).
    """
    start = time.perf_counter()
    seed_list = _seed_list(seeds)
    sigma_list = [float(s) for s in sigmas]
    _check_args(method, sigma_list, images, max_memory, chunk_size)
    cfg = _adaptive_config(adaptive)
    if cfg is not None and naive:
        raise AutopruneError("the naive reference evaluates every image; it has no adaptive mode")
    device = torch.device(device)
    ref = copy.deepcopy(model).eval().to(device)
    units = units_from_space(space, unit, ref)
    arch = arch or getattr(space, "arch", None)
    header = {
        "method": method,
        "unit": unit,
        "arch": arch,
        "input_size": getattr(space, "input_size", None),
        "num_classes": getattr(space, "num_classes", None),
        "checkpoint_sha256": checkpoint_sha256,
        "model_sha256": state_sha256(ref),
        "dataset": dataset,
    }
    if method == "bn-gamma":
        return _bn_gamma(ref, units, header, start)
    if data is None:
        raise AutopruneError(f"{method} needs data (the search split)")
    if initializer is None:
        from autoprune.models import initializer_for

        initializer = initializer_for(arch or "")
    variants = _variants(method, seed_list, sigma_list)
    dataset_ = _as_dataset(data)
    order = _order(len(dataset_), images, data_seed)
    plain = naive and not fold_bn and not channels_last and not fuse
    example = _example(dataset_, order)
    engine = None
    if not plain:
        engine = Engine(
            ref, fold_bn=fold_bn, channels_last=channels_last, fuse=fuse, example=example, device=device
        )

    def raw_overrides(u: Unit, v: _Variant) -> Overrides:
        with torch.no_grad():
            if method == "sr-init":
                return sr_init_overrides(ref, u, v.seed, initializer)
            return sbpf_overrides(ref, u, v.seed, float(v.sigma))

    perturb = raw_overrides if engine is None else (lambda u, v: engine.derive(raw_overrides(u, v)))
    if chunk_size is None:
        chunk_size = _default_chunk(ref, engine, example, max_memory, device)
    chunk = _chunk_size(chunk_size, len(order), cfg)
    scores = _Scores(units, len(variants), len(order))
    rescore = _Rescore(ref, raw_overrides, device)
    if engine is not None and (fold_bn or channels_last or fuse):
        x, _ = next(_chunks(dataset_, order, chunk))
        with torch.inference_mode():
            rescore.calibrate(engine.forward(engine.format(x)), x)
    job = _Job(units, variants, perturb, dataset_, order, chunk, scores, rescore, reporter)
    adaptive_record = None
    if naive:
        _run_naive(ref, engine, job)
    else:
        assert engine is not None
        adaptive_record = _run_cached(engine, job, max_memory, cfg)
    engine_info = {
        "cached": not naive,
        "fold_bn": fold_bn,
        "channels_last": channels_last,
        "fused": 0 if engine is None else engine.fused,
        "chunk": chunk,
        "device": str(device),
        "tie_tolerance": rescore.tolerance,
        "rescored": rescore.count,
    }
    return _assemble(
        header,
        units,
        variants,
        method,
        seed_list,
        sigma_list,
        scores,
        len(dataset_),
        adaptive_record,
        engine_info,
        start,
    )


def compute_sensitivity_naive(model: nn.Module, space: PruningSpace, data: Data, **kwargs) -> Sensitivity:
    """The naive reference: :func:`compute_sensitivity` with ``naive=True``."""
    return compute_sensitivity(model, space, data, naive=True, **kwargs)


# ------------------------------------------------------------------- arguments


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, int):
        if seeds < 1:
            raise AutopruneError(f"seeds must be >= 1, got {seeds}")
        return list(range(seeds))
    out = [int(s) for s in seeds]
    if not out:
        raise AutopruneError("seeds must not be empty")
    if len(set(out)) != len(out):
        raise AutopruneError(f"seeds must be distinct, got {out}")
    return out


def _check_args(
    method: str, sigmas: list[float], images: int | None, max_memory: int, chunk_size: int | None
) -> None:
    if method not in METHODS:
        raise AutopruneError(f"unknown sensitivity method {method!r}; valid: {', '.join(METHODS)}")
    if method == "sbpf" and (not sigmas or any(not s > 0 or math.isinf(s) for s in sigmas)):
        raise AutopruneError(f"sbpf needs positive sigmas, got {sigmas}")
    if images is not None and images < 1:
        raise AutopruneError(f"images must be >= 1, got {images}")
    if max_memory < 1:
        raise AutopruneError(f"max_memory must be positive, got {max_memory}")
    if chunk_size is not None and chunk_size < 1:
        raise AutopruneError(f"chunk size must be >= 1, got {chunk_size}")


def _adaptive_config(adaptive: bool | Adaptive) -> Adaptive | None:
    if adaptive is True:
        return Adaptive()
    if not adaptive:
        return None
    if (
        adaptive.chunk < 1
        or adaptive.min_images < 1
        or adaptive.resamples < 2
        or not 0.0 <= adaptive.quantile < 1.0
        or not -1.0 <= adaptive.target <= 1.0
    ):
        raise AutopruneError(f"invalid adaptive settings {adaptive}")
    return adaptive


def _variants(method: str, seeds: list[int], sigmas: list[float]) -> list[_Variant]:
    if method == "sr-init":
        return [_Variant(s, None) for s in seeds]
    return [_Variant(s, sigma) for s in seeds for sigma in sigmas]


def _as_dataset(data: Data) -> Dataset:
    if isinstance(data, tuple):
        images, labels = data
        if len(images) != len(labels):
            raise AutopruneError(f"{len(images)} images but {len(labels)} labels")
        return TensorDataset(images, labels)
    return data


def _order(n: int, images: int | None, seed: int) -> list[int]:
    """A seeded permutation of the data, cut to ``images``."""
    if n == 0:
        raise AutopruneError("the data is empty")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return perm[: min(images or n, n)]


def _example(dataset: Dataset, order: list[int]) -> torch.Tensor:
    """Two copies of the first image: a batch for shape and memory probes."""
    x = torch.as_tensor(dataset[order[0]][0])
    return torch.stack([x, x])


def _default_chunk(
    ref: nn.Module, engine: Engine | None, example: torch.Tensor, max_memory: int, device: torch.device
) -> int:
    """Images per chunk when none is given: cache-sized on CPU (``CPU_CHUNK_BYTES``), large
    elsewhere, and within ``max_memory`` for the engine's cache plus one pass. The plain
    naive path gets the same chunk unless ``max_memory`` caps the engine's."""
    if device.type == "cpu":
        fit = max(1, CPU_CHUNK_BYTES // _largest_activation(ref, example))
        chunk = min(CPU_CHUNK, 1 << (fit.bit_length() - 1))
    else:
        chunk = MAX_CHUNK
    if engine is not None:
        chunk = min(chunk, int(max_memory // (engine.bytes_per_image(example) * 1.25)))
    return max(1, chunk)


def _largest_activation(model: nn.Module, example: torch.Tensor) -> int:
    """Bytes per image of the largest tensor any module of ``model`` returns on ``example``
    (both on the same device)."""
    largest = example[0].numel() * example.element_size()

    def record(_module: nn.Module, _inputs: object, out: object) -> None:
        nonlocal largest
        if isinstance(out, torch.Tensor) and out.dim() > 0 and len(out) == len(example):
            largest = max(largest, out[0].numel() * out.element_size())

    handles = [m.register_forward_hook(record) for m in model.modules()]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return largest


def _chunk_size(chunk_size: int, n_images: int, cfg: Adaptive | None) -> int:
    """``chunk_size``, at most the adaptive check interval and the images."""
    if cfg is not None:
        chunk_size = min(chunk_size, cfg.chunk)
    return max(1, min(chunk_size, n_images))


def _chunks(dataset: Dataset, order: list[int], size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) batches of ``size`` in ``order``."""
    from autoprune.data import make_loader

    if isinstance(dataset, TensorDataset):
        images, labels = dataset.tensors
        for i in range(0, len(order), size):
            idx = torch.tensor(order[i : i + size])
            yield images[idx], labels[idx]
        return
    yield from make_loader(Subset(dataset, order), size)


def state_sha256(model: nn.Module) -> str:
    """A hash of ``model``'s state (names, shapes, dtypes and bytes)."""
    h = hashlib.sha256()
    for key, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ---------------------------------------------------------------------- scores


class _Scores:
    """Per-image correctness and cross-entropy: clean, and per unit and variant."""

    def __init__(self, units: list[Unit], n_variants: int, n_images: int) -> None:
        self.index = {u.id: i for i, u in enumerate(units)}
        self.correct0 = np.zeros(n_images, dtype=bool)
        self.loss0 = np.zeros(n_images, dtype=np.float32)
        self.correct = np.zeros((len(units), n_variants, n_images), dtype=bool)
        self.loss = np.zeros((len(units), n_variants, n_images), dtype=np.float32)
        self.seen = np.zeros(len(units), dtype=np.int64)
        self.seen0 = 0

    def clean(self, at: int, logits: torch.Tensor, y: torch.Tensor) -> None:
        c, loss = _score(logits, y)
        self.correct0[at : at + len(c)] = c
        self.loss0[at : at + len(c)] = loss
        self.seen0 = max(self.seen0, at + len(c))

    def unit(self, unit_id: str, variant: int, at: int, logits: torch.Tensor, y: torch.Tensor) -> None:
        c, loss = _score(logits, y)
        i = self.index[unit_id]
        self.correct[i, variant, at : at + len(c)] = c
        self.loss[i, variant, at : at + len(c)] = loss
        self.seen[i] = max(self.seen[i], at + len(c))

    def drops(self, i: int) -> np.ndarray:
        """Per-image accuracy drop of unit ``i`` (clean minus the mean over variants)."""
        n = int(self.seen[i])
        return self.correct0[:n].astype(np.float64) - self.correct[i, :, :n].mean(axis=0)


def _score(logits: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise AutopruneError("sensitivity needs a model whose output is a (batch, classes) logits tensor")
    logits = logits.float()
    correct = (logits.argmax(1) == y).cpu().numpy()
    loss = F.cross_entropy(logits, y, reduction="none").cpu().numpy()
    return correct, loss


# --------------------------------------------------------------------- running


@dataclass(frozen=True)
class _Job:
    """What both paths evaluate, and where the results go."""

    units: list[Unit]
    variants: list[_Variant]
    perturb: Callable[[Unit, _Variant], Overrides]
    dataset: Dataset
    order: list[int]
    chunk: int
    scores: _Scores
    rescore: _Rescore
    reporter: Reporter


def _run_naive(ref: nn.Module, engine: Engine | None, job: _Job) -> None:
    """Whole network, every unit, every variant, every chunk."""
    scores, rescore, reporter = job.scores, job.rescore, job.reporter

    def forward(x: torch.Tensor, overrides: Overrides | None = None) -> torch.Tensor:
        if engine is not None:
            return engine.forward(x, overrides)
        return _plain_forward(ref, x, overrides)

    fmt = engine.format if engine is not None else (lambda t: t.to(rescore.device))
    batches = [(x, fmt(x), y.to(rescore.device)) for x, y in _chunks(job.dataset, job.order, job.chunk)]
    reporter.start("sensitivity (naive)", len(job.units) * len(job.variants))
    with torch.inference_mode():
        at = 0
        for raw, x, y in batches:
            scores.clean(at, rescore(forward(x), raw, y), y)
            at += len(y)
        for u in job.units:
            for vi, v in enumerate(job.variants):
                overrides = job.perturb(u, v)
                at = 0
                for raw, x, y in batches:
                    scores.unit(u.id, vi, at, rescore(forward(x, overrides), raw, y, u, v), y)
                    at += len(y)
                reporter.advance(1, unit=u.id)
    reporter.finish()


def _plain_forward(model: nn.Module, x: torch.Tensor, overrides: Overrides | None = None) -> torch.Tensor:
    from torch.func import functional_call

    return model(x) if not overrides else functional_call(model, overrides, (x,), strict=False)


def _run_cached(engine: Engine, job: _Job, max_memory: int, cfg: Adaptive | None) -> dict | None:
    """Prefix-cached passes, chunk by chunk (see the module docstring); the adaptive record."""
    units, variants, chunk, order = job.units, job.variants, job.chunk, job.order
    scores, rescore, reporter = job.scores, job.rescore, job.reporter
    cache = _OverrideCache(job.perturb, budget=max_memory // 4)
    cuts = {u.id: engine.cut_for(cache.get(u, variants[0], 0)) for u in units}
    by_cut = sorted(units, key=lambda u: (cuts[u.id], units.index(u)))
    n_chunks = -(-len(order) // chunk)
    stop = _Stopper(cfg) if cfg is not None else None
    reporter.start("sensitivity", len(units) * n_chunks)
    with torch.inference_mode():
        for ci, (raw, y) in enumerate(_chunks(job.dataset, order, chunk)):
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


class _Rescore:
    """Logits of a chunk, from the plain model when the engine's are near a flip (module docstring)."""

    def __init__(
        self, ref: nn.Module, raw_overrides: Callable[[Unit, _Variant], Overrides], device: torch.device
    ) -> None:
        self.ref, self.raw_overrides, self.device = ref, raw_overrides, device
        self.tolerance: float | None = None  # None: the engine computes as the plain model does
        self.count = 0

    def calibrate(self, engine_logits: torch.Tensor, raw: torch.Tensor) -> None:
        """Set the tolerance from the engine's deviation from the plain model on ``raw``."""
        plain = _plain_forward(self.ref, raw.to(self.device))
        if not isinstance(plain, torch.Tensor) or plain.shape != engine_logits.shape:
            return  # not logits; _score says so
        plain, fast = plain.float(), engine_logits.float()
        deviation = ((fast - plain).abs().amax(dim=1) / (1.0 + plain.abs().amax(dim=1))).max()
        self.tolerance = max(TIE_TOLERANCE, TIE_FACTOR * float(deviation))

    def __call__(
        self,
        logits: torch.Tensor,
        raw: torch.Tensor,
        y: torch.Tensor,
        u: Unit | None = None,
        v: _Variant | None = None,
    ) -> torch.Tensor:
        if self.tolerance is None or not near_flip(logits, y, self.tolerance):
            return logits
        self.count += 1
        overrides = None if u is None or v is None else self.raw_overrides(u, v)
        return _plain_forward(self.ref, raw.to(self.device), overrides)


def near_flip(logits: torch.Tensor, y: torch.Tensor, tolerance: float) -> bool:
    """Whether some row's label logit is within ``tolerance * (1 + max |logit|)`` of its best other
    logit: a rounding that small could flip that image's top-1 correctness."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[1] < 2:
        return False
    logits = logits.float()
    label = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    scale = 1.0 + logits.abs().amax(dim=1)
    return bool(((label - other).abs() <= tolerance * scale).any())


class _OverrideCache:
    """Perturbed engine tensors per (unit, variant), kept while they fit ``budget`` bytes."""

    def __init__(self, perturb: Callable[[Unit, _Variant], Overrides], budget: int) -> None:
        self.perturb, self.budget, self.used = perturb, budget, 0
        self.store: dict[tuple[str, int], Overrides] = {}

    def get(self, u: Unit, v: _Variant, vi: int) -> Overrides:
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


class _Stopper:
    """The adaptive stopping rule (see the module docstring)."""

    def __init__(self, cfg: Adaptive) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.stability: float | None = None
        self.images = 0
        self.next_check = cfg.min_images

    def settled(self, scores: _Scores) -> bool:
        n = int(scores.seen0)
        self.images = n
        if n < self.next_check:
            return False
        self.next_check = n + self.cfg.chunk
        drops = np.stack([scores.drops(i) for i in range(len(scores.index))])  # units x images
        self.stability = rank_stability(drops, self.cfg.resamples, self.cfg.quantile, self.rng)
        return self.stability >= self.cfg.target

    def record(self, budget: int) -> dict:
        return {
            **asdict(self.cfg),
            "stability": self.stability,
            "stopped": "settled" if self.images < budget else "budget",
        }


def rank_stability(drops: np.ndarray, resamples: int, quantile: float, rng: np.random.Generator) -> float:
    """``quantile`` of the Spearman correlations between the ranking of ``drops.mean(1)`` and
    the rankings of ``resamples`` paired bootstrap resamples of the images (columns)."""
    from scipy.stats import rankdata

    n = drops.shape[1]
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)  # B x n
    boot = drops @ weights.T / n  # units x B
    current = rankdata(drops.mean(axis=1))
    ranks = rankdata(boot, axis=0)
    corr = np.array([_pearson(current, ranks[:, b]) for b in range(resamples)])
    return float(np.quantile(corr, quantile))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two rank vectors; two constant rankings agree (1), one does not (0)."""
    a, b = a - a.mean(), b - b.mean()
    na, nb = float(np.sqrt((a * a).sum())), float(np.sqrt((b * b).sum()))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float((a * b).sum() / (na * nb))


# ------------------------------------------------------------------- assembly


def _assemble(
    header: dict,
    units: list[Unit],
    variants: list[_Variant],
    method: str,
    seeds: list[int],
    sigmas: list[float],
    scores: _Scores,
    available: int,
    adaptive_record: dict | None,
    engine_info: dict,
    start: float,
) -> Sensitivity:
    """Reduce per-image scores to per-unit values (identical arithmetic for every path)."""
    results = []
    for i, u in enumerate(units):
        n = int(scores.seen[i])
        acc0 = int(scores.correct0[:n].sum()) / n
        loss0 = float(scores.loss0[:n].astype(np.float64).sum()) / n
        deltas, loss_deltas = [], []
        for vi in range(len(variants)):
            deltas.append(acc0 - int(scores.correct[i, vi, :n].sum()) / n)
            loss_deltas.append(float(scores.loss[i, vi, :n].astype(np.float64).sum()) / n - loss0)
        per_seed, loss_per_seed, per_sigma = _by_seed(deltas, loss_deltas, variants, seeds, sigmas, method)
        results.append(
            UnitSensitivity(
                id=u.id,
                kind=u.kind,
                stage=u.stage,
                delta=_mean(per_seed),
                std=_std(per_seed),
                per_seed=per_seed,
                loss_delta=_mean(loss_per_seed),
                loss_per_seed=loss_per_seed,
                removable=u.removable,
                images=n,
                per_sigma=per_sigma,
            )
        )
    n_all = int(scores.seen0)
    return Sensitivity(
        **header,
        seeds=seeds,
        sigmas=sigmas if method == "sbpf" else None,
        images=n_all,
        images_available=available,
        acc0=int(scores.correct0[:n_all].sum()) / n_all,
        loss0=float(scores.loss0[:n_all].astype(np.float64).sum()) / n_all,
        units=results,
        adaptive=adaptive_record,
        engine=engine_info,
        seconds=time.perf_counter() - start,
    )


def _by_seed(
    deltas: list[float],
    loss_deltas: list[float],
    variants: list[_Variant],
    seeds: list[int],
    sigmas: list[float],
    method: str,
) -> tuple[list[float], list[float], dict[str, float] | None]:
    """Per-seed values (SBPF: the mean over sigmas of that seed's draws) and SBPF's per-sigma means."""
    if method == "sr-init":
        return deltas, loss_deltas, None
    k = len(sigmas)
    per_seed = [_mean(deltas[j * k : (j + 1) * k]) for j in range(len(seeds))]
    loss_per_seed = [_mean(loss_deltas[j * k : (j + 1) * k]) for j in range(len(seeds))]
    per_sigma = {
        repr(s): _mean([deltas[j * k + si] for j in range(len(seeds))]) for si, s in enumerate(sigmas)
    }
    return per_seed, loss_per_seed, per_sigma


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _std(values: Sequence[float]) -> float:
    """Sample standard deviation (0 for one value)."""
    if len(values) < 2:
        return 0.0
    m = _mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def _bn_gamma(ref: nn.Module, units: list[Unit], header: dict, start: float) -> Sensitivity:
    results = [
        UnitSensitivity(
            id=u.id,
            kind=u.kind,
            stage=u.stage,
            delta=(v := bn_gamma_value(ref, u)),
            std=0.0,
            per_seed=[v],
            removable=u.removable,
        )
        for u in units
    ]
    return Sensitivity(
        **header,
        seeds=[],
        images=0,
        acc0=None,
        loss0=None,
        units=results,
        engine={},
        seconds=time.perf_counter() - start,
    )
