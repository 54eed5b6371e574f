"""U-Net (Ronneberger, Fischer, Brox 2015), in 2D and 3D.

The published network: five levels of two 3x3 convolutions with ReLU, 2x2 max-pooling down, 2x2
transposed convolution ("up-convolution") that halves the channels, concatenation with the skip, and a
1x1 convolution to the classes. 64 base channels give about 31.0M parameters in 2D; ``width=0.5`` and
``width=0.25`` give the small models (about 7.8M and 1.9M) for small data sets.

Padding: the paper used unpadded ("valid") convolutions and tiled large images with an overlap, mirroring
the image at its borders so that every output pixel saw full context. Here the convolutions are
same-padded, so the output has the input's size whenever each spatial size is a multiple of
``size_divisor`` (16); ``medseg.models.padding.pad_to_multiple`` mirror-pads to reach it, and the
sliding-window inference overlaps the tiles and mirror-pads the volume borders, which reproduces the
overlap-tile strategy without the size bookkeeping of valid convolutions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import blocks
from .base import SegmentationNetwork

__all__ = ["UNet"]


class UNet(SegmentationNetwork):
    """Ronneberger U-Net.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (modalities), e.g. 2 for T1w + T2w.
        num_classes: output classes, background included.
        width: channel multiplier on the paper's 64-128-256-512-1024.
        depth: number of levels (5 in the paper; 2..6 allowed).
        norm: "batch", "instance", "group" or None (the paper: None).
        dropout: drop-out probability at the end of the contracting path (the paper uses drop-out there).

    Shapes:
        input `(B, in_channels, D, H, W)` (or `(B, C, H, W)` in 2D), every spatial size a multiple of
        ``2 ** (depth - 1)``; output logits `(B, num_classes, D, H, W)`.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        width: float = 1.0,
        depth: int = 5,
        norm: str | None = None,
        dropout: float = 0.0,
    ):
        super().__init__(spatial_dims, in_channels, num_classes, width=width, depth=depth, norm=norm, dropout=dropout)
        if not isinstance(depth, int) or not 2 <= depth <= 6:
            raise ValueError(f"depth must be an integer from 2 to 6, got {depth!r}")
        self.size_divisor = 2 ** (depth - 1)
        ch = [blocks.channels(64 * 2**i, width) for i in range(depth)]
        d = spatial_dims
        self.encoders = nn.ModuleList(
            blocks.ConvBlock(d, in_channels if i == 0 else ch[i - 1], ch[i], norm) for i in range(depth)
        )
        self.pool = blocks.max_pool(d)
        self.drop = blocks.dropout(d, dropout)
        self.ups = nn.ModuleList(blocks.conv_transpose(d, ch[i + 1], ch[i]) for i in reversed(range(depth - 1)))
        self.decoders = nn.ModuleList(
            blocks.ConvBlock(d, 2 * ch[i], ch[i], norm) for i in reversed(range(depth - 1))
        )
        self.head = blocks.conv(d, ch[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))

    def linear_head(self) -> nn.Module:
        return self.head

    def forward_features(self, x: Tensor) -> Tensor:
        """The last decoder block's output `(B, width * 64, *spatial)`, the head's input."""
        skips: list[Tensor] = []
        for i, encoder in enumerate(self.encoders):
            if i > 0:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        x = self.drop(skips.pop())
        for up, decoder in zip(self.ups, self.decoders):  # noqa: B905 - TorchScript has no zip(strict=)
            x = decoder(torch.cat([skips.pop(), up(x)], dim=1))
        return x
