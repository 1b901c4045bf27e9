"""Prove the GPU path in one command: correctness of every Triton kernel, then what it is worth.

    .venv/bin/python benchmarks/gpu_check.py            # on a CUDA machine: everything, < 8 minutes
    .venv/bin/python benchmarks/gpu_check.py --quick    # fewer shapes and repeats

Sections (JSON keys):

* ``compile``: every Triton kernel variant compiled to a cubin (for this GPU; without one,
  for sm_90, which the bundled ptxas does on any machine);
* ``correctness``: each kernel against its float64 torch reference on the same rounded
  inputs, at fp32 (ieee), TF32 and fp16, per layer shape, pass/fail at
  ``autoprune.kernels.reference.TOLERANCES``, run at the block sizes a GPU launch picks;
* ``ops``: each fused op (Triton) against unfused cuDNN (torch conv + BN + activation + mask),
  CUDA-event medians, fp32 and fp16;
* ``proxy``: one search-proxy evaluation per candidate plan, the masked executor (Triton and
  torch kernels) against rebuilding the sliced model, resnet20 / mobilenetv2 at 32×32 and
  torchvision resnet50 at 224×224;
* ``sensitivity``: SR-init sensitivity, naive against cached (BN folded, no fusion) against
  fused (the engine's conv chains as Triton kernel ops; the torch kernels in the CPU run);
* ``telemetry``: ``GpuMonitor`` readings over a short run.

It writes ``gpu_check.json`` and ``gpu_check.md`` (tables ready for ``benchmarks/RESULTS.md``)
under ``--out``, and on a GPU the dispatch table ``autoprune.kernels.dispatch`` reads
(``$AUTOPRUNE_GPU_TABLE`` or ``~/.cache/autoprune/gpu_dispatch.json``): per op and dtype
whether Triton beat cuDNN, and whether the masked proxy beat the sliced one.

Without CUDA the kernels are compiled for sm_90 and checked on the Triton interpreter at
small shapes (the TF32 rows then compute in fp32: the interpreter has no TF32), the
proxy and sensitivity code runs once on the CPU at toy sizes so it cannot rot, nothing
is timed and every figure says so; the exit status is 0 when every correctness check passes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from autoprune.kernels import ACTIVATIONS, ChannelMask, dispatch
from autoprune.kernels import reference as ref_ops
from autoprune.kernels.reference import TOLERANCES

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _timing.py, also when loaded by path
from _timing import time_cuda  # noqa: E402

NOT_MEASURED = "not measured (no GPU)"
PRECISIONS = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16}

# (kernel, name, dims): MobileNetV2 (ImageNet layout) and ResNet-50 layer shapes.
FULL_SHAPES = [
    ("pointwise", "mobilenetv2 96->24 @56", {"cin": 96, "cout": 24, "hw": (56, 56)}),
    ("pointwise", "mobilenetv2 144->24 @56", {"cin": 144, "cout": 24, "hw": (56, 56)}),
    ("pointwise", "mobilenetv2 24->144 @56", {"cin": 24, "cout": 144, "hw": (56, 56)}),
    ("pointwise", "mobilenetv2 960->160 @7", {"cin": 960, "cout": 160, "hw": (7, 7)}),
    ("pointwise", "resnet50 256->64 @56", {"cin": 256, "cout": 64, "hw": (56, 56)}),
    ("pointwise", "resnet50 64->256 @56", {"cin": 64, "cout": 256, "hw": (56, 56)}),
    ("pointwise", "resnet50 1024->256 @14", {"cin": 1024, "cout": 256, "hw": (14, 14)}),
    ("pointwise", "resnet50 2048->512 @7", {"cin": 2048, "cout": 512, "hw": (7, 7)}),
    ("depthwise", "mobilenetv2 144 @56", {"c": 144, "hw": (56, 56), "stride": 1}),
    ("depthwise", "mobilenetv2 144 @56 s2", {"c": 144, "hw": (56, 56), "stride": 2}),
    ("depthwise", "mobilenetv2 960 @7", {"c": 960, "hw": (7, 7), "stride": 1}),
    ("bn_act", "resnet50 64 @56", {"c": 64, "hw": (56, 56)}),
    ("bn_act", "resnet50 256 @56", {"c": 256, "hw": (56, 56)}),
    ("bn_act", "resnet50 512 @28", {"c": 512, "hw": (28, 28)}),
]
SMALL_SHAPES = [  # the interpreter's: real channel counts, small planes
    ("pointwise", "mobilenetv2 96->24 @6", {"cin": 96, "cout": 24, "hw": (6, 6)}),
    ("pointwise", "resnet50 256->64 @5", {"cin": 256, "cout": 64, "hw": (5, 5)}),
    ("depthwise", "mobilenetv2 144 @6 s2", {"c": 144, "hw": (6, 6), "stride": 2}),
    ("bn_act", "resnet50 64 @5", {"c": 64, "hw": (5, 5)}),
]
ACT = {"pointwise": "relu6", "depthwise": "hardswish", "bn_act": "relu"}
MODULES = {"pointwise": "triton_pointwise", "depthwise": "triton_depthwise", "bn_act": "triton_bn_act"}
PROXY_MODELS = [
    ("resnet20", 32, 10, 128),
    ("mobilenetv2", 32, 10, 128),
    ("torchvision:resnet50", 224, 1000, 32),
]


# ----------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def interpret(on: bool):
    """``TRITON_INTERPRET`` set (or unset) for the block; the kernel modules follow it."""
    before = os.environ.get("TRITON_INTERPRET")
    if on:
        os.environ["TRITON_INTERPRET"] = "1"
    else:
        os.environ.pop("TRITON_INTERPRET", None)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = before


@contextlib.contextmanager
def tf32(on: bool):
    """TF32 allowed (or not) for cuDNN convs, cuBLAS matmuls and, through them, ``tl.dot``."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def out_pixels(dims: dict) -> int:
    stride = dims.get("stride", 1)
    return math.prod((h - 1) // stride + 1 for h in dims["hw"])


def gpu_blocks(kind: str, dims: dict) -> tuple[int, ...]:
    common = dispatch.triton_module("triton_common")
    if kind == "pointwise":
        return common.launch_blocks(kind, dims["cout"], out_pixels(dims), dims["cin"], interpreted=False)
    return common.launch_blocks(kind, dims["c"], out_pixels(dims), interpreted=False)


def time_wall(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


class Case:
    """One kernel at one shape and dtype: inputs, the Triton call and the float64 reference."""

    def __init__(self, kind: str, dims: dict, dtype: torch.dtype, device: torch.device, batch: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.kind, self.dims = kind, dims
        c = dims.get("cout", dims.get("c"))
        self.stride = dims.get("stride", 1)
        self.act = ACT[kind]
        cin = dims.get("cin", c)
        self.x = torch.randn(batch, cin, *dims["hw"], generator=g).to(device, dtype)
        self.scale = (torch.rand(c, generator=g) + 0.5).to(device)
        self.shift = torch.randn(c, generator=g).to(device)
        self.keep = torch.rand(c, generator=g) < 0.5
        self.keep[0] = True
        self.keep = self.keep.to(device)
        self.mask = ChannelMask.from_bool(self.keep)
        if kind == "pointwise":
            self.w = (torch.randn(c, cin, generator=g) / cin**0.5).to(device, dtype)
        elif kind == "depthwise":
            self.w = (torch.randn(c, 1, 3, 3, generator=g) / 3).to(device, dtype)
        else:
            self.w = None

    def triton(self, blocks: tuple[int, ...] | None = None) -> torch.Tensor:
        module = dispatch.triton_module(MODULES[self.kind])
        code = ACTIVATIONS.index(self.act)
        if self.kind == "pointwise":
            return module.pointwise(
                self.x, self.w, self.scale, self.shift, code, self.mask, self.stride, blocks=blocks
            )
        if self.kind == "depthwise":
            return module.depthwise(
                self.x, self.w, self.scale, self.shift, self.stride, code, self.mask, blocks=blocks
            )
        return module.bn_act(self.x, self.scale, self.shift, code, self.mask, blocks=blocks)

    def reference64(self) -> torch.Tensor:
        x = self.x.double()
        if self.kind == "pointwise":
            return ref_ops.pointwise_conv_bn_act_reference(
                x, self.w.double(), self.scale, self.shift, self.act, self.keep, stride=self.stride
            )
        if self.kind == "depthwise":
            return ref_ops.depthwise_conv_bn_act_reference(
                x, self.w.double(), self.scale, self.shift, self.stride, self.act, self.keep
            )
        return ref_ops.bn_mask_act_reference(x, self.scale, self.shift, self.act, self.keep)

    def unfused(self) -> Callable[[], torch.Tensor]:
        """What the fused op replaces: cuDNN conv, eval-mode BN, the activation, the mask."""
        c = self.scale.numel()
        # An eval-mode BN equal to the folded affine; its parameters stay fp32 (cuDNN's mixed-precision BN).
        ones, zeros = torch.ones_like(self.scale), torch.zeros_like(self.scale)
        mean, var = -self.shift / self.scale, (1.0 / self.scale) ** 2 - 1e-5
        keep = self.keep.to(self.x.dtype).view(1, -1, 1, 1)
        act = {"relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish}[self.act]
        if self.kind == "pointwise":
            w4 = self.w.reshape(c, -1, 1, 1)

            def conv(x):
                return F.conv2d(x, w4, stride=self.stride)
        elif self.kind == "depthwise":

            def conv(x):
                return F.conv2d(x, self.w, stride=self.stride, padding=1, groups=c)
        else:

            def conv(x):
                return x

        def run() -> torch.Tensor:
            y = F.batch_norm(
                conv(self.x), mean.to(self.x.dtype), var.to(self.x.dtype), ones, zeros, False, 0.0, 1e-5
            )
            return act(y) * keep

        return run


# ----------------------------------------------------------------------------- sections


def compile_all(cuda: bool, quick: bool) -> list[dict]:
    """Compile every kernel variant to a cubin, for this GPU or (without one) for sm_90."""
    import triton
    from triton.backends.compiler import GPUTarget

    target = triton.runtime.driver.active.get_current_target() if cuda else GPUTarget("cuda", 90, 32)
    rows = []
    dtypes = {"fp32": "fp32", "fp16": "fp16"} if quick else {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}
    with interpret(False):
        for kind, module_name in MODULES.items():
            module = dispatch.triton_module(module_name)
            kernel = next(v for k, v in vars(module).items() if k.startswith("_") and k.endswith("_kernel"))
            for dname, ty in dtypes.items():
                for has_mask in (True,) if quick else (True, False):
                    dims = {"pointwise": (64, 64, 32), "depthwise": (16, 128), "bn_act": (8, 256)}[kind]
                    const = {"ACT": 3, "HAS_MASK": has_mask}
                    if kind == "pointwise":
                        const.update(
                            COMPACT=False,
                            DOT_F32=False,
                            PRECISION="ieee" if dname == "fp32" else "tf32",
                            BLOCK_CO=dims[0],
                            BLOCK_P=dims[1],
                            BLOCK_CI=dims[2],
                        )
                    else:
                        const.update(BLOCK_C=dims[0], BLOCK_P=dims[1])
                    if kind == "depthwise":
                        const["STRIDE"] = 2
                    pointers = {"x_ptr": ty, "w_ptr": ty, "y_ptr": ty, "keep_ptr": "i8", "perm_ptr": "i32"}
                    pointers["nkept_ptr"] = "i32"
                    signature = {
                        name: "constexpr"
                        if name in const
                        else "*" + pointers.get(name, "fp32")
                        if name.endswith("_ptr")
                        else "i32"
                        for name in kernel.arg_names
                    }
                    what = f"{kind} {dname} mask={has_mask}"
                    start = time.perf_counter()
                    try:
                        src = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=const)
                        compiled = triton.compile(src, target=target)
                        ok, error = bool(compiled.asm.get("cubin")), None
                    except Exception as exc:  # a compile error is this check's finding
                        ok, error = False, f"{type(exc).__name__}: {exc}"[:500]
                    rows.append(
                        {
                            "kernel": what,
                            "target": f"{target.backend} sm_{target.arch}",
                            "ok": ok,
                            "seconds": round(time.perf_counter() - start, 2),
                            "error": error,
                        }
                    )
    return rows


def correctness(cuda: bool, quick: bool, device: torch.device) -> list[dict]:
    shapes = (FULL_SHAPES[::3] if quick else FULL_SHAPES) if cuda else SMALL_SHAPES
    batch = 8 if cuda else 2
    rows = []
    with interpret(not cuda):
        for kind, name, dims in shapes:
            for precision, dtype in PRECISIONS.items():
                case = Case(kind, dims, dtype, device, batch)
                atol, rtol = TOLERANCES[precision]
                blocks = gpu_blocks(kind, dims)
                with tf32(precision == "tf32"):
                    try:
                        y = case.triton(blocks).double()
                        ref = case.reference64().to(dtype).double()
                        err = (y - ref).abs()
                        excess = (err - (atol + rtol * ref.abs())).max().item()
                        zeros = bool((y[:, ~case.keep] == 0).all())
                        row = {"max_abs_err": err.max().item(), "ok": excess <= 0 and zeros, "error": None}
                        if not zeros:
                            row["error"] = "masked channels are not exact zeros"
                    except Exception as exc:
                        row = {
                            "max_abs_err": None,
                            "ok": False,
                            "error": f"{type(exc).__name__}: {exc}"[:500],
                        }
                note = "interpreter: computed in fp32" if precision == "tf32" and not cuda else ""
                rows.append(
                    {
                        "kernel": kind,
                        "shape": name,
                        "precision": precision,
                        "blocks": list(blocks),
                        "atol": atol,
                        "rtol": rtol,
                        "note": note,
                        **row,
                    }
                )
    return rows


def op_timings(quick: bool, device: torch.device) -> list[dict]:
    rows = []
    for kind, name, dims in FULL_SHAPES[::2] if quick else FULL_SHAPES:
        for dtype in (torch.float32, torch.float16):
            case = Case(kind, dims, dtype, device, 32)
            fused = time_cuda(case.triton, 10 if quick else 30)
            unfused = time_cuda(case.unfused(), 10 if quick else 30)
            rows.append(
                {
                    "op": kind,
                    "shape": f"{name} batch 32",
                    "dtype": str(dtype).removeprefix("torch."),
                    "triton_ms": fused,
                    "cudnn_ms": unfused,
                    "speedup": unfused / fused,
                }
            )
    return rows


def _random_batches(count: int, batch: int, size: int, classes: int, device: torch.device, seed: int):
    from autoprune.data import EvalBatches

    g = torch.Generator().manual_seed(seed)
    return EvalBatches(
        [
            (torch.randn(batch, 3, size, size, generator=g), torch.randint(0, classes, (batch,), generator=g))
            for _ in range(count)
        ]
    ).to(device)


def proxy_timings(models: list[tuple], device: torch.device, candidates: int, timed: bool) -> list[dict]:
    """Seconds per candidate: masked executor (Triton / torch kernels) vs rebuilding the sliced model."""
    from autoprune import PruningSpace, create_model
    from autoprune.search.proxies import MaskedRecalProxy, RecalProxy

    rows = []
    for arch, size, classes, batch in models:
        torch.manual_seed(0)
        model = create_model(arch, num_classes=classes, input_size=size).eval()
        space = PruningSpace.from_model(model, torch.zeros(1, 3, size, size), arch=arch, num_classes=classes)
        model = model.to(device)
        recal = _random_batches(2, batch, size, classes, device, 1)
        search = _random_batches(2, batch, size, classes, device, 2)
        plans = [space.uniform(0.5 + 0.4 * i / max(candidates, 1)) for i in range(candidates + 1)]
        row: dict = {"model": f"{arch} @{size}", "batch": batch, "recal_batches": 2, "search_batches": 2}
        masked_backend = "triton" if device.type == "cuda" else "auto"  # CPU: runs, not timed
        builds = [
            ("masked_triton", MaskedRecalProxy, {"backend": masked_backend}),
            ("masked_torch", MaskedRecalProxy, {"backend": "torch"}),
            ("sliced", RecalProxy, {}),
        ]
        for key, cls, kwargs in builds:
            try:
                proxy = cls(model, space, recal, search, device=device, **kwargs)
                proxy.score(plans[0])  # warm-up: compiles, caches
                per = [time_wall(lambda p=p, proxy=proxy: proxy.score(p), device) for p in plans[1:]]
                row[f"{key}_s"] = statistics.median(per) if timed else None
            except Exception as exc:  # a model the masked executor refuses is a finding, not a crash
                row[f"{key}_s"] = None
                row[f"{key}_error"] = f"{type(exc).__name__}: {exc}"[:300]
        rows.append(row)
    return rows


def sensitivity_timings(archs: list[str], images: int, device: torch.device, timed: bool) -> list[dict]:
    from autoprune import PruningSpace, create_model
    from autoprune.sensitivity import Execution, Images, Perturbation, compute_sensitivity

    rows = []
    for arch in archs:
        torch.manual_seed(0)
        model = create_model(arch, num_classes=10, input_size=32).eval()
        space = PruningSpace.from_model(model, torch.zeros(1, 3, 32, 32), arch=arch, num_classes=10)
        g = torch.Generator().manual_seed(3)
        data = (torch.randn(images, 3, 32, 32, generator=g), torch.randint(0, 10, (images,), generator=g))
        common = {"unit": "block", "perturbation": Perturbation(seeds=1), "images": Images(count=images)}
        kernels = "triton" if device.type == "cuda" else "torch"
        results, seconds = {}, {}
        for key, execution in (
            ("naive", Execution.plain(naive=True, device=device)),
            ("cached", Execution(device=device, fuse=False)),
            ("fused", Execution(device=device, kernels=kernels)),
        ):
            start = time.perf_counter()
            results[key] = compute_sensitivity(model, space, data, execution=execution, **common)
            seconds[key] = time.perf_counter() - start
        diff = max(
            (
                abs(a.delta - b.delta)
                for fast in ("cached", "fused")
                for a, b in zip(results["naive"].units, results[fast].units, strict=True)
            ),
            default=0.0,
        )
        rows.append(
            {
                "model": f"{arch} @32",
                "images": images,
                "units": len(results["cached"].units),
                "kernels": kernels,
                "naive_s": seconds["naive"] if timed else None,
                "cached_s": seconds["cached"] if timed else None,
                "fused_s": seconds["fused"] if timed else None,
                "fused_rescored": results["fused"].engine["rescored"],
                "max_delta_diff": diff,
            }
        )
    return rows


def telemetry_reading(device: torch.device, seconds: float) -> dict:
    from autoprune import create_model
    from autoprune.telemetry import GpuMonitor, nvml_available

    model = create_model("torchvision:resnet50", num_classes=1000, input_size=224).eval().to(device)
    x = torch.randn(64, 3, 224, 224, device=device)
    with GpuMonitor(device, interval=0.05) as monitor, torch.no_grad():
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            model(x)
        torch.cuda.synchronize(device)
    return {"nvml": nvml_available(), "run": f"resnet50 forward, batch 64, {seconds:.0f} s", **monitor.stats}


# ----------------------------------------------------------------------------- output


def dispatch_table(report: dict) -> dict:
    """Per op and dtype: Triton where its geometric-mean speedup over the shapes exceeds 1."""
    ops: dict[str, dict[str, str]] = {}
    for op in MODULES:
        for dtype in ("float32", "float16"):
            speedups = [r["speedup"] for r in report["ops"] if r["op"] == op and r["dtype"] == dtype]
            if speedups:
                gmean = math.exp(sum(map(math.log, speedups)) / len(speedups))
                ops.setdefault(op, {})[dtype] = "triton" if gmean > 1.0 else "torch"
    masked_wins = [
        min(x for x in (r.get("masked_triton_s"), r.get("masked_torch_s")) if x is not None) < r["sliced_s"]
        for r in report["proxy"]
        if r.get("sliced_s") is not None and (r.get("masked_triton_s") or r.get("masked_torch_s"))
    ]
    return {
        "format": dispatch.TABLE_FORMAT,
        "device_name": report["machine"]["device"],
        "measured": report["machine"]["when"],
        "ops": ops,
        "proxy": {"prefer_masked": bool(masked_wins) and all(masked_wins)},
    }


def _fmt(value, spec: str = ".3f") -> str:
    return NOT_MEASURED if value is None else format(value, spec)


def _sensitivity_table(rows: list[dict]) -> list[str]:
    lines = ["", "SR-init sensitivity (block units, 1 seed), seconds; fused = Triton kernel ops:", ""]
    lines += [
        "| model | images | naive | cached | fused | max delta diff |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    return lines + [
        f"| {r['model']} | {r['images']} | {_fmt(r['naive_s'], '.2f')} | {_fmt(r['cached_s'], '.2f')} | "
        f"{_fmt(r.get('fused_s'), '.2f')} | {r['max_delta_diff']:.2g} |"
        for r in rows
    ] or [f"| all | - | {NOT_MEASURED} | {NOT_MEASURED} | {NOT_MEASURED} | - |"]


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"### GPU check (`gpu_check.py{' --quick' if report['quick'] else ''}`): {m['device']}",
        "",
        f"torch {m['torch']}, triton {m['triton']}, {m['when']}. {report['statement']}",
        "",
        "Compile (cubin per kernel variant):",
        "",
        "| kernel | target | ok | s |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['kernel']} | {r['target']} | {'pass' if r['ok'] else 'FAIL'} | {r['seconds']} |"
        for r in report["compile"]
    ]
    lines += [
        "",
        "Correctness against the float64 reference (GPU launch blocks):",
        "",
        "| kernel | shape | precision | blocks | max abs err | atol / rtol | result |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["correctness"]:
        err = "-" if r["max_abs_err"] is None else f"{r['max_abs_err']:.2e}"
        result = ("pass" if r["ok"] else f"FAIL {r['error'] or ''}") + (
            f" ({r['note']})" if r["note"] else ""
        )
        lines.append(
            f"| {r['kernel']} | {r['shape']} | {r['precision']} | {tuple(r['blocks'])} | {err} | "
            f"{r['atol']:g} / {r['rtol']:g} | {result} |"
        )
    lines += ["", "Fused op (Triton) vs unfused cuDNN (conv + BN + act + mask), CUDA-event medians:", ""]
    lines += [
        "| op | shape | dtype | Triton ms | cuDNN ms | speedup |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    if report["ops"]:
        lines += [
            f"| {r['op']} | {r['shape']} | {r['dtype']} | {r['triton_ms']:.3f} | {r['cudnn_ms']:.3f} | "
            f"{r['speedup']:.2f}× |"
            for r in report["ops"]
        ]
    else:
        lines.append(f"| all | - | - | {NOT_MEASURED} | {NOT_MEASURED} | {NOT_MEASURED} |")
    lines += ["", "Search proxy, seconds per candidate (recal + search batches):", ""]
    lines += ["| model | masked (Triton) | masked (torch) | sliced |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {r['model']} | {_fmt(r.get('masked_triton_s'))} | {_fmt(r.get('masked_torch_s'))} | "
        f"{_fmt(r.get('sliced_s'))} |"
        for r in report["proxy"]
    ] or [f"| all | {NOT_MEASURED} | {NOT_MEASURED} | {NOT_MEASURED} |"]
    lines += _sensitivity_table(report["sensitivity"])
    t = report["telemetry"]
    lines += ["", f"Telemetry: {json.dumps(t) if t else NOT_MEASURED}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes, candidates and repeats")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/gpu_check"), help="folder for the JSON and markdown"
    )
    parser.add_argument("--no-table", action="store_true", help="do not write the GPU dispatch table")
    parser.add_argument("--cpu", action="store_true", help="the no-GPU checks even where CUDA is available")
    args = parser.parse_args(argv)

    import triton

    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    started = time.perf_counter()
    report: dict = {
        "quick": args.quick,
        "machine": {
            "device": torch.cuda.get_device_name(device)
            if cuda
            else f"no GPU ({platform.processor() or 'CPU'})",
            "torch": torch.__version__,
            "triton": triton.__version__,
            "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "statement": (
            "Timed on this GPU."
            if cuda
            else "Nothing was timed on a GPU: correctness ran on the Triton interpreter at small shapes, "
            "the kernels were compiled for sm_90, and every timing reads " + NOT_MEASURED + "."
        ),
    }

    def section(name: str, fn: Callable[[], object]) -> None:
        start = time.perf_counter()
        report[name] = fn()
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)

    section("compile", lambda: compile_all(cuda, args.quick))
    section("correctness", lambda: correctness(cuda, args.quick, device))
    candidates = 2 if args.quick else 4
    if cuda:
        section("ops", lambda: op_timings(args.quick, device))
        section("proxy", lambda: proxy_timings(PROXY_MODELS, device, candidates, timed=True))
        archs = ["resnet20", "mobilenetv2"]
        section("sensitivity", lambda: sensitivity_timings(archs, 256 if args.quick else 1024, device, True))
        section("telemetry", lambda: telemetry_reading(device, 2.0))
    else:  # run the code once at toy sizes so it cannot rot; time nothing
        report["ops"] = []
        section("proxy", lambda: proxy_timings([("resnet20", 16, 10, 4)], device, 1, timed=False))
        section("sensitivity", lambda: sensitivity_timings(["resnet20"], 16, device, timed=False))
        report["telemetry"] = {}
    report["seconds"] = round(time.perf_counter() - started, 1)
    ok = all(r["ok"] for r in report["compile"]) and all(r["ok"] for r in report["correctness"])
    errors = [k for r in report["proxy"] for k in r if k.endswith("_error")]
    report["ok"] = ok

    args.out.mkdir(parents=True, exist_ok=True)
    if cuda and not args.no_table:
        table = dispatch_table(report)
        path = dispatch.gpu_table_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(table, indent=2) + "\n")
        report["dispatch_table"] = {"path": str(path), **table}
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(report))
    failed = [r for r in report["compile"] + report["correctness"] if not r["ok"]]
    print(
        f"gpu_check: {'all correctness checks passed' if ok else f'{len(failed)} correctness checks FAILED'}"
        f"{'' if cuda else '; nothing was timed on a GPU'}"
        f"{f'; proxy errors: {errors}' if errors else ''}; "
        f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'} in {report['seconds']} s"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
