"""Op families: which torch modules, functions and tensor methods behave alike.

One catalogue for every part of autoprune that recognizes ops in a traced graph
(channel analysis, shape propagation, surgery, the executors). "Zero-preserving"
means f(0) == 0 elementwise, so a removed (zeroed) channel stays zero through it;
the "non-zero at zero" families turn a zero into something else (sigmoid(0) = 0.5).
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------- modules

CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSE_MODULES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
BATCH_NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
INSTANCE_NORM_MODULES = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
CHANNEL_NORM_MODULES = (*BATCH_NORM_MODULES, *INSTANCE_NORM_MODULES, nn.GroupNorm)
"""Norms with one affine weight (and optionally running stats) per channel."""

ZERO_PRESERVING_MODULES = (
    nn.ReLU, nn.SiLU, nn.GELU, nn.Hardswish, nn.ELU, nn.LeakyReLU, nn.Mish, nn.Tanh, nn.SELU, nn.CELU,
    nn.Softsign, nn.Tanhshrink, nn.Hardshrink, nn.Softshrink, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.Identity,
)  # fmt: skip
NONZERO_AT_ZERO_MODULES = (nn.Sigmoid, nn.Hardsigmoid, nn.Softplus, nn.LogSigmoid)
CONSTANT_PAD_MODULES = (nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)
SPATIAL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d, nn.Upsample,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d, nn.CircularPad1d, nn.CircularPad2d,
    nn.CircularPad3d,
)  # fmt: skip
"""Ops over the spatial dims only (pools, resampling, padding): channel i in, channel i out."""
SOFTMAX_MODULES = (nn.Softmax, nn.LogSoftmax, nn.Softmin)

# ------------------------------------------------------------- functions, methods

ZERO_PRESERVING_FUNCS = {
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.silu, F.gelu, F.hardswish, F.elu, F.leaky_relu,
    F.mish, torch.tanh, F.tanh, F.selu, torch.selu, F.celu, F.softsign, F.tanhshrink, F.hardshrink,
    F.softshrink, torch.abs, operator.neg, torch.neg, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
    F.alpha_dropout, F.feature_alpha_dropout, torch.clone, torch.square, torch.sin, torch.sinh,
    torch.detach,
}  # fmt: skip
NONZERO_AT_ZERO_FUNCS = {
    torch.sigmoid, F.sigmoid, F.hardsigmoid, torch.exp, F.softplus, torch.cos, F.logsigmoid, torch.log,
    torch.rsqrt, torch.reciprocal, torch.cosh,
}  # fmt: skip
SPATIAL_FUNCS = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
    F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.lp_pool1d, F.lp_pool2d, F.interpolate, F.upsample,
    F.upsample_nearest, F.upsample_bilinear, torch.max_pool2d, torch.avg_pool1d,
}  # fmt: skip
ZERO_PRESERVING_METHODS = {
    "relu", "relu_", "tanh", "tanh_", "contiguous", "clone", "detach", "float", "double", "half",
    "bfloat16", "to", "type", "abs", "abs_", "neg", "square", "requires_grad_", "cpu", "cuda",
}  # fmt: skip
NONZERO_AT_ZERO_METHODS = {"sigmoid", "sigmoid_", "exp", "exp_", "log", "rsqrt", "reciprocal", "cos"}
REDUCE_FUNCS = {torch.mean, torch.sum, torch.amax, torch.amin, torch.std, torch.var, torch.logsumexp}
REDUCE_METHODS = {"mean", "sum", "amax", "amin", "std", "var", "logsumexp"}
SOFTMAX_FUNCS = {F.softmax, F.log_softmax, torch.softmax}
SOFTMAX_METHODS = {"softmax", "log_softmax"}

# Binary elementwise ops by how they treat a zero operand: "add" (x + 0 = x, also max/min),
# "mul" (x * 0 = 0), "div" (0 / x = 0, x / 0 = inf).
ADD_FUNCS = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub}
MUL_FUNCS = {operator.mul, operator.imul, torch.mul}
DIV_FUNCS = {operator.truediv, operator.itruediv, torch.div, torch.true_divide}
ELEMENTWISE_MAX_FUNCS = {torch.maximum, torch.minimum}
BINARY_METHODS = {
    "add": "add", "add_": "add", "sub": "add", "sub_": "add", "mul": "mul", "mul_": "mul",
    "div": "div", "div_": "div", "maximum": "add", "minimum": "add",
}  # fmt: skip
RESIDUAL_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
RESIDUAL_ADD_METHODS = {"add", "add_"}

FLOP_HINTS = ("matmul", "mm", "einsum", "linear", "conv", "attention", "bilinear")
"""Substrings of op names that may cost multiply-accumulates worth counting."""

# --------------------------------------------------------------- shape keeping

SHAPE_KEEPING_MODULES = (
    *ZERO_PRESERVING_MODULES, *NONZERO_AT_ZERO_MODULES, *CHANNEL_NORM_MODULES, nn.LayerNorm, nn.PReLU,
    nn.Hardtanh, nn.Softmax, nn.LogSoftmax,
)  # fmt: skip
SHAPE_KEEPING_FUNCS = (ZERO_PRESERVING_FUNCS | NONZERO_AT_ZERO_FUNCS) - {torch.detach}
SHAPE_KEEPING_METHODS = (ZERO_PRESERVING_METHODS | NONZERO_AT_ZERO_METHODS) - {
    "to", "type", "cpu", "cuda", "float", "double", "half", "bfloat16",
}  # fmt: skip
"""Ops whose output has their first argument's shape, dtype and device."""
