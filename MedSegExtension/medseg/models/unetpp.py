"""UNet++: the nested U-Net of Zhou et al. (DLMIA 2018), for 2D and 3D, with deep supervision and pruning.

Zhou, Rahman Siddiquee, Tajbakhsh, Liang, "UNet++: A Nested U-Net Architecture for Medical Image
Segmentation", DLMIA 2018 (https://arxiv.org/abs/1807.10165).

The network is a grid of nodes ``X(i, j)``, ``i`` the depth (0..4, resolution halved at each step) and
``j`` the position along the skip pathway (0..4-i):

* ``X(i, 0)`` is the backbone encoder: a double 3x3 convolution (:class:`~medseg.models.blocks.ConvBlock`),
  after a 2x max-pooling of ``X(i-1, 0)`` when ``i > 0``.
* ``X(i, j)``, ``j > 0``, is a double convolution of the concatenation
  ``[X(i, 0), ..., X(i, j-1), Up(X(i+1, j-1))]`` (dense skip connections), where ``Up`` is a 2x up-sampling
  by a transposed convolution (kernel 2, stride 2) from the channels of depth ``i+1`` to those of depth ``i``,
  as in our U-Net and in the paper's reference code.
* Four 1x1 convolution heads map ``X(0, 1)`` .. ``X(0, 4)`` to class logits. They always exist, so that one
  checkpoint serves every prune level; with ``deep_supervision=True`` all four are trained
  (:meth:`UNetPlusPlus.forward_heads`), otherwise only the last one is.

Nodes are evaluated in the order ``X(0,0); X(1,0), X(0,1); X(2,0), X(1,1), X(0,2); ...``: the sub-network
``UNet++ L`` (pruned at level ``L``: the encoder up to ``X(L, 0)`` and the nodes with ``i + j <= L``) is a
prefix of that order, so pruned inference runs only the first ``(L+1)(L+2)/2`` nodes and really computes less.

The forward pass is compatible with ``torch.jit.script`` and ``torch.export.export``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from . import blocks
from .base import SegmentationNetwork

__all__ = ["UNetPlusPlus"]

DEPTH = 4  # deepest node index: 5 resolution levels, 4 poolings
PRUNE_LEVELS = (1, 2, 3, 4)


def _node_order() -> list[tuple[int, int]]:
    """Evaluation order of the nodes ``(i, j)``; the pruned sub-network of level L is its first entries."""
    order: list[tuple[int, int]] = []
    for level in range(DEPTH + 1):
        order += [(level - j, j) for j in range(level + 1)]
    return order


def _num_nodes(level: int) -> int:
    """Number of nodes ``X(i, j)`` with ``i + j <= level``."""
    return (level + 1) * (level + 2) // 2


class _EncoderNode(nn.Module):
    """Backbone node ``X(i, 0)``: [2x max-pool ->] double convolution.

    Args:
        spatial_dims: 2 or 3.
        cin: channels of the source feature map.
        cout: output channels.
        norm_kind: see :func:`~medseg.models.blocks.norm`.
        source: index, in the feature list, of the input image (``i == 0``) or of ``X(i-1, 0)``.
        pool: whether to max-pool the source first (every depth but 0).
    """

    def __init__(self, spatial_dims: int, cin: int, cout: int, norm_kind: str | None, source: int, pool: bool):
        super().__init__()
        self.source = source
        self.pool = blocks.max_pool(spatial_dims) if pool else nn.Identity()
        self.block = blocks.ConvBlock(spatial_dims, cin, cout, norm_kind)

    def forward(self, feats: list[Tensor]) -> Tensor:
        """Map the source ``(B, cin, *S)`` to ``(B, cout, *S/2)`` (``*S`` without pooling)."""
        return self.block(self.pool(feats[self.source]))


class _NestedNode(nn.Module):
    """Nested node ``X(i, j)``, ``j > 0``: double convolution of ``[X(i, 0..j-1), Up(X(i+1, j-1))]``.

    Args:
        spatial_dims: 2 or 3.
        ch: channels at depth ``i`` (output channels, and channels of each same-depth input).
        ch_below: channels at depth ``i+1``.
        norm_kind: see :func:`~medseg.models.blocks.norm`.
        skips: feature-list indices of ``X(i, 0)`` .. ``X(i, j-1)``.
        source: feature-list index of ``X(i+1, j-1)``.
    """

    def __init__(self, spatial_dims: int, ch: int, ch_below: int, norm_kind: str | None, skips: list[int], source: int):
        super().__init__()
        self.skips = list(skips)
        self.source = source
        self.up = blocks.conv_transpose(spatial_dims, ch_below, ch)
        self.block = blocks.ConvBlock(spatial_dims, ch * (len(skips) + 1), ch, norm_kind)

    def forward(self, feats: list[Tensor]) -> Tensor:
        """Map ``j`` maps ``(B, ch, *S)`` and one ``(B, ch_below, *S/2)`` to ``(B, ch, *S)``."""
        inputs = [feats[k] for k in self.skips]
        inputs.append(self.up(feats[self.source]))
        return self.block(torch.cat(inputs, dim=1))


class UNetPlusPlus(SegmentationNetwork):
    """UNet++ (Zhou et al. 2018) with four deep-supervision heads, model pruning and "accurate" mode.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (modalities).
        num_classes: output channels, background included.
        width: multiplier of every stage's channels (see :func:`~medseg.models.blocks.channels`).
        norm: normalisation after each convolution: "batch", "instance", "group" or None.
        deep_supervision: whether training supervises all four heads (:meth:`forward_heads`); needed for
            accurate mode and for meaningful pruned inference (heads 1..3 are untrained otherwise).
        features: base channels of the five depths, before ``width``; the paper uses 32-64-128-256-512.

    Inference options (per run, not part of :attr:`config`; see :meth:`set_inference`):
        prune_level: ``L`` in 1..4, default 4 (the full network).
        accurate: average the heads 1..L instead of using head L only, default False.

    Shapes:
        input ``(B, in_channels, *spatial)`` with ``spatial`` = ``(H, W)`` or ``(D, H, W)``, every size a
        multiple of :attr:`size_divisor` (16); output logits ``(B, num_classes, *spatial)``.
    """

    size_divisor: int = 16

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        width: float = 1.0,
        norm: str | None = "batch",
        deep_supervision: bool = True,
        features: Sequence[int] = (32, 64, 128, 256, 512),
    ):
        _check_args(deep_supervision, features)
        super().__init__(
            spatial_dims,
            in_channels,
            num_classes,
            width=width,
            norm=norm,
            deep_supervision=deep_supervision,
            features=list(features),
        )
        self.deep_supervision = deep_supervision
        ch = [blocks.channels(f, width) for f in features]
        self.nodes = _build_nodes(spatial_dims, in_channels, ch, norm)
        order = _node_order()
        # feature list: index 0 is the input image, node number k of the order is at index k + 1
        self.head_sources = [order.index((0, j)) + 1 for j in range(1, DEPTH + 1)]
        self.heads = nn.ModuleList([blocks.conv(spatial_dims, ch[0], num_classes, 1) for _ in range(DEPTH)])
        self.prune_level = DEPTH
        self.accurate = False

    def set_inference(self, prune_level: int = 4, accurate: bool = False) -> None:
        """Choose how :meth:`forward` predicts (per run; not stored in :attr:`config`).

        Args:
            prune_level: ``L`` in 1..4: run only the sub-network ``UNet++ L`` (nodes ``X(i, j)`` with
                ``i + j <= L``) and predict with head ``L`` on ``X(0, L)``. Levels below 4 assume the network
                was trained with deep supervision.
            accurate: average the probabilities of heads 1..L (the paper's accurate mode is ``L = 4``;
                with ``L = 1`` it equals fast mode). Needs ``deep_supervision=True``.

        Raises:
            ValueError: `prune_level` not one of 1, 2, 3, 4; `accurate` not a bool; accurate mode on a network
                built without deep supervision.
        """
        if not isinstance(prune_level, int) or isinstance(prune_level, bool) or prune_level not in PRUNE_LEVELS:
            raise ValueError(f"prune_level must be one of {PRUNE_LEVELS}, got {prune_level!r}")
        if accurate is not True and accurate is not False:
            raise ValueError(f"accurate must be True or False, got {accurate!r}")
        if accurate and not self.deep_supervision:
            raise ValueError("accurate must be False for a network built with deep_supervision=False")
        self.prune_level = int(prune_level)
        self.accurate = accurate

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes, *spatial)`` of ``x`` ``(B, in_channels, *spatial)``.

        Fast mode returns head ``L = prune_level`` applied to ``X(0, L)``, computing only the pruned
        sub-network. Accurate mode averages the class probabilities ``p`` of heads 1..L (softmax over the
        classes; sigmoid when ``num_classes == 1``) and returns ``log(p.clamp_min(1e-8))`` (for one class, the
        logit of ``p``), so that softmax (sigmoid) of the output gives back the averaged probabilities.
        """
        feats = self._features(x, self.prune_level)
        if not self.accurate:
            return self._head(feats, self.prune_level)
        return self._average(self._heads(feats, self.prune_level))

    def linear_head(self) -> nn.Module | None:
        """Head ``L`` in fast mode (``forward == head(X(0, L))``); None in accurate mode (heads averaged)."""
        return None if self.accurate else self.heads[self.prune_level - 1]

    def forward_features(self, x: Tensor) -> Tensor:
        """``X(0, L)`` at the current prune level ``L``, the input of head ``L``."""
        return self._features(x, self.prune_level)[self.head_sources[self.prune_level - 1]]

    @torch.jit.export
    def forward_heads(self, x: Tensor) -> list[Tensor]:
        """Logits of heads 1..prune_level, each ``(B, num_classes, *spatial)``, for deep supervision.

        The sub-network is computed once; ``forward_heads(x)[L - 1]`` equals ``forward(x)`` in fast mode at
        prune level ``L``.
        """
        return self._heads(self._features(x, self.prune_level), self.prune_level)

    def _features(self, x: Tensor, level: int) -> list[Tensor]:
        """``[x, X(0,0), X(1,0), X(0,1), ...]``: the input then the nodes of the level-`level` sub-network."""
        count = _num_nodes(level)
        feats = [x]
        for node in self.nodes.values():  # evaluation order; feats holds the input and the nodes done
            if len(feats) <= count:
                feats.append(node(feats))
        return feats

    def _head(self, feats: list[Tensor], level: int) -> Tensor:
        """Head `level` (1..4) applied to ``X(0, level)``."""
        out = feats[0]
        for j, head in enumerate(self.heads):
            if j + 1 == level:
                out = head(feats[self.head_sources[j]])
        return out

    def _heads(self, feats: list[Tensor], level: int) -> list[Tensor]:
        """Heads 1..`level` applied to ``X(0, 1)`` .. ``X(0, level)``."""
        outs: list[Tensor] = []
        for j, head in enumerate(self.heads):
            if j < level:
                outs.append(head(feats[self.head_sources[j]]))
        return outs

    def _average(self, logits: list[Tensor]) -> Tensor:
        """Log of the mean class probability of several heads' logits ``(B, num_classes, *spatial)``."""
        binary = self.num_classes == 1
        probs = [torch.sigmoid(t) if binary else torch.softmax(t, dim=1) for t in logits]
        mean = torch.stack(probs, dim=0).mean(dim=0)
        if binary:
            return torch.log(mean.clamp_min(1e-8)) - torch.log((1.0 - mean).clamp_min(1e-8))
        return torch.log(mean.clamp_min(1e-8))


def _check_args(deep_supervision: bool, features: Sequence[int]) -> None:
    """Validate the UNet++-specific constructor arguments (the others are checked where they are used)."""
    if deep_supervision is not True and deep_supervision is not False:
        raise ValueError(f"deep_supervision must be True or False, got {deep_supervision!r}")
    valid = isinstance(features, Sequence) and not isinstance(features, str) and len(features) == DEPTH + 1
    if not valid or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in features):
        raise ValueError(f"features must be {DEPTH + 1} positive integers, got {features!r}")


def _build_nodes(spatial_dims: int, in_channels: int, ch: list[int], norm: str | None) -> nn.ModuleDict:
    """All nodes, named ``"x{i}_{j}"``, inserted in evaluation order (see :func:`_node_order`)."""
    order = _node_order()
    index = {node: k + 1 for k, node in enumerate(order)}  # position in the feature list
    nodes = nn.ModuleDict()
    for i, j in order:
        if j == 0:
            cin = in_channels if i == 0 else ch[i - 1]
            source = 0 if i == 0 else index[(i - 1, 0)]
            nodes[f"x{i}_{j}"] = _EncoderNode(spatial_dims, cin, ch[i], norm, source, pool=i > 0)
        else:
            skips = [index[(i, s)] for s in range(j)]
            nodes[f"x{i}_{j}"] = _NestedNode(spatial_dims, ch[i], ch[i + 1], norm, skips, index[(i + 1, j - 1)])
    return nodes
