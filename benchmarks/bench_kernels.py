"""Measure the fused kernels against plain torch.

    .venv/bin/python benchmarks/bench_kernels.py            # everything this machine can measure

CPU: every numba kernel module present in ``autoprune.kernels`` (called directly,
whether or not dispatch uses it) against the torch path, per op at MobileNetV2 /
ResNet-20 CIFAR layer shapes, with the ratio and what ``auto`` dispatch picks; then
the masked executor end to end (auto vs torch).
CUDA: Triton fused vs unfused torch/cuDNN per op (fp32 and fp16), then end-to-end
masked MobileNetV2 evaluation (images/s) through the masked executor with the
Triton kernels vs the torch references. Without a GPU the GPU rows print
"not measured (no GPU)". Figures are medians over ``--repeats`` timed runs after
warm-up; nothing here is estimated.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch
from _timing import time_cuda, timed

from autoprune import create_model, kernels
from autoprune.executor import MaskedExecutor

NOT_MEASURED = "not measured (no GPU)"

# (Cin, Cout, H) of MobileNetV2-CIFAR 1×1 convs; (C, H, stride) of its depthwise convs;
# (C, H) of conv outputs that take the generic BN epilogue (ResNet-20 stages, MobileNetV2 stem).
POINTWISE_SHAPES = [(16, 96, 32), (144, 24, 32), (32, 192, 16), (384, 64, 8), (960, 160, 4), (320, 1280, 4)]
DEPTHWISE_SHAPES = [(96, 32, 1), (144, 32, 2), (192, 16, 1), (384, 8, 1), (960, 4, 1)]
BN_ACT_SHAPES = [(16, 32), (32, 32), (32, 16), (64, 8)]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def time_cpu(fn: Callable[[], object], repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Median and minimum wall time of ``fn`` in milliseconds.

    The minimum is the better estimate on a machine shared with other work, the median
    on a quiet one; both are printed. The timing loop is _timing's :func:`timed`.
    """
    median, least = timed(fn, repeats, warmup)
    return median * 1e3, least * 1e3


@dataclass
class Case:
    """One op at one shape, half of its output channels masked."""

    op: str
    label: str
    x: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor
    mask: kernels.ChannelMask
    act: str
    weight: torch.Tensor | None = None
    stride: int = 1

    def run(self, backend: str) -> torch.Tensor:
        """Through the public op, with ``backend`` forced."""
        if self.op == "pointwise":
            return kernels.pointwise_conv_bn_act(
                self.x, self.weight, self.scale, self.shift, self.act, self.mask, backend=backend
            )
        if self.op == "depthwise":
            return kernels.depthwise_conv_bn_act(
                self.x, self.weight, self.scale, self.shift, self.stride, self.act, self.mask, backend=backend
            )
        return kernels.bn_mask_act(self.x, self.scale, self.shift, self.act, self.mask, backend=backend)

    def run_numba(self, module: ModuleType) -> torch.Tensor:
        """The numba kernel module directly, whether or not dispatch uses it."""
        code = kernels.ACTIVATIONS.index(self.act)
        if self.op == "pointwise":
            return module.pointwise(self.x, self.weight, self.scale, self.shift, code, self.mask, self.stride)
        if self.op == "depthwise":
            return module.depthwise(self.x, self.weight, self.scale, self.shift, self.stride, code, self.mask)
        return module.bn_act(self.x, self.scale, self.shift, code, self.mask)


def op_cases(batch: int, device: torch.device, dtype: torch.dtype, gen: torch.Generator) -> list[Case]:
    """Every benchmarked op and shape."""

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    def common(c):
        scale = (torch.rand(c, generator=gen) + 0.5).to(device)
        shift = torch.randn(c, generator=gen).to(device)
        mask = kernels.ChannelMask.from_bool((torch.rand(c, generator=gen) < 0.5).to(device))
        return {"scale": scale, "shift": shift, "mask": mask}

    cases = []
    for cin, cout, h in POINTWISE_SHAPES:
        x, w = rand(batch, cin, h, h), rand(cout, cin)
        cases.append(Case("pointwise", f"{cin}->{cout} @{h}x{h}", x, **common(cout), act="relu6", weight=w))
    for c, h, stride in DEPTHWISE_SHAPES:
        x, w = rand(batch, c, h, h), rand(c, 1, 3, 3)
        label = f"{c} @{h}x{h} s{stride}"
        cases.append(Case("depthwise", label, x, **common(c), act="relu6", weight=w, stride=stride))
    for c, h in BN_ACT_SHAPES:
        cases.append(Case("bn_act", f"{c} @{h}x{h}", rand(batch, c, h, h), **common(c), act="relu"))
    return cases


def numba_modules() -> dict[str, ModuleType]:
    """op → its numba kernel module, for every one present in the package."""
    found = {}
    for op in kernels.dispatch.OPS:
        name = f"autoprune.kernels.numba_{op}"
        if importlib.util.find_spec(name) is not None:
            found[op] = importlib.import_module(name)
    return found


def bench_cpu(batch: int, repeats: int) -> None:
    print(f"\n## CPU: numba kernel vs torch path (batch {batch}, fp32, half the channels masked)")
    modules = numba_modules()
    if not modules:
        print("no numba kernel in the package; nothing to compare")
        return
    print("ms as median / min over the repeats; ratios of the minima")
    print(f"{'op':<10} {'shape':<20} {'numba ms':>15} {'torch ms':>15} {'torch/numba':>12}  auto picks")
    gen = torch.Generator().manual_seed(0)
    for case in op_cases(batch, torch.device("cpu"), torch.float32, gen):
        if case.op not in modules:
            continue
        numba_med, numba_min = time_cpu(lambda case=case: case.run_numba(modules[case.op]), repeats)
        torch_med, torch_min = time_cpu(lambda case=case: case.run("torch"), repeats)
        picks = kernels.resolve_backend(case.op, case.x, "auto")
        print(
            f"{case.op:<10} {case.label:<20} {numba_med:>7.3f}/{numba_min:<7.3f} "
            f"{torch_med:>7.3f}/{torch_min:<7.3f} {torch_min / numba_min:>11.2f}x  {picks}"
        )


def bench_cpu_end_to_end(batch: int, repeats: int) -> None:
    print(f"\n## CPU: masked executor, images/s (batch {batch}, 32x32, fp32, every conv keeps 75%)")
    print(f"{'model':<12} {'auto img/s':>11} {'torch img/s':>12}  (minimum time; auto = numba where it won)")
    for arch in ("resnet20", "mobilenetv2"):
        model = create_model(arch, 10, 32).eval()
        x = torch.randn(batch, 3, 32, 32)
        auto, plain = MaskedExecutor(model, backend="auto"), MaskedExecutor(model, backend="torch")
        masks = random_plan_masks(auto, 0.75, x.device, seed=0)
        _, auto_ms = time_cpu(lambda auto=auto, masks=masks, x=x: auto(x, masks), repeats)
        _, torch_ms = time_cpu(lambda plain=plain, masks=masks, x=x: plain(x, masks), repeats)
        print(f"{arch:<12} {batch / auto_ms * 1e3:>11.0f} {batch / torch_ms * 1e3:>12.0f}")


def bench_gpu_ops(batch: int, repeats: int) -> None:
    print(f"\n## CUDA: fused Triton vs unfused torch/cuDNN per op (batch {batch}, half the channels masked)")
    header = f"{'op':<10} {'shape':<20} {'dtype':<9} {'triton ms':>10} {'torch ms':>10} {'torch/triton':>13}"
    print(header)
    if not torch.cuda.is_available():
        for op in ("pointwise", "depthwise", "bn_act"):
            print(f"{op:<10} {'all shapes':<20} {'fp32/16':<9} {NOT_MEASURED}")
        return
    device = torch.device("cuda")
    for dtype in (torch.float32, torch.float16):
        gen = torch.Generator().manual_seed(0)
        for case in op_cases(batch, device, dtype, gen):
            op, label = case.op, case.label
            triton_ms = time_cuda(lambda case=case: case.run("triton"), repeats)
            torch_ms = time_cuda(lambda case=case: case.run("torch"), repeats)
            name = str(dtype).removeprefix("torch.")
            ratio = torch_ms / triton_ms
            print(f"{op:<10} {label:<20} {name:<9} {triton_ms:>10.3f} {torch_ms:>10.3f} {ratio:>12.2f}x")


def random_plan_masks(executor: MaskedExecutor, keep: float, device: torch.device, seed: int):
    """A masked 'plan': every conv keeps a random ``keep`` fraction of its output channels (at least one)."""
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    for name in executor.conv_names:
        c = executor.out_channels(name)
        order = torch.randperm(c, generator=gen)[: max(1, round(keep * c))]
        mask = torch.zeros(c, dtype=torch.bool)
        mask[order] = True
        masks[name] = mask
    return executor.prepare_masks(masks, device)


def bench_gpu_end_to_end(batch: int, repeats: int) -> None:
    print(f"\n## CUDA: masked MobileNetV2-CIFAR proxy evaluation, images/s (batch {batch}, 32x32)")
    print(f"{'plan keep':<10} {'dtype':<9} {'triton img/s':>13} {'torch img/s':>12} {'dense img/s':>12}")
    if not torch.cuda.is_available():
        print(f"{'all':<10} {'fp32/16':<9} {NOT_MEASURED}")
        return
    for dtype in (torch.float32, torch.float16):
        end_to_end_rows(batch, repeats, dtype)


def end_to_end_rows(batch: int, repeats: int, dtype: torch.dtype) -> None:
    """One row per plan: executor with Triton kernels, with the torch references, and the dense model."""
    device = torch.device("cuda")
    model = create_model("mobilenetv2", 10, 32).to(device=device, dtype=dtype).eval()
    x = torch.randn(batch, 3, 32, 32, device=device, dtype=dtype)
    fused = MaskedExecutor(model, backend="triton")
    plain = MaskedExecutor(model, backend="torch")

    def dense() -> torch.Tensor:
        with torch.no_grad():
            return model(x)

    dense_ms = time_cuda(dense, repeats)
    name = str(dtype).removeprefix("torch.")
    for keep in (1.0, 0.75, 0.5):
        masks = random_plan_masks(fused, keep, device, seed=int(keep * 100))
        triton_ms = time_cuda(lambda masks=masks: fused(x, masks), repeats)
        torch_ms = time_cuda(lambda masks=masks: plain(x, masks), repeats)
        print(
            f"{keep:<10} {name:<9} {batch / triton_ms * 1e3:>13.0f} {batch / torch_ms * 1e3:>12.0f} "
            f"{batch / dense_ms * 1e3:>12.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-batch", type=int, default=32)
    parser.add_argument("--gpu-batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch and numba")
    args = parser.parse_args()
    if args.threads:
        import numba

        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"# bench_kernels: {cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}")
    print(f"# CPU threads (torch and numba) {torch.get_num_threads()}, GPU: {gpu}")
    bench_cpu(args.cpu_batch, args.repeats)
    bench_cpu_end_to_end(args.cpu_batch, max(3, args.repeats // 4))
    bench_gpu_ops(args.gpu_batch, args.repeats)
    bench_gpu_end_to_end(args.gpu_batch, args.repeats)


if __name__ == "__main__":
    main()
