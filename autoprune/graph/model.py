"""The data model of channel analysis: segments, layouts, layers, spaces, blocks.

A tensor's channel axis is a :data:`Layout`, a tuple of :class:`Seg` (``size``
channels of one space, each repeated ``mult`` times). :class:`Spaces` is the
union-find whose classes are the channel groups; :class:`Analysis` is what the
walk hands to :mod:`autoprune.space`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Seg:
    """``size`` channels of one space, each repeated ``mult`` times along the axis."""

    space: int
    size: int
    mult: int = 1
    live: str | None = None

    @property
    def width(self) -> int:
        return self.size * self.mult


Layout = tuple[Seg, ...]


def layout_width(layout: Layout) -> int:
    return sum(s.width for s in layout)


@dataclass
class TInfo:
    """What the analysis knows about one tensor: its shape and channel layout."""

    shape: tuple[int, ...]
    axis: int | None = None
    layout: Layout | None = None
    ctx: int = 0  # spatial size of the resolution stage this tensor belongs to


@dataclass(frozen=True)
class Attr:
    """A parameter or buffer fetched directly by the forward code (``self.scale * x``)."""

    name: str
    shape: tuple[int, ...]
    is_param: bool


@dataclass
class Layer:
    """One module (or directly used tensor attribute) whose channel dims follow layouts.

    kind: ``conv`` / ``linear`` (weight rows = out, columns = in), ``norm``
    (per-channel affine and running stats), ``scale`` (PReLU weight) or
    ``tensor`` (an attribute sliced along ``axis``).
    """

    name: str
    kind: str
    order: int
    out: Layout | None = None
    inp: Layout | None = None
    depthwise: bool = False
    conv_groups: int = 1  # groups of a non-depthwise grouped conv (balanced pruning)
    transposed: bool = False
    kernel: int = 1
    positions: list[int] = field(default_factory=list)  # output positions per sample, per call
    axis: int = 0
    node: str = ""  # fx node name of the first call (its output tensor's ctx gives the stage)


@dataclass
class BlockInfo:
    """A module holding one residual sum ``branch(x) + shortcut(x)``."""

    name: str
    ctx: int
    removable: bool
    branch_end: str | None  # module whose zeroed weights make the branch output zero


class Spaces:
    """Union-find over channel spaces with frozen reasons and balanced-block constraints."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.producer: list[str | None] = []
        self.reason: dict[int, str] = {}
        self.blocks: dict[int, int] = {}

    def new(self, size: int, producer: str | None = None, frozen: str | None = None) -> int:
        i = len(self.parent)
        self.parent.append(i)
        self.size.append(size)
        self.producer.append(producer)
        if frozen is not None:
            self.reason[i] = frozen
        return i

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        if self.size[ra] != self.size[rb]:  # cannot happen for well-formed graphs; stay safe
            self.reason.setdefault(ra, "channel counts disagree between coupled layers")
        if rb in self.reason:
            self.reason.setdefault(ra, self.reason.pop(rb))
        if rb in self.blocks:
            self.require_blocks(ra, self.blocks.pop(rb))

    def freeze(self, i: int, reason: str) -> None:
        self.reason.setdefault(self.find(i), reason)

    def frozen(self, i: int) -> str | None:
        return self.reason.get(self.find(i))

    def require_blocks(self, i: int, n: int) -> None:
        """Channels must be kept in equal numbers from ``n`` equal contiguous blocks."""
        r = self.find(i)
        cur = self.blocks.get(r, 1)
        new = cur * n // math.gcd(cur, n)
        if self.size[r] % new:
            self.freeze(r, f"grouped convs need counts divisible by {new}, impossible for {self.size[r]}")
            return
        self.blocks[r] = new


@dataclass
class Analysis:
    """Everything :class:`autoprune.space.PruningSpace` needs from one traced model."""

    spaces: Spaces
    layers: dict[str, Layer]
    frozen_modules: dict[str, str]
    blocks: list[BlockInfo]
    node_ctx: dict[str, int]
    extra_macs: list[tuple[str, int]]  # (scope, MACs per sample) of functional conv/matmul ops
    batch: int
    input_shape: tuple[int, ...]
