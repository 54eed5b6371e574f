"""nnU-Net's ResidualEncoderUNet (the "ResEnc" presets, Isensee et al. 2024), for its trained models.

A stem convolution, then per stage ``n_blocks_per_stage`` ResNet-D basic blocks (two convolutions; the first
strided; the skip average-pools by the stride and projects with a 1x1 convolution + norm when the channels
change), and the same decoder as :mod:`plain_conv_unet`. Module names follow nnU-Net's
(``encoder.stem.convs.0.conv.weight``, ``encoder.stages.S.blocks.B.conv1.conv.weight``,
``...skip.1.conv.weight``), so ``medseg import-nnunet`` loads its weights with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .base import SegmentationNetwork
from .nnunet_blocks import (
    ConvNormAct,
    EncoderDecoderHead,
    StackedConvs,
    Style,
    UNetDecoder,
    _nonlin,
    axis_divisors,
    per_stage_counts,
    stage_layout,
)

__all__ = ["ResidualEncoderUNet"]


class BasicBlockD(nn.Module):
    """ResNet-D basic block: conv-norm-act, conv-norm, plus the (pooled, projected) input, then act."""

    def __init__(self, style: Style, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int]):
        super().__init__()
        ones = (1,) * len(kernel)
        self.conv1 = ConvNormAct(style, cin, cout, kernel, stride)
        self.conv2 = ConvNormAct(style, cout, cout, kernel, ones, act=False)
        self.act = _nonlin(style.nonlin, style.negative_slope)
        skip: list[nn.Module] = []
        if tuple(stride) != ones:
            pool = nn.AvgPool3d if style.spatial_dims == 3 else nn.AvgPool2d
            skip.append(pool(tuple(stride), tuple(stride)))
        if cin != cout:
            skip.append(ConvNormAct(style, cin, cout, ones, ones, bias=False, act=False))
        self.skip = nn.Sequential(*skip) if skip else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.skip(x))


class StackedResidualBlocks(nn.Module):
    def __init__(self, style: Style, n: int, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int]):
        super().__init__()
        ones = (1,) * len(kernel)
        self.blocks = nn.Sequential(*[BasicBlockD(style, cin if b == 0 else cout, cout, kernel,
                                                  stride if b == 0 else ones) for b in range(n)])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class ResidualEncoder(nn.Module):
    def __init__(self, style: Style, in_channels: int, stem_channels: int, features: list[int], kernels: list,
                 strides: list, n_blocks: list[int]):
        super().__init__()
        self.stem = StackedConvs(style, 1, in_channels, stem_channels, kernels[0], (1,) * style.spatial_dims)
        self.stages = nn.Sequential(*[
            StackedResidualBlocks(style, n_blocks[s], stem_channels if s == 0 else features[s - 1], cout, kernels[s],
                                  strides[s]) for s, cout in enumerate(features)])

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        skips: list[Tensor] = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class ResidualEncoderUNet(EncoderDecoderHead, SegmentationNetwork):
    """nnU-Net's ResidualEncoderUNet with BasicBlockD blocks.

    Args: as :class:`~medseg.models.plain_conv_unet.PlainConvUNet`, with ``n_blocks_per_stage`` (residual blocks
    per encoder stage) instead of ``n_conv_per_stage``, and ``stem_channels`` (default ``features[0]``).
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, num_classes: int = 2,
                 features: Sequence[int] = (32, 64, 128, 256), kernel_sizes: int | Sequence = 3,
                 strides: int | Sequence | None = None, n_blocks_per_stage: int | Sequence[int] = (1, 3, 4, 6),
                 n_conv_per_stage_decoder: int | Sequence[int] = 1, conv_bias: bool = True,
                 norm: str | None = "instance", norm_eps: float = 1e-5, norm_affine: bool = True,
                 nonlin: str = "leaky_relu", negative_slope: float = 0.01, stem_channels: int | None = None):
        super().__init__(spatial_dims, in_channels, num_classes, features=features, kernel_sizes=kernel_sizes,
                         strides=strides, n_blocks_per_stage=n_blocks_per_stage,
                         n_conv_per_stage_decoder=n_conv_per_stage_decoder, conv_bias=conv_bias, norm=norm,
                         norm_eps=norm_eps, norm_affine=norm_affine, nonlin=nonlin, negative_slope=negative_slope,
                         stem_channels=stem_channels)
        style = Style(spatial_dims, conv_bias, norm, norm_eps, norm_affine, nonlin, negative_slope)
        chans, kernels, steps = stage_layout(spatial_dims, features, kernel_sizes, strides)
        n = len(chans)
        stem = chans[0] if stem_channels is None else stem_channels
        if not isinstance(stem, int) or isinstance(stem, bool) or stem < 1:
            raise ValueError(f"stem_channels must be a positive integer or None, got {stem_channels!r}")
        self.size_divisors = axis_divisors(steps)
        self.size_divisor = max(self.size_divisors)
        self.encoder = ResidualEncoder(style, in_channels, stem, chans, kernels, steps,
                                       per_stage_counts(n_blocks_per_stage, n, "n_blocks_per_stage"))
        self.decoder = UNetDecoder(style, chans, kernels, steps,
                                   per_stage_counts(n_conv_per_stage_decoder, n - 1, "n_conv_per_stage_decoder"))
        self.head = style.conv_cls(chans[0], num_classes, 1)
