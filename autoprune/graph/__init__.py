"""Channel-dependency analysis: which channels of a model must be removed together.

The model is traced with torch.fx (each leaf module call and tensor op becomes a
node) and the shapes of every node are propagated on the ``meta`` device (no
arithmetic, so it is fast even for big inputs); see :mod:`autoprune.fx.tracing`.
Then every node's *channel layout* is derived in graph order:

* a conv/linear output opens a fresh **space** (its channels, indexed 0..C-1);
* a tensor's channel axis is a concatenation of spaces (``torch.cat`` appends,
  ``flatten`` repeats each channel H·W times: ``Seg.mult``);
* an elementwise op between two tensors (residual add, SE gate multiply, ...)
  unifies their spaces: channel i of one is channel i of the other.

Unified spaces (a union-find) are the channel **groups** of
:mod:`autoprune.space`. Anything this package does not understand *freezes* the
spaces that reach it, with the reason (fail closed: an unknown op can shrink the
search space, never produce a wrong model).

Exactness bookkeeping: a removed channel must be *exactly zero* wherever a
conv/linear consumes it (then deleting its weights changes nothing). Each segment
carries ``live``: None while the removed channels would be zero there (the
dead-channel model zeroes the producer's rows and the norms' γ and β), otherwise
the reason they would not be (``sigmoid``, ``x + 3``, BN without affine). A
consumer that sees a non-zero removed channel freezes its group.

The modules, in the order the algorithm uses them:

* :mod:`~autoprune.graph.model`: segments, layouts, layers, the union-find of spaces;
* :mod:`~autoprune.graph.state`: what the walk knows, and the helpers every rule uses;
* :mod:`~autoprune.graph.module_rules`: conv, linear, norms, activations, pools;
* :mod:`~autoprune.graph.elementwise`: unary ops, and binary ops that couple channels;
* :mod:`~autoprune.graph.shape_rules`: cat, indexing, reshape, permute, squeeze, expand, reduce;
* :mod:`~autoprune.graph.opaque`: ops without a rule (frozen, their MACs counted);
* :mod:`~autoprune.graph.blocks`: residual blocks (the depth view);
* :mod:`~autoprune.graph.analysis`: the driver, :func:`analyze`.
"""

from autoprune.graph.analysis import analyze
from autoprune.graph.model import Analysis, Layer, Layout

__all__ = ["Analysis", "Layer", "Layout", "analyze"]
