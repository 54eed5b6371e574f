"""V-Net (Milletari, Navab & Ahmadi, 2016), as published, for 2D and 3D.

Reference: F. Milletari, N. Navab, S.-A. Ahmadi, "V-Net: Fully Convolutional Neural Networks for Volumetric
Medical Image Segmentation", 3DV 2016, arXiv:1606.04797 (Fig. 2).

Layout at ``width=1`` (channels per stage, number of 5x5x5 convolutions in brackets)::

    encoder  16 (1) -> 32 (2) -> 64 (3) -> 128 (3) -> 256 (3)        down: 2x2x2 conv, stride 2, doubles channels
    decoder  256 (3) <- 128 (3) <- 64 (2) <- 32 (1) -> 1x1x1 conv     up: 2x2x2 transposed conv, stride 2

Every stage learns a residual function: its input is added to the output of its last convolution. A decoder
stage's input is the concatenation of the up-convolution output (half the stage's channels) and the skip
(the output of the encoder stage at the same resolution, the other half), so the stage keeps its channel
count and the residual shortcut is the identity.

Differences from the paper, all documented where they happen:

* The network returns logits; the paper's final voxel-wise soft-max is applied by inference and by the loss
  (e.g. a soft Dice loss over ``softmax(logits)``), never inside :meth:`VNet.forward`.
* ``in_channels > 1`` (multi-modal input): the input stage's shortcut is a learned 1x1 projection instead of
  the paper's channel replication (see :class:`InputStage`).
* Optional normalisation (``norm``, default None as in the paper) and channel dropout (``dropout``,
  default 0 as in the paper).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import blocks
from .base import SegmentationNetwork

__all__ = ["VNet"]

KERNEL = 5
ENCODER_CONVS = (1, 2, 3, 3, 3)
DECODER_CONVS = (3, 3, 2, 1)
BASE_CHANNELS = 16


def _conv_norm(spatial_dims: int, cin: int, cout: int, kernel: int, stride: int, norm: str | None) -> nn.Sequential:
    """Convolution followed by the optional norm (the convolution has no bias when a norm follows it)."""
    return nn.Sequential(
        blocks.conv(spatial_dims, cin, cout, kernel, stride=stride, bias=norm is None),
        blocks.norm(norm, spatial_dims, cout),
    )


class ResidualStage(nn.Module):
    """`n` convolutions 5x5x5 (5x5 in 2D) whose output is added to the stage input.

    Every convolution is followed by the optional norm and a PReLU (one slope per channel, the Caffe
    default of the original implementation); for the last convolution the PReLU comes after the residual
    addition: ``out = PReLU(shortcut(x) + norm(conv_n(... PReLU(norm(conv_1(drop(x)))))))``.

    Args:
        spatial_dims: 2 or 3.
        cin: input channels.
        ch: channels of every convolution and of the output.
        n: number of convolutions (>= 1).
        norm: normalisation layer name, see :func:`medseg.models.blocks.norm`.
        dropout: channel-dropout probability on the residual branch (the shortcut is not dropped).
        shortcut: module mapping the input to ``ch`` channels; identity (or broadcasting) by default.

    Shapes:
        ``(B, cin, D, H, W)`` -> ``(B, ch, D, H, W)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        cin: int,
        ch: int,
        n: int,
        norm: str | None = None,
        dropout: float = 0.0,
        shortcut: nn.Module | None = None,
    ):
        super().__init__()
        if n < 1:
            raise ValueError(f"a residual stage needs at least one convolution, got {n!r}")
        self.drop = blocks.dropout(spatial_dims, dropout)
        layers: list[nn.Module] = []
        for i in range(n):
            layers.append(_conv_norm(spatial_dims, cin if i == 0 else ch, ch, KERNEL, 1, norm))
            if i < n - 1:
                layers.append(nn.PReLU(ch))
        self.convs = nn.Sequential(*layers)
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.act = nn.PReLU(ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.convs(self.drop(x)) + self.shortcut(x))


class InputStage(ResidualStage):
    """The first stage: one 5x5x5 convolution to ``ch`` channels plus the input, broadcast to ``ch`` channels.

    With one input channel the shortcut is the paper's: the image is replicated ``ch`` times (done by
    broadcasting in the addition, no parameters). With several input channels (modalities) a learned 1x1
    projection to ``ch`` channels is used instead: plain replication would weight the modalities unequally
    whenever ``ch`` is not a multiple of ``in_channels`` (e.g. ``width`` 0.25 gives 4 channels for 3
    modalities), and a projection is the usual residual shortcut for a change of width (He et al. 2016).
    """

    def __init__(self, spatial_dims: int, cin: int, ch: int, norm: str | None = None):
        shortcut = None if cin == 1 else blocks.conv(spatial_dims, cin, ch, 1)
        super().__init__(spatial_dims, cin, ch, ENCODER_CONVS[0], norm, 0.0, shortcut)


class DownStage(nn.Module):
    """2x2x2 convolution with stride 2 (halves the size) -> norm -> PReLU, then a :class:`ResidualStage`.

    Shapes:
        ``(B, cin, D, H, W)`` -> ``(B, ch, D/2, H/2, W/2)``.
    """

    def __init__(self, spatial_dims: int, cin: int, ch: int, n: int, norm: str | None, dropout: float):
        super().__init__()
        self.down = nn.Sequential(_conv_norm(spatial_dims, cin, ch, 2, 2, norm), nn.PReLU(ch))
        self.stage = ResidualStage(spatial_dims, ch, ch, n, norm, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.stage(self.down(x))


class UpStage(nn.Module):
    """2x2x2 transposed convolution with stride 2 to ``ch - skip`` channels -> norm -> PReLU, concatenation
    with the skip (``skip`` channels; V-Net uses ``ch == 2 * skip``), then a :class:`ResidualStage` of ``ch``
    channels whose shortcut is the concatenation itself.

    Shapes:
        ``x (B, cin, D, H, W)``, ``skip (B, skip, 2D, 2H, 2W)`` -> ``(B, ch, 2D, 2H, 2W)``.
    """

    def __init__(self, spatial_dims: int, cin: int, skip: int, ch: int, n: int, norm: str | None, dropout: float):
        super().__init__()
        up = ch - skip
        self.up = nn.Sequential(
            blocks.conv_transpose(spatial_dims, cin, up), blocks.norm(norm, spatial_dims, up), nn.PReLU(up)
        )
        self.stage = ResidualStage(spatial_dims, ch, ch, n, norm, dropout)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.stage(torch.cat([self.up(x), skip], dim=1))


class VNet(SegmentationNetwork):
    """V-Net: a fully convolutional residual encoder-decoder with 5x5x5 convolutions and PReLU.

    The paper's output layer is a 1x1x1 convolution to ``num_classes`` channels followed by a voxel-wise
    soft-max; this network stops at the convolution and returns logits. The soft-max is applied by the
    inference code (and by the training loss, e.g. the paper's Dice loss on the soft-max probabilities).

    Args:
        spatial_dims: 2 (5x5 kernels) or 3 (5x5x5 kernels, as published).
        in_channels: input channels (modalities). One channel uses the paper's replicated-input shortcut,
            more use a 1x1 projection (see :class:`InputStage`).
        num_classes: output channels, background included.
        width: multiplier of the paper's channels 16-32-64-128-256 (rounded, at least 1 per stage).
        norm: optional normalisation after each convolution: "batch", "instance", "group" or None
            (the paper: None).
        dropout: channel-dropout probability on the residual branch of every stage but the first
            (the paper: 0).

    Raises:
        ValueError: bad ``spatial_dims``, ``in_channels``, ``num_classes``, ``width``, ``norm`` or ``dropout``.

    Shapes:
        ``(B, in_channels, D, H, W)`` -> ``(B, num_classes, D, H, W)`` (``(B, C, H, W)`` in 2D); every
        spatial size must be a multiple of :attr:`size_divisor` (16: four 2x down-samplings).
    """

    size_divisor = 16

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int = 2,
        width: float = 1.0,
        norm: str | None = None,
        dropout: float = 0.0,
    ):
        super().__init__(spatial_dims, in_channels, num_classes, width=width, norm=norm, dropout=dropout)
        _check_args(norm, dropout)
        enc = [blocks.channels(BASE_CHANNELS * 2**i, width) for i in range(len(ENCODER_CONVS))]
        self.input_stage = InputStage(spatial_dims, in_channels, enc[0], norm)
        self.down_stages = nn.ModuleList(
            DownStage(spatial_dims, enc[i - 1], enc[i], ENCODER_CONVS[i], norm, dropout) for i in range(1, len(enc))
        )
        # Decoder stage at level i: the skip enc[i] plus an up-convolution of as many channels.
        dec = [2 * c for c in enc[:-1]] + enc[-1:]
        self.up_stages = nn.ModuleList(
            UpStage(spatial_dims, dec[i + 1], enc[i], dec[i], n, norm, dropout)
            for i, n in zip(range(len(enc) - 2, -1, -1), DECODER_CONVS, strict=True)
        )
        self.head = blocks.conv(spatial_dims, dec[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes, *spatial)`` for ``x`` ``(B, in_channels, *spatial)`` (no soft-max)."""
        return self.head(self.forward_features(x))

    def linear_head(self) -> nn.Module:
        return self.head

    def forward_features(self, x: Tensor) -> Tensor:
        """The last decoder stage's output, the head's input."""
        x = self.input_stage(x)
        skips: list[Tensor] = []
        for stage in self.down_stages:
            skips.append(x)
            x = stage(x)
        for i, stage in enumerate(self.up_stages):
            x = stage(x, skips[len(skips) - 1 - i])
        return x


def _check_args(norm: str | None, dropout: float) -> None:
    if norm not in blocks.NORMS:
        raise ValueError(f"norm must be one of {blocks.NORMS}, got {norm!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
