"""Measure the fused kernels against plain torch.

    .venv/bin/python benchmarks/bench_kernels.py            # everything this machine can measure

CPU: every numba kernel that dispatch uses (``NUMBA_OPS``) against the torch
path, per op at MobileNetV2 / ResNet-20 CIFAR layer shapes, with the ratio, then
the masked executor end to end (auto vs torch).
CUDA: Triton fused vs unfused torch/cuDNN per op (fp32 and fp16), then end-to-end
masked MobileNetV2 evaluation (images/s) through the masked executor with the
Triton kernels vs the torch references. Without a GPU the GPU rows print
"not measured (no GPU)". Figures are medians over ``--repeats`` timed runs after
warm-up; nothing here is estimated.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

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


def time_cpu(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def time_cuda(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median GPU time of ``fn`` in milliseconds (CUDA events)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def op_cases(batch: int, device: torch.device, dtype: torch.dtype, gen: torch.Generator):
    """(op, label, call(backend), input) for every benchmarked shape, with half the channels masked."""

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    def affine(c):
        return (torch.rand(c, generator=gen) + 0.5).to(device), torch.randn(c, generator=gen).to(device)

    def half_mask(c):
        return kernels.ChannelMask.from_bool((torch.rand(c, generator=gen) < 0.5).to(device))

    pointwise = kernels.pointwise_conv_bn_act
    cases = []
    for cin, cout, h in POINTWISE_SHAPES:
        x, w, (s, t), m = rand(batch, cin, h, h), rand(cout, cin), affine(cout), half_mask(cout)
        cases.append(
            (
                "pointwise",
                f"{cin}->{cout} @{h}x{h}",
                lambda b, x=x, w=w, s=s, t=t, m=m: pointwise(x, w, s, t, "relu6", m, backend=b),
                x,
            )
        )
    for c, h, stride in DEPTHWISE_SHAPES:
        x, w, (s, t), m = rand(batch, c, h, h), rand(c, 1, 3, 3), affine(c), half_mask(c)
        cases.append(
            (
                "depthwise",
                f"{c} @{h}x{h} s{stride}",
                lambda b, x=x, w=w, s=s, t=t, m=m, st=stride: kernels.depthwise_conv_bn_act(
                    x, w, s, t, st, "relu6", m, backend=b
                ),
                x,
            )
        )
    for c, h in BN_ACT_SHAPES:
        x, (s, t), m = rand(batch, c, h, h), affine(c), half_mask(c)
        cases.append(
            (
                "bn_act",
                f"{c} @{h}x{h}",
                lambda b, x=x, s=s, t=t, m=m: kernels.bn_mask_act(x, s, t, "relu", m, backend=b),
                x,
            )
        )
    return cases


def bench_cpu(batch: int, repeats: int) -> None:
    print(f"\n## CPU: numba vs torch (batch {batch}, fp32, half the channels masked)")
    if not kernels.NUMBA_OPS:
        print("no numba kernel is dispatched (none beat torch); nothing to compare")
        return
    print(f"{'op':<10} {'shape':<20} {'numba ms':>10} {'torch ms':>10} {'torch/numba':>12}  auto picks")
    gen = torch.Generator().manual_seed(0)
    for op, label, call, x in op_cases(batch, torch.device("cpu"), torch.float32, gen):
        if op not in kernels.NUMBA_OPS:
            continue
        numba_ms = time_cpu(lambda call=call: call("numba"), repeats)
        torch_ms = time_cpu(lambda call=call: call("torch"), repeats)
        picks = kernels.resolve_backend(op, x, "auto")
        ratio = torch_ms / numba_ms
        print(f"{op:<10} {label:<20} {numba_ms:>10.3f} {torch_ms:>10.3f} {ratio:>11.2f}x  {picks}")


def bench_cpu_end_to_end(batch: int, repeats: int) -> None:
    print(f"\n## CPU: masked executor, images/s (batch {batch}, 32x32, fp32, every conv keeps 75%)")
    print(f"{'model':<12} {'auto img/s':>11} {'torch img/s':>12}  (auto = numba where it won, else torch)")
    for arch in ("resnet20", "mobilenetv2"):
        model = create_model(arch, 10, 32).eval()
        x = torch.randn(batch, 3, 32, 32)
        auto, plain = MaskedExecutor(model, backend="auto"), MaskedExecutor(model, backend="torch")
        masks = random_plan_masks(auto, 0.75, x.device, seed=0)
        auto_ms = time_cpu(lambda auto=auto, masks=masks, x=x: auto(x, masks), repeats)
        torch_ms = time_cpu(lambda plain=plain, masks=masks, x=x: plain(x, masks), repeats)
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
        for op, label, call, _ in op_cases(batch, device, dtype, gen):
            triton_ms = time_cuda(lambda call=call: call("triton"), repeats)
            torch_ms = time_cuda(lambda call=call: call("torch"), repeats)
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
    args = parser.parse_args()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"# bench_kernels: {cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}")
    print(f"# torch threads {torch.get_num_threads()}, GPU: {gpu}")
    bench_cpu(args.cpu_batch, args.repeats)
    bench_cpu_end_to_end(args.cpu_batch, max(3, args.repeats // 4))
    bench_gpu_ops(args.gpu_batch, args.repeats)
    bench_gpu_end_to_end(args.gpu_batch, args.repeats)


if __name__ == "__main__":
    main()
