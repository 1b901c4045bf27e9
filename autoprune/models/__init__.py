"""The model zoo: one way to name and build a model, :func:`create_model`.

Names:
  * built-ins: ``resnet20|32|56|110`` (CIFAR ResNets), ``mobilenetv2``, ``vgg16``;
  * ``torchvision:<name>``: any torchvision classification builder, randomly initialized, or
    with torchvision's published weights (``weights=``, see :mod:`autoprune.models.pretrained`);
  * ``timm:<name>``: a timm model, when timm is installed (``pip install 'autoprune[timm]'``);
  * ``package.module:callable``: a user's own builder, called with ``num_classes``
    (and ``input_size`` when it accepts it). Importing and calling it runs the user's
    code, so it is only done with ``trust_code=True`` (``--trust-code`` on the command
    line): a name read from a file (checkpoint, plan, study) never runs code by itself.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from autoprune.errors import AutopruneError
from autoprune.models.cifar_resnet import CifarResNet, init_weights
from autoprune.models.mobilenetv2 import mobilenetv2
from autoprune.models.pretrained import create_timm, load_backbone, torchvision_weights, weights_state_dict
from autoprune.models.vgg import vgg16

__all__ = ["available_models", "create_model", "initializer_for", "init_weights"]


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., nn.Module]
    description: str


_BUILTINS: dict[str, _Entry] = {
    **{
        f"resnet{d}": _Entry(
            lambda num_classes, input_size, _d=d: CifarResNet(_d, num_classes),
            f"CIFAR ResNet-{d} (3 stages, 16/32/64 channels)",
        )
        for d in (20, 32, 56, 110)
    },
    "mobilenetv2": _Entry(
        lambda num_classes, input_size, **kw: mobilenetv2(num_classes, input_size, **kw),
        "MobileNetV2 (torchvision layout; CIFAR strides for inputs <= 64 px; width_mult=)",
    ),
    "vgg16": _Entry(
        lambda num_classes, input_size: vgg16(num_classes, input_size),
        "VGG-16 with batch norm, CIFAR head",
    ),
}

# torchvision builders whose defaults add auxiliary heads that change the output type.
_TORCHVISION_DEFAULTS = {"googlenet": {"aux_logits": False}, "inception_v3": {"aux_logits": False}}


def available_models() -> list[str]:
    """Built-in names plus the ``torchvision:`` ones (user callables are open-ended)."""
    import torchvision

    tv = [f"torchvision:{n}" for n in torchvision.models.list_models(module=torchvision.models)]
    return sorted(_BUILTINS) + tv


def _valid_names_hint() -> str:
    return (
        f"valid names: {', '.join(sorted(_BUILTINS))}, torchvision:<name> "
        "(e.g. torchvision:resnet18; see `autoprune models`), timm:<name> (with timm installed), "
        "or package.module:callable"
    )


def create_model(
    name: str,
    num_classes: int = 10,
    input_size: int = 32,
    *,
    trust_code: bool = False,
    weights: str | None = None,
    **kwargs,
) -> nn.Module:
    """Build a model by name (see the module docstring), randomly initialized unless ``weights``.

    ``weights`` (``torchvision:`` and ``timm:`` names only): a torchvision weights enum
    member (``DEFAULT``, ``IMAGENET1K_V1``, ``ResNet18_Weights.IMAGENET1K_V1``) or, for timm,
    ``DEFAULT`` / a pretrained tag. A ``package.module:callable`` name imports and calls that
    callable, which runs arbitrary code: it is refused unless ``trust_code=True``.
    """
    if not isinstance(name, str) or not name:
        raise AutopruneError(f"model name must be a non-empty string, not {name!r}; {_valid_names_hint()}")
    if weights is not None and not name.startswith(("torchvision:", "timm:")):
        raise AutopruneError(
            f"--weights {weights!r}: pretrained weights exist for torchvision:<name> and timm:<name> "
            f"models, not {name!r} (use `autoprune import` for a state_dict of your own)"
        )
    if name.startswith("timm:"):
        return create_timm(name.split(":", 1)[1], num_classes, weights, kwargs)
    if name in _BUILTINS:
        try:
            return _BUILTINS[name].builder(num_classes, input_size, **kwargs)
        except (TypeError, ValueError) as exc:
            raise AutopruneError(f"cannot build {name!r}: {exc}") from None
    if name.startswith("torchvision:"):
        return _create_torchvision(name.split(":", 1)[1], num_classes, kwargs, weights)
    if ":" in name:
        if not trust_code:
            raise AutopruneError(
                f"model {name!r} is a user builder (module:callable); building it imports and runs "
                "that code, so autoprune does it only when you allow it: pass --trust-code on the "
                "command line or trust_code=True in the Python API (only for code you trust)"
            )
        return _create_user_model(name, num_classes, input_size, kwargs)
    raise AutopruneError(f"unknown model {name!r}; {_valid_names_hint()}")


def _create_torchvision(name: str, num_classes: int, kwargs: dict, weights: str | None = None) -> nn.Module:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise AutopruneError(f"unknown torchvision classifier {name!r}; valid: {', '.join(names)}")
    weight = torchvision_weights(name, weights) if weights is not None else None
    options = {**_TORCHVISION_DEFAULTS.get(name, {}), **kwargs}
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)
    except (TypeError, ValueError) as exc:
        raise AutopruneError(f"cannot build torchvision:{name}: {exc}") from None
    if weight is not None:
        classes = len(weight.meta["categories"])
        load_backbone(model, weights_state_dict(weight), classes, f"weights {weight} for torchvision:{name}")
    return model


def _create_user_model(name: str, num_classes: int, input_size: int, kwargs: dict) -> nn.Module:
    module_name, _, attr = name.partition(":")
    try:
        builder = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise AutopruneError(f"cannot import model builder {name!r}: {exc}") from None
    params = inspect.signature(builder).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    call_kwargs = dict(kwargs)
    for key, value in (("num_classes", num_classes), ("input_size", input_size)):
        if key in params or accepts_any:
            call_kwargs[key] = value
    model = builder(**call_kwargs)
    if not isinstance(model, nn.Module):
        raise AutopruneError(f"model builder {name!r} returned {type(model).__name__}, not nn.Module")
    return model


def initializer_for(name: str) -> Callable[[nn.Module], None]:
    """The architecture's own initializer, applied to one sub-module (SR-init's redraw).

    Built-ins share :func:`init_weights` (torchvision's MobileNetV2 uses the same
    scheme). Other models fall back to each layer's ``reset_parameters``.
    """
    if name in _BUILTINS:
        return init_weights
    return _reset_parameters


def _reset_parameters(module: nn.Module) -> None:
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
