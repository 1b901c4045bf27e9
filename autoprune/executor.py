"""The masked executor: inference of a network with some conv output channels switched off.

Proxy scoring runs thousands of passes over one network where a candidate
differs from the dense model only in which channels are dead. Instead of
building a model per candidate, :class:`MaskedExecutor` traces the model once
(torch.fx), folds every ``conv → BN → activation`` chain into one fused op from
:mod:`autoprune.kernels`, and takes the masks as a call argument:

    executor = MaskedExecutor(model.eval(), example_inputs=x[:2])
    logits = executor(x, {"features.1.conv.0.0": keep_bool_vector, ...})

A mask keyed by a conv's qualified name zeroes that conv's masked output channels
after its BN and activation, which is exactly the *dead-channel* model: the same
network with those channels' conv weights and bias and BN γ and β set to zero.
Shapes never change with the mask, so nothing is rebuilt or re-tuned per candidate.

Fused chains use the BN's running statistics (eval semantics) whatever the BN's
``training`` flag; the rest of the graph runs as the original modules. When the
model's parameters or BN statistics change in place, the folded BN is recomputed
on the next call; after replacing parameter tensors outright call
:meth:`MaskedExecutor.refresh`.

The fused op of one chain is :class:`KernelConv`; the sensitivity engine
(:mod:`autoprune.sensitivity.engine`) runs the same class without masks on CUDA,
where SR-init's and SBPF's perturbed units are ordinary (re-folded) weights.

:meth:`MaskedExecutor.recalibrated` re-estimates the fused BNs' statistics of the
masked network on a few batches (what :func:`autoprune.recalibration.recalibrate_batchnorm`
does to a pruned model) and returns the masked network that uses them, leaving the
model's own statistics untouched:

    run = executor.recalibrated(recal_images, masks)
    logits = run(x)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from autoprune.errors import AutopruneError
from autoprune.fx.fusion import batchnorm_affine, conv_chains, is_plain_conv, replace_chain
from autoprune.fx.tracing import trace
from autoprune.kernels import (
    ACTIVATIONS,
    ChannelMask,
    bn_mask_act,
    depthwise_conv_bn_act,
    pointwise_conv_bn_act,
)
from autoprune.kernels.dispatch import requested_backend

__all__ = ["KernelConv", "MaskedExecutor", "PreparedMasks", "Recalibrated"]


@dataclass(frozen=True)
class PreparedMasks:
    """Masks validated and converted once (see :meth:`MaskedExecutor.prepare_masks`)."""

    masks: dict[str, ChannelMask]
    device: torch.device


class _State:
    """What every fused op reads during one call: the masks, the backend, and BN statistics.

    ``moments`` (recalibration pass): where each fused BN adds its batch statistics; the
    BNs then normalize with the batch's own statistics, like a BN in training mode.
    ``affines``: folded BN affines that replace the running statistics' (a recalibrated run).
    """

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.masks: dict[str, ChannelMask] = {}
        self.moments: dict[_MaskedKernelConv, _Moments] | None = None
        self.affines: Mapping[_MaskedKernelConv, tuple[torch.Tensor, torch.Tensor]] | None = None


class _Moments:
    """Cumulative average of one BN's batch mean and unbiased batch variance (BN momentum=None)."""

    def __init__(self) -> None:
        self.batches = 0
        self.mean: torch.Tensor | float = 0.0
        self.var: torch.Tensor | float = 0.0

    def add(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        self.batches += 1
        self.mean = self.mean + mean.double()
        self.var = self.var + var.double()

    def result(self, channels: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(running_mean, running_var) as ``recalibrate_batchnorm`` leaves them; reset values if no batch."""
        if self.batches == 0:
            return torch.zeros(channels, device=device), torch.ones(channels, device=device)
        assert isinstance(self.mean, torch.Tensor) and isinstance(self.var, torch.Tensor)
        return (self.mean / self.batches).float(), (self.var / self.batches).float()


def _folded(
    conv: nn.Conv2d,
    bn: _BatchNorm | None,
    stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    conv_bias: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fp32 ``(scale, shift)`` a fused op applies after the bias-free conv.

    Folds the conv's bias (unless ``conv_bias`` is False) and ``bn`` with its running
    statistics, or ``stats`` = (mean, var) in their place; without a BN, the identity
    plus the bias.
    """
    bias = conv.bias.detach().float() if conv_bias and conv.bias is not None else None
    if bn is None:
        if bias is None:
            return torch.ones(conv.out_channels), torch.zeros(conv.out_channels)
        return torch.ones_like(bias), bias.clone()
    mean, var = stats if stats is not None else (bn.running_mean, bn.running_var)
    return batchnorm_affine(
        mean.detach().float(),
        var.detach().float(),
        bn.eps,
        None if bn.weight is None else bn.weight.detach().float(),
        None if bn.bias is None else bn.bias.detach().float(),
        bias,
    )


def _conv_kind(conv: nn.Conv2d) -> str:
    """Which fused op runs this conv: ``pointwise``, ``depthwise`` or ``generic`` (torch conv + epilogue)."""
    zeros = conv.padding_mode == "zeros"
    if (
        conv.kernel_size == (1, 1)
        and conv.groups == 1
        and conv.padding in ((0, 0), "valid")
        and conv.stride[0] == conv.stride[1]
        and zeros
    ):
        return "pointwise"
    if (
        conv.kernel_size == (3, 3)
        and conv.groups == conv.in_channels == conv.out_channels
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.stride in ((1, 1), (2, 2))
        and zeros
    ):
        return "depthwise"
    return "generic"


class KernelConv(nn.Module):
    """A 2-d conv run by the fused ops of :mod:`autoprune.kernels`:
    ``act(conv(x, weight) · scale + shift)``, masked output channels zero.

    Holds the conv's geometry (a plain reference: the conv module itself is not registered);
    :meth:`run` takes the weight, the folded affine and the mask, so a subclass decides where
    they come from: :class:`_MaskedKernelConv` (the masked executor) folds the model's own
    conv and BN and takes per-call masks; the sensitivity engine's
    :class:`~autoprune.sensitivity.engine.FoldedKernelConv` holds BN-folded weights as its own
    parameters and runs without a mask.
    """

    def __init__(self, conv: nn.Conv2d, act: str) -> None:
        super().__init__()
        self.act = act
        self.kind = _conv_kind(conv)
        self._geometry = (conv,)  # a tuple is not registered

    @staticmethod
    def accepts(module: nn.Module | None) -> bool:
        """Whether ``module`` is a conv a :class:`KernelConv` runs (any plain ``nn.Conv2d``)."""
        return is_plain_conv(module, (nn.Conv2d,))

    def run(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        scale: torch.Tensor,
        shift: torch.Tensor,
        act: str,
        mask: ChannelMask | None,
        backend: str,
    ) -> torch.Tensor:
        """``act(conv(x, weight) · scale + shift)`` by the fused op for this conv's kind."""
        conv = self._geometry[0]
        if self.kind == "pointwise":
            return pointwise_conv_bn_act(
                x, weight, scale, shift, act, mask, stride=conv.stride[0], backend=backend
            )
        if self.kind == "depthwise":
            return depthwise_conv_bn_act(x, weight, scale, shift, conv.stride[0], act, mask, backend=backend)
        y = conv._conv_forward(x, weight, None)
        return bn_mask_act(y, scale, shift, act, mask, backend=backend)


class _MaskedKernelConv(KernelConv):
    """One ``conv [→ BN] [→ activation]`` chain of the masked executor: the model's own conv
    and BN, re-folded when they change, and the call's mask for this conv.

    (The sensitivity engine fuses the same chains, found by the same
    :func:`~autoprune.fx.fusion.conv_chains`, into oneDNN calls on the CPU and into
    :class:`KernelConv` ops on CUDA, without masks.)
    """

    def __init__(
        self,
        name: str,
        conv: nn.Conv2d,
        bn: _BatchNorm | None,
        act: str,
        state: _State,
        bn_name: str | None = None,
    ):
        super().__init__(conv, act)
        self.name = name
        self.bn_name = bn_name
        # Plain references (a tuple is not registered): the modules stay owned by the traced graph.
        self._src = (conv, bn)
        self._state = state
        self._stamp: tuple | None = None
        self._scale = torch.empty(0)
        self._shift = torch.empty(0)
        self._bias_only = (torch.empty(0), torch.empty(0))  # the conv bias alone as an affine

    def _tensors(self) -> list[torch.Tensor]:
        conv, bn = self._src
        found = [conv.weight, conv.bias]
        if bn is not None:
            found += [bn.weight, bn.bias, bn.running_mean, bn.running_var]
        return [t for t in found if t is not None]

    def refresh(self, force: bool = False) -> None:
        """Re-fold the BN when a source tensor was replaced or modified in place since the last fold."""
        stamp = tuple((id(t), t._version, t.device) for t in self._tensors())
        if force or stamp != self._stamp:
            conv, bn = self._src
            device = conv.weight.device
            scale, shift = _folded(conv, bn)
            self._scale = scale.to(device)
            self._shift = shift.to(device)
            self._bias_only = tuple(t.to(device) for t in _folded(conv, None))
            self._stamp = stamp

    def _run(
        self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, act: str, mask: ChannelMask | None
    ) -> torch.Tensor:
        return self.run(x, self._src[0].weight, scale, shift, act, mask, self._state.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.refresh()
        mask = self._state.masks.get(self.name)
        bn = self._src[1]
        if bn is not None and self._state.moments is not None:
            return self._forward_batch_stats(x, bn, mask, self._state.moments)
        found = self._state.affines.get(self) if self._state.affines is not None else None
        scale, shift = found if found is not None else (self._scale, self._shift)
        return self._run(x, scale, shift, self.act, mask)

    def _forward_batch_stats(
        self,
        x: torch.Tensor,
        bn: _BatchNorm,
        mask: ChannelMask | None,
        moments: dict[_MaskedKernelConv, _Moments],
    ) -> torch.Tensor:
        """Recalibration pass: normalize with this batch's statistics and add them to ``moments``.

        Same as a BN in training mode: the batch mean and *biased* variance normalize, the
        *unbiased* variance is what the running average accumulates.
        """
        y = self._run(x, *self._bias_only, "none", mask)  # conv + bias, before the BN
        var, mean = torch.var_mean(y.float(), dim=(0, 2, 3), correction=0)
        n = y.numel() // y.shape[1]
        if n < 2:
            raise AutopruneError(
                f"cannot recalibrate the BN after {self.name!r}: it sees 1 value per channel "
                f"(input {tuple(x.shape)}); use batches of more than one image"
            )
        moments.setdefault(self, _Moments()).add(mean, var * (n / (n - 1)))
        scale, shift = _folded(self._src[0], bn, (mean, var), conv_bias=False)
        return bn_mask_act(y, scale, shift, self.act, mask, backend=self._state.backend)


class MaskedExecutor(nn.Module):
    """Inference of ``model`` with per-conv output-channel masks, through the fused kernels.

    Args:
        model: the network; a fused chain always uses its BN's running statistics.
        example_inputs: optional batch; when given, the traced and fused graph is checked
            against ``model`` on it once (the model must then be in eval mode).
        backend: ``auto`` (Triton on CUDA, numba on CPU where it wins, else torch; the
            ``AUTOPRUNE_KERNELS`` variable overrides), or ``torch`` / ``triton`` / ``numba``.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: torch.Tensor | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        requested_backend(backend)  # rejects an invalid name now, not at the first call
        self._state = _State(backend)
        self.graph_module, _ = trace(model)
        self._fused: dict[str, list[_MaskedKernelConv]] = {}
        self._fuse()
        if example_inputs is not None:
            self._check_against(model, example_inputs)

    @property
    def backend(self) -> str:
        return self._state.backend

    @property
    def conv_names(self) -> list[str]:
        """Qualified names of the convs that accept a mask, in graph order."""
        return list(self._fused)

    @property
    def fused_norms(self) -> dict[str, str]:
        """BN name → name of the conv it is fused after (these BNs take their conv's mask)."""
        return {f.bn_name: f.name for f in self._fused_list() if f.bn_name is not None}

    @property
    def unfused_norms(self) -> list[str]:
        """BatchNorms the graph runs outside a fused chain, or in more than one: :meth:`recalibrated`
        cannot re-estimate these (their stored statistics would be used), so it refuses the model."""
        gm = self.graph_module
        norms = [n.target for n in gm.graph.nodes if n.op == "call_module"]
        found = [n for n in norms if isinstance(gm.get_submodule(n), nn.modules.batchnorm._BatchNorm)]
        fused = [f.bn_name for f in self._fused_list() if f.bn_name is not None]
        return sorted(set(found) | {n for n in fused if fused.count(n) > 1})

    def out_channels(self, name: str) -> int:
        """Output channels of the conv ``name`` (the length its mask must have)."""
        return self._fused[name][0]._src[0].out_channels

    def _fuse(self) -> None:
        gm = self.graph_module
        for chain in conv_chains(gm, conv=KernelConv.accepts, activations=ACTIVATIONS):
            conv = gm.get_submodule(chain.conv.target)
            bn = None if chain.bn is None else gm.get_submodule(chain.bn.target)
            act = "none" if chain.activation is None else chain.activation.name
            bn_name = None if chain.bn is None else str(chain.bn.target)
            fused = _MaskedKernelConv(chain.conv.target, conv, bn, act, self._state, bn_name)
            fused_name = f"_fused_{sum(len(v) for v in self._fused.values())}"
            gm.add_submodule(fused_name, fused)
            replace_chain(gm, chain, fused_name, (chain.source,))
            self._fused.setdefault(chain.conv.target, []).append(fused)
        gm.graph.lint()
        gm.recompile()

    def _fused_list(self) -> list[_MaskedKernelConv]:
        return [f for group in self._fused.values() for f in group]

    def _check_against(self, model: nn.Module, example_inputs: torch.Tensor) -> None:
        if model.training:
            raise AutopruneError("the masked executor runs inference: call model.eval() before building it")
        saved = self._state.backend
        self._state.backend = "torch"
        try:
            with torch.no_grad():
                expected = model(example_inputs)
                got = self(example_inputs)
        finally:
            self._state.backend = saved
        tol = 1e-3 if example_inputs.dtype == torch.float32 else 5e-2
        if not isinstance(expected, torch.Tensor) or expected.shape != got.shape:
            raise AutopruneError(
                f"the masked executor's output does not match {type(model).__name__}'s: "
                "the model's forward is not a single tensor"
            )
        err = (got.float() - expected.float()).abs().max().item()
        if err > tol * (1.0 + expected.float().abs().max().item()):
            raise AutopruneError(
                f"the masked executor does not reproduce {type(model).__name__} (max abs error {err:.3g}); "
                "its forward may do something torch.fx tracing cannot see"
            )

    def refresh(self) -> None:
        """Re-fold every BN now (after parameter tensors were replaced rather than modified)."""
        for fused in self._fused_list():
            fused.refresh(force=True)

    def prepare_masks(
        self, out_masks: Mapping[str, torch.Tensor | ChannelMask], device: torch.device | str | None = None
    ) -> PreparedMasks:
        """Validate ``out_masks`` and convert them once, to reuse over many batches.

        Keys are conv qualified names (see :attr:`conv_names`); values bool ``[out_channels]``
        tensors, True where a channel is kept.
        """
        if device is None:
            first = next(iter(self._fused.values()), None)
            device = first[0]._src[0].weight.device if first else torch.device("cpu")
        device = torch.device(device)
        prepared: dict[str, ChannelMask] = {}
        for name, mask in out_masks.items():
            if name not in self._fused:
                known = ", ".join(self._fused) or "none"
                raise AutopruneError(f"no maskable conv named {name!r}; maskable convs: {known}")
            channels = self.out_channels(name)
            if not isinstance(mask, ChannelMask):
                mask = torch.as_tensor(mask)
                if mask.dtype != torch.bool or mask.shape != (channels,):
                    raise AutopruneError(
                        f"mask for {name!r} must be a bool tensor of shape ({channels},), "
                        f"got {mask.dtype} of shape {tuple(mask.shape)}"
                    )
                mask = ChannelMask.from_bool(mask.to(device))
            elif mask.channels != channels:
                raise AutopruneError(f"mask for {name!r} has {mask.channels} entries, the conv {channels}")
            prepared[name] = mask.to(device)
        return PreparedMasks(prepared, device)

    def _masks_for(
        self, out_masks: Mapping[str, torch.Tensor | ChannelMask] | PreparedMasks | None, device: torch.device
    ) -> dict[str, ChannelMask]:
        if out_masks is None:
            return {}
        if isinstance(out_masks, PreparedMasks):
            if out_masks.device == device:
                return out_masks.masks
            return {k: m.to(device) for k, m in out_masks.masks.items()}
        return self.prepare_masks(out_masks, device).masks

    def _call(
        self,
        x: torch.Tensor,
        out_masks: Mapping[str, torch.Tensor | ChannelMask] | PreparedMasks | None,
        *,
        moments: dict[_MaskedKernelConv, _Moments] | None = None,
        affines: Mapping[_MaskedKernelConv, tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        state = self._state
        state.masks, state.moments, state.affines = self._masks_for(out_masks, x.device), moments, affines
        try:
            with torch.no_grad():
                return self.graph_module(x)
        finally:
            state.masks, state.moments, state.affines = {}, None, None

    def forward(
        self,
        x: torch.Tensor,
        out_masks: Mapping[str, torch.Tensor | ChannelMask] | PreparedMasks | None = None,
    ) -> torch.Tensor:
        """Logits of the masked network on ``x`` (no autograd)."""
        return self._call(x, out_masks)

    def recalibrated(
        self,
        batches: Iterable[torch.Tensor],
        out_masks: Mapping[str, torch.Tensor | ChannelMask] | PreparedMasks | None = None,
    ) -> Recalibrated:
        """The masked network with every fused BN's statistics re-estimated on ``batches``.

        The same statistics :func:`autoprune.recalibration.recalibrate_batchnorm` gives the
        pruned model (reset, then momentum=None): each pass normalizes with the batch's mean and
        biased variance, and the result is the average over batches of the batch means and of
        the *unbiased* batch variances. Computed under ``out_masks``, so a kept channel's
        statistics equal those of the physically pruned network; the model is not modified.

        Raises :class:`AutopruneError` when the graph has BatchNorms outside fused chains
        (:attr:`unfused_norms`): those would keep their stored statistics.
        """
        unfused = self.unfused_norms
        if unfused:
            raise AutopruneError(
                "BN recalibration under masks needs every BatchNorm fused right after one conv; "
                f"not fused: {', '.join(unfused[:5])}{' ...' if len(unfused) > 5 else ''}"
            )
        masks = out_masks if isinstance(out_masks, PreparedMasks) else self.prepare_masks(out_masks or {})
        moments: dict[_MaskedKernelConv, _Moments] = {}
        for x in batches:
            self._call(x, masks, moments=moments)
        affines: dict[_MaskedKernelConv, tuple[torch.Tensor, torch.Tensor]] = {}
        stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for fused in self._fused_list():
            conv, bn = fused._src
            if bn is None or fused.bn_name is None:
                continue
            mean, var = moments.get(fused, _Moments()).result(conv.out_channels, conv.weight.device)
            stats[fused.bn_name] = (mean, var)
            affines[fused] = _folded(conv, bn, (mean, var))
        return Recalibrated(self, masks, stats, affines)


@dataclass(frozen=True)
class Recalibrated:
    """A masked network whose fused BNs use re-estimated statistics; call it on a batch for logits.

    Built by :meth:`MaskedExecutor.recalibrated`. ``stats``: BN name → (running_mean,
    running_var) of the recalibration, over all channels (masked ones are meaningless).
    """

    executor: MaskedExecutor
    masks: PreparedMasks
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]]
    _affines: dict[_MaskedKernelConv, tuple[torch.Tensor, torch.Tensor]]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.executor._call(x, self.masks, affines=self._affines)
