"""Every fused-kernel backend against the plain-torch references, on tiny odd shapes.

Backends: ``torch`` (the CPU sliced 1×1 path), ``numba`` (the CPU kernels that
dispatch keeps) and ``triton`` (the CUDA kernels run by ``TRITON_INTERPRET=1`` on
CPU tensors). Triton block sizes are forced small so every dimension spans
several blocks with a ragged last one; :func:`test_triton_gpu_blocks_on_real_layer_shapes`
runs the blocks a GPU launch picks on real MobileNetV2 / ResNet-50 layer shapes.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from autoprune import AutopruneError
from autoprune.kernels import (
    ACTIVATIONS,
    ChannelMask,
    bn_mask_act,
    bn_mask_act_reference,
    depthwise_conv_bn_act,
    depthwise_conv_bn_act_reference,
    fold_bn,
    pointwise_conv_bn_act,
    pointwise_conv_bn_act_reference,
)
from autoprune.kernels.dispatch import triton_module
from autoprune.kernels.reference import TOLERANCES
from autoprune.kernels.triton_common import launch_blocks

BACKENDS = ["torch", "numba", "triton"]


@pytest.fixture
def backend(request, monkeypatch):
    if request.param == "triton":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    return request.param


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _masks(c: int, g: torch.Generator) -> dict[str, torch.Tensor | None]:
    random = torch.rand(c, generator=g) < 0.5
    random[0], random[-1] = True, False  # both kinds present whatever the draw
    return {
        "no mask": None,
        "random": random,
        "all masked": torch.zeros(c, dtype=torch.bool),
        "none masked": torch.ones(c, dtype=torch.bool),
    }


def _affine(c: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g)


def _cases(masks: dict, strides=(1, 2)):
    """(mask name, mask, activation, stride): every mask × stride, and every activation.

    Activations only touch the epilogue, so each appears at least once per stride on the
    random mask rather than in a full product (the interpreter is slow).
    """
    for i, (mname, mask) in enumerate(masks.items()):
        for stride in strides:
            yield mname, mask, ACTIVATIONS[i % len(ACTIVATIONS)], stride
    for act in ACTIVATIONS:
        for stride in strides:
            yield "random", masks["random"], act, stride


def _check(y: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None, what: str, atol=1e-4, rtol=1e-4):
    assert y.shape == ref.shape, what
    assert y.dtype == ref.dtype, what
    torch.testing.assert_close(y.float(), ref.float(), atol=atol, rtol=rtol, msg=what)
    if mask is not None:
        assert (y[:, ~mask] == 0).all(), f"{what}: masked channels must be exact zeros"


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_pointwise_matches_reference(backend):
    g = _gen(1)
    x = torch.randn(2, 19, 5, 7, generator=g)
    w = torch.randn(37, 19, generator=g)
    scale, shift = _affine(37, g)
    for mname, mask, act, stride in _cases(_masks(37, g)):
        what = f"{backend} pointwise {mname} {act} stride {stride}"
        ref = pointwise_conv_bn_act_reference(x, w, scale, shift, act, mask, stride=stride)
        if backend == "triton":
            cmask = ChannelMask.from_bool(mask) if mask is not None else None
            y = triton_module("triton_pointwise").pointwise(
                x, w, scale, shift, ACTIVATIONS.index(act), cmask, stride, blocks=(16, 16, 16)
            )
        else:
            y = pointwise_conv_bn_act(x, w, scale, shift, act, mask, stride=stride, backend=backend)
        _check(y, ref, mask, what)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_depthwise_matches_reference(backend):
    g = _gen(2)
    for n, c, h, w in ((2, 21, 9, 6), (1, 3, 1, 2)):
        x = torch.randn(n, c, h, w, generator=g)
        wt = torch.randn(c, 1, 3, 3, generator=g)
        scale, shift = _affine(c, g)
        for mname, mask, act, stride in _cases(_masks(c, g)):
            what = f"{backend} depthwise {(n, c, h, w)} {mname} {act} stride {stride}"
            ref = depthwise_conv_bn_act_reference(x, wt, scale, shift, stride, act, mask)
            if backend == "triton":
                cmask = ChannelMask.from_bool(mask) if mask is not None else None
                y = triton_module("triton_depthwise").depthwise(
                    x, wt, scale, shift, stride, ACTIVATIONS.index(act), cmask, blocks=(16, 32)
                )
            else:
                y = depthwise_conv_bn_act(x, wt, scale, shift, stride, act, mask, backend=backend)
            _check(y, ref, mask, what)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_bn_mask_act_matches_reference(backend):
    g = _gen(3)
    x = torch.randn(2, 13, 5, 3, generator=g)
    scale, shift = _affine(13, g)
    for layout in ("contiguous", "channels_last"):
        xin = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
        for mname, mask, act, _ in _cases(_masks(13, g), strides=(1,)):
            what = f"{backend} bn_mask_act {layout} {mname} {act}"
            ref = bn_mask_act_reference(x, scale, shift, act, mask)
            if backend == "triton":
                cmask = ChannelMask.from_bool(mask) if mask is not None else None
                y = triton_module("triton_bn_act").bn_act(
                    xin, scale, shift, ACTIVATIONS.index(act), cmask, blocks=(4, 16)
                )
            else:
                y = bn_mask_act(xin, scale, shift, act, mask, backend=backend)
            _check(y, ref, mask, what, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["triton"], indirect=True)
@pytest.mark.parametrize(
    ("dtype", "atol", "rtol"), [(torch.float16, 2e-2, 1e-2), (torch.bfloat16, 1e-1, 2e-2)]
)
def test_triton_half_precisions(backend, dtype, atol, rtol):
    """fp16/bf16 inputs against the fp32 reference on the same rounded inputs (fp32 accumulation)."""
    g = _gen(4)
    x = torch.randn(2, 19, 5, 7, generator=g).to(dtype)
    w = torch.randn(37, 19, generator=g).to(dtype)
    wd = torch.randn(19, 1, 3, 3, generator=g).to(dtype)
    s37, t37 = _affine(37, g)
    s19, t19 = _affine(19, g)
    m37, m19 = _masks(37, g)["random"], _masks(19, g)["random"]
    for stride in (1, 2):
        y = pointwise_conv_bn_act(x, w, s37, t37, "hardswish", m37, stride=stride, backend="triton")
        ref = pointwise_conv_bn_act_reference(x.float(), w.float(), s37, t37, "hardswish", m37, stride=stride)
        _check(y, ref.to(dtype), m37, f"pointwise {dtype} stride {stride}", atol=atol, rtol=rtol)
        y = depthwise_conv_bn_act(x, wd, s19, t19, stride, "relu6", m19, backend="triton")
        ref = depthwise_conv_bn_act_reference(x.float(), wd.float(), s19, t19, stride, "relu6", m19)
        _check(y, ref.to(dtype), m19, f"depthwise {dtype} stride {stride}", atol=atol, rtol=rtol)
    y = bn_mask_act(x, s19, t19, "relu", m19, backend="triton")
    ref = bn_mask_act_reference(x.float(), s19, t19, "relu", m19)
    _check(y, ref.to(dtype), m19, f"bn_mask_act {dtype}", atol=atol, rtol=rtol)


@pytest.mark.parametrize("backend", ["torch", "triton"], indirect=True)
def test_pointwise_compact_leaves_masked_channels_out(backend):
    g = _gen(5)
    x = torch.randn(2, 19, 5, 7, generator=g)
    w = torch.randn(37, 19, generator=g)
    scale, shift = _affine(37, g)
    for mname, mask in _masks(37, g).items():
        if mask is None:
            continue
        y = pointwise_conv_bn_act(x, w, scale, shift, "relu", mask, compact=True, backend=backend)
        full = pointwise_conv_bn_act_reference(x, w, scale, shift, "relu", None)
        torch.testing.assert_close(y, full[:, mask], atol=1e-4, rtol=1e-4, msg=f"{backend} compact {mname}")


@pytest.mark.parametrize("backend", ["triton"], indirect=True)
def test_triton_default_blocks_and_prepared_mask(backend):
    """The launch heuristics (no forced blocks) and a mask prepared once and reused."""
    g = _gen(6)
    x = torch.randn(1, 70, 6, 6, generator=g)
    w = torch.randn(130, 70, generator=g)
    scale, shift = _affine(130, g)
    mask = ChannelMask.from_bool(torch.rand(130, generator=g) < 0.3)
    for _ in range(2):
        y = pointwise_conv_bn_act(x, w, scale, shift, "relu6", mask, backend="triton")
        ref = pointwise_conv_bn_act_reference(x, w, scale, shift, "relu6", mask)
        _check(y, ref, mask.keep, "pointwise default blocks")


def test_numba_falls_back_to_torch_for_other_dtypes():
    g = _gen(7)
    x = torch.randn(1, 4, 5, 5, generator=g, dtype=torch.float64)
    scale, shift = _affine(4, g)
    y = bn_mask_act(x, scale, shift, "relu", None, backend="numba")
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, bn_mask_act_reference(x, scale, shift, "relu"))


def test_reference_is_conv_bn_activation_then_dead_channels():
    """The references equal the nn modules they replace, with masked channels as dead channels."""
    g = _gen(8)
    torch.manual_seed(0)
    for conv, act_module, act in (
        (nn.Conv2d(6, 10, 1, stride=2, bias=True), nn.ReLU6(), "relu6"),
        (nn.Conv2d(10, 10, 3, stride=2, padding=1, groups=10, bias=False), nn.Hardswish(), "hardswish"),
        (nn.Conv2d(6, 10, 3, padding=1, bias=True), nn.ReLU(), "relu"),
    ):
        bn = nn.BatchNorm2d(10).eval()
        bn.running_mean.normal_(generator=g)
        bn.running_var.uniform_(0.5, 2.0, generator=g)
        bn.weight.data.uniform_(0.5, 1.5, generator=g)
        bn.bias.data.normal_(generator=g)
        mask = torch.rand(10, generator=g) < 0.5
        x = torch.randn(2, conv.in_channels, 7, 7, generator=g)
        with torch.no_grad():
            for tensor in (conv.weight, bn.weight, bn.bias) + ((conv.bias,) if conv.bias is not None else ()):
                tensor[~mask] = 0  # the dead-channel model
            expected = act_module(bn(conv(x)))
        scale, shift = fold_bn(bn, conv.bias)
        if conv.kernel_size == (1, 1):
            got = pointwise_conv_bn_act_reference(x, conv.weight, scale, shift, act, mask, stride=2)
        elif conv.groups > 1:
            got = depthwise_conv_bn_act_reference(x, conv.weight, scale, shift, 2, act, mask)
        else:
            got = bn_mask_act_reference(conv._conv_forward(x, conv.weight, None), scale, shift, act, mask)
        torch.testing.assert_close(got.detach(), expected, atol=1e-5, rtol=1e-5)


def test_fold_bn_variants():
    bias = torch.tensor([1.0, -2.0])
    scale, shift = fold_bn(None, bias)
    assert scale.tolist() == [1.0, 1.0] and shift.tolist() == [1.0, -2.0]
    scale, shift = fold_bn(None, None, channels=3)
    assert scale.tolist() == [1.0] * 3 and shift.tolist() == [0.0] * 3
    plain = nn.BatchNorm2d(2, affine=False).eval()
    plain.running_mean.fill_(1.0)
    plain.running_var.fill_(4.0 - plain.eps)
    scale, shift = fold_bn(plain)
    torch.testing.assert_close(scale, torch.full((2,), 0.5))
    torch.testing.assert_close(shift, torch.full((2,), -0.5))
    with pytest.raises(AutopruneError, match="running statistics"):
        fold_bn(nn.BatchNorm2d(2, track_running_stats=False))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda x: pointwise_conv_bn_act(x, torch.randn(5, 3), torch.ones(5), torch.zeros(5)),
            "weight must be",
        ),
        (
            lambda x: pointwise_conv_bn_act(x, torch.randn(5, 4), torch.ones(4), torch.zeros(5)),
            "scale and shift",
        ),
        (
            lambda x: pointwise_conv_bn_act(x, torch.randn(5, 4), torch.ones(5), torch.zeros(5), "gelu"),
            "gelu",
        ),
        (
            lambda x: pointwise_conv_bn_act(
                x, torch.randn(5, 4), torch.ones(5), torch.zeros(5), out_mask=torch.ones(4, dtype=torch.bool)
            ),
            "4 entries",
        ),
        (
            lambda x: bn_mask_act(x, torch.ones(4), torch.zeros(4), mask=torch.ones(4)),
            "1-D bool",
        ),
        (lambda x: depthwise_conv_bn_act(x, torch.randn(4, 1, 5, 5), torch.ones(4), torch.zeros(4)), "3, 3"),
        (
            lambda x: depthwise_conv_bn_act(x, torch.randn(4, 1, 3, 3), torch.ones(4), torch.zeros(4), 3),
            "stride",
        ),
        (lambda x: bn_mask_act(x[0], torch.ones(4), torch.zeros(4)), "NCHW"),
    ],
)
def test_invalid_arguments_are_user_errors(call, match):
    with pytest.raises(AutopruneError, match=match):
        call(torch.randn(1, 4, 3, 3))


# Real layer shapes at small planes (the interpreter is slow): MobileNetV2's 96→24 and
# 144→24 projections, 24→144 expansion and 144-channel depthwise, ResNet-50's 256→64 and
# 64→256 bottleneck 1×1s and its BN epilogue at 64 and 256 channels. Planes are ragged
# against the GPU's pixel blocks.
REAL_SHAPES = [
    ("pointwise", "mobilenetv2 96->24", {"cin": 96, "cout": 24, "hw": (9, 9), "stride": 1}),
    ("pointwise", "mobilenetv2 144->24", {"cin": 144, "cout": 24, "hw": (8, 8), "stride": 1}),
    ("pointwise", "mobilenetv2 24->144", {"cin": 24, "cout": 144, "hw": (8, 8), "stride": 1}),
    ("pointwise", "resnet50 256->64", {"cin": 256, "cout": 64, "hw": (7, 7), "stride": 1}),
    ("pointwise", "resnet50 64->256 stride 2", {"cin": 64, "cout": 256, "hw": (7, 7), "stride": 2}),
    ("depthwise", "mobilenetv2 144", {"c": 144, "hw": (8, 8), "stride": 1}),
    ("depthwise", "mobilenetv2 144 stride 2", {"c": 144, "hw": (9, 9), "stride": 2}),
    ("bn_act", "resnet50 64", {"c": 64, "hw": (7, 7)}),
    ("bn_act", "resnet50 256", {"c": 256, "hw": (7, 7)}),
]


def _real_case(kind: str, dims: dict, dtype: torch.dtype, g: torch.Generator):
    """(run with given blocks, float64 reference cast to ``dtype``, mask, GPU launch blocks) for one shape."""
    acts = {"pointwise": "relu6", "depthwise": "hardswish", "bn_act": "relu"}
    act = acts[kind]
    code = ACTIVATIONS.index(act)
    c = dims.get("cout", dims.get("c"))
    x = torch.randn(2, dims.get("cin", c), *dims["hw"], generator=g).to(dtype)
    scale, shift = _affine(c, g)
    keep = _masks(c, g)["random"]
    mask = ChannelMask.from_bool(keep)
    stride = dims.get("stride", 1)
    ho, wo = ((h - 1) // stride + 1 for h in dims["hw"])
    x64 = x.double()
    if kind == "pointwise":
        w = (torch.randn(c, dims["cin"], generator=g) / dims["cin"] ** 0.5).to(dtype)
        ref = pointwise_conv_bn_act_reference(x64, w.double(), scale, shift, act, keep, stride=stride)
        blocks = launch_blocks("pointwise", c, ho * wo, dims["cin"], interpreted=False)
        module = triton_module("triton_pointwise")

        def run(b):
            return module.pointwise(x, w, scale, shift, code, mask, stride, blocks=b)

    elif kind == "depthwise":
        w = (torch.randn(c, 1, 3, 3, generator=g) / 3).to(dtype)
        ref = depthwise_conv_bn_act_reference(x64, w.double(), scale, shift, stride, act, keep)
        blocks = launch_blocks("depthwise", c, ho * wo, interpreted=False)
        module = triton_module("triton_depthwise")

        def run(b):
            return module.depthwise(x, w, scale, shift, stride, code, mask, blocks=b)

    else:
        ref = bn_mask_act_reference(x64, scale, shift, act, keep)
        blocks = launch_blocks("bn_act", c, ho * wo, interpreted=False)
        module = triton_module("triton_bn_act")

        def run(b):
            return module.bn_act(x, scale, shift, code, mask, blocks=b)

    return run, ref.to(dtype), keep, blocks


@pytest.mark.parametrize("backend", ["triton"], indirect=True)
@pytest.mark.parametrize(("dtype", "precision"), [(torch.float32, "fp32"), (torch.float16, "fp16")])
def test_triton_gpu_blocks_on_real_layer_shapes(backend, dtype, precision):
    """The blocks a GPU launch picks (not the interpreter's), on MobileNetV2 / ResNet-50 layer shapes.

    Against the float64 reference on the same rounded inputs, at :data:`TOLERANCES` of the
    input precision (TF32 has no interpreter emulation: ``benchmarks/gpu_check.py`` covers it).
    """
    atol, rtol = TOLERANCES[precision]
    g = _gen(9)
    for kind, name, dims in REAL_SHAPES:
        run, ref, keep, blocks = _real_case(kind, dims, dtype, g)
        assert blocks == launch_blocks(kind, *_dims_for(kind, dims), interpreted=False)
        what = f"{name} {precision} blocks {blocks}"
        _check(run(blocks), ref, keep, what, atol=atol, rtol=rtol)


def _dims_for(kind: str, dims: dict) -> tuple[int, ...]:
    stride = dims.get("stride", 1)
    p = math.prod((h - 1) // stride + 1 for h in dims["hw"])
    return (dims["cout"], p, dims["cin"]) if kind == "pointwise" else (dims["c"], p)


def test_gpu_launch_blocks_differ_from_the_interpreters():
    """What the GPU test above guards: a GPU launch caps blocks lower than the interpreter does."""
    assert launch_blocks("pointwise", 256, 3136, 256, interpreted=False) == (64, 64, 32)
    assert launch_blocks("pointwise", 256, 3136, 256, interpreted=True) == (256, 1024, 256)
    assert launch_blocks("depthwise", 144, 9, interpreted=False) == (16, 16)
    assert launch_blocks("bn_act", 3, 5000, interpreted=False) == (4, 256)
