"""nnU-Net's PlainConvUNet (Isensee et al. 2021, ``dynamic-network-architectures``), for its trained models.

The network nnU-Net v2 plans for most data sets: per stage ``n_conv_per_stage`` convolutions (the first strided
to down-sample; kernels and strides per axis, so anisotropic plans work), norm and LeakyReLU; a decoder of
transposed convolutions (kernel = stride), concatenated skips and ``n_conv_per_stage_decoder`` convolutions; a
1x1 head. Module names follow nnU-Net's, so ``medseg import-nnunet`` loads its weights with ``strict=True``
(see ``nnunet_blocks``); the head is nnU-Net's last ``decoder.seg_layers`` entry.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .base import SegmentationNetwork
from .nnunet_blocks import (
    EncoderDecoderHead,
    StackedConvs,
    Style,
    UNetDecoder,
    axis_divisors,
    per_stage_counts,
    stage_layout,
)

__all__ = ["PlainConvUNet"]


class PlainEncoder(nn.Module):
    """``encoder.stages.S.0``: the stage's stacked convolutions (nnU-Net wraps each in a Sequential)."""

    def __init__(self, style: Style, in_channels: int, features: list[int], kernels: list, strides: list,
                 n_conv: list[int]):
        super().__init__()
        stages = []
        for s, cout in enumerate(features):
            cin = in_channels if s == 0 else features[s - 1]
            stages.append(nn.Sequential(StackedConvs(style, n_conv[s], cin, cout, kernels[s], strides[s])))
        self.stages = nn.Sequential(*stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        skips: list[Tensor] = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class PlainConvUNet(EncoderDecoderHead, SegmentationNetwork):
    """nnU-Net's PlainConvUNet.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: output classes, background included.
        features: channels per stage (``features_per_stage``), e.g. [32, 64, 128, 256, 320].
        kernel_sizes: per stage, an integer or one per axis (array order).
        strides: per stage, an integer or one per axis; the first is usually 1 (default: 1, then 2).
        n_conv_per_stage: convolutions per encoder stage (an integer or one per stage).
        n_conv_per_stage_decoder: convolutions per decoder stage (one fewer stages).
        conv_bias: convolutions and transposed convolutions have a bias (nnU-Net: True).
        norm: "instance" (nnU-Net's default), "batch" or None.
        norm_eps, norm_affine: the norm's settings (nnU-Net: 1e-5, affine).
        nonlin: "leaky_relu" (nnU-Net's default) or "relu"; negative_slope: LeakyReLU's slope.
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, num_classes: int = 2,
                 features: Sequence[int] = (32, 64, 128, 256), kernel_sizes: int | Sequence = 3,
                 strides: int | Sequence | None = None, n_conv_per_stage: int | Sequence[int] = 2,
                 n_conv_per_stage_decoder: int | Sequence[int] = 2, conv_bias: bool = True,
                 norm: str | None = "instance", norm_eps: float = 1e-5, norm_affine: bool = True,
                 nonlin: str = "leaky_relu", negative_slope: float = 0.01):
        super().__init__(spatial_dims, in_channels, num_classes, features=features, kernel_sizes=kernel_sizes,
                         strides=strides, n_conv_per_stage=n_conv_per_stage,
                         n_conv_per_stage_decoder=n_conv_per_stage_decoder, conv_bias=conv_bias, norm=norm,
                         norm_eps=norm_eps, norm_affine=norm_affine, nonlin=nonlin, negative_slope=negative_slope)
        style = Style(spatial_dims, conv_bias, norm, norm_eps, norm_affine, nonlin, negative_slope)
        chans, kernels, steps = stage_layout(spatial_dims, features, kernel_sizes, strides)
        n = len(chans)
        self.size_divisors = axis_divisors(steps)
        self.size_divisor = max(self.size_divisors)
        self.encoder = PlainEncoder(style, in_channels, chans, kernels, steps,
                                    per_stage_counts(n_conv_per_stage, n, "n_conv_per_stage"))
        self.decoder = UNetDecoder(style, chans, kernels, steps,
                                   per_stage_counts(n_conv_per_stage_decoder, n - 1, "n_conv_per_stage_decoder"))
        self.head = style.conv_cls(chans[0], num_classes, 1)
