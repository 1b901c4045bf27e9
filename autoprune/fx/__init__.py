"""The one torch.fx layer: tracing, shape probing, conv→BN→activation chains, BN folding, module swaps.

The channel graph, the sensitivity engine and the masked executor all rewrite or
inspect traced models through this package; none of them traces on its own.
"""

from autoprune.fx.fusion import (
    ACTIVATION_TABLE,
    Activation,
    Chain,
    activation_of,
    batchnorm_affine,
    conv_chains,
    is_foldable_bn,
    is_plain_conv,
    replace_chain,
    scale_weight,
    set_module,
)
from autoprune.fx.tracing import ShapeProp, node_scope, probe, propagate, trace, untraceable_message

__all__ = [
    # fusion
    "ACTIVATION_TABLE",
    "Activation",
    "Chain",
    "activation_of",
    "batchnorm_affine",
    "conv_chains",
    "is_foldable_bn",
    "is_plain_conv",
    "replace_chain",
    "scale_weight",
    "set_module",
    # tracing
    "ShapeProp",
    "node_scope",
    "probe",
    "propagate",
    "trace",
    "untraceable_message",
]
