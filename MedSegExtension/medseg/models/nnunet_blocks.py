"""Building blocks of nnU-Net's networks (``dynamic-network-architectures``) at inference, under their names.

The modules are named like nnU-Net's, so that a trained nnU-Net model's ``network_weights`` load with
``strict=True`` once the importer (``medseg.nnunet``) has removed nnU-Net's duplicate keys (``all_modules``,
``decoder.encoder``) and its deep-supervision heads: ``encoder.stages.1.0.convs.0.conv.weight``,
``decoder.transpconvs.0.weight``, ... Drop-out (identity at inference) is not built.

Written here rather than depending on ``dynamic-network-architectures``: these few hundred lines are all inference
needs, while that package imports timm and torchvision (whose PyPI wheels fail to load next to the CPU torch
wheel: "operator torchvision::nms does not exist") and registers every convolution twice (``all_modules``).

Kernel sizes and strides are given per stage and per axis (anisotropic networks: ``[[1, 3, 3], [3, 3, 3]]``);
a single integer stands for every axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["ConvNormAct", "EncoderDecoderHead", "StackedConvs", "UNetDecoder", "as_per_axis", "axis_divisors"]

NORMS = ("instance", "batch", None)
NONLINS = ("leaky_relu", "relu")


def as_per_axis(value: int | Sequence[int], spatial_dims: int, what: str) -> tuple[int, ...]:
    """An integer or a list of `spatial_dims` positive integers, as a tuple per axis."""
    items = [value] * spatial_dims if isinstance(value, int) else list(value)
    if len(items) != spatial_dims or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                             for v in items):
        raise ValueError(f"{what} must be a positive integer or {spatial_dims} of them, got {value!r}")
    return tuple(items)


def per_stage(values: Sequence, stages: int, what: str) -> list:
    if not isinstance(values, list | tuple) or len(values) != stages:
        raise ValueError(f"{what} must list one entry per stage ({stages}), got {values!r}")
    return list(values)


def axis_divisors(strides: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Per axis, the product of the strides: every input size along it must be a multiple of this."""
    return tuple(math.prod(s[a] for s in strides) for a in range(len(strides[0])))


def _norm(kind: str | None, spatial_dims: int, channels: int, eps: float, affine: bool) -> nn.Module:
    if kind is None:
        return nn.Identity()
    if kind == "instance":
        cls = nn.InstanceNorm3d if spatial_dims == 3 else nn.InstanceNorm2d
        return cls(channels, eps=eps, affine=affine)
    if kind == "batch":
        return (nn.BatchNorm3d if spatial_dims == 3 else nn.BatchNorm2d)(channels, eps=eps, affine=affine)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def _nonlin(kind: str | None, negative_slope: float) -> nn.Module:
    if kind is None:
        return nn.Identity()
    if kind == "leaky_relu":
        return nn.LeakyReLU(negative_slope, inplace=True)
    if kind == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"nonlin must be one of {NONLINS}, got {kind!r}")


class Style:
    """The per-network choices every convolution shares: dims, bias, norm and its settings, non-linearity."""

    def __init__(self, spatial_dims: int, conv_bias: bool, norm: str | None, norm_eps: float, norm_affine: bool,
                 nonlin: str, negative_slope: float):
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if nonlin not in NONLINS:
            raise ValueError(f"nonlin must be one of {NONLINS}, got {nonlin!r}")
        self.spatial_dims, self.conv_bias, self.norm, self.norm_eps = spatial_dims, conv_bias, norm, norm_eps
        self.norm_affine, self.nonlin, self.negative_slope = norm_affine, nonlin, negative_slope

    @property
    def conv_cls(self) -> type[nn.Module]:
        return nn.Conv3d if self.spatial_dims == 3 else nn.Conv2d

    @property
    def transposed_cls(self) -> type[nn.Module]:
        return nn.ConvTranspose3d if self.spatial_dims == 3 else nn.ConvTranspose2d


class ConvNormAct(nn.Module):
    """nnU-Net's ``ConvDropoutNormReLU``: a same-padded convolution, norm, non-linearity (``act=False``: none)."""

    def __init__(self, style: Style, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int],
                 bias: bool | None = None, act: bool = True):
        super().__init__()
        self.conv = style.conv_cls(cin, cout, tuple(kernel), tuple(stride), padding=[(k - 1) // 2 for k in kernel],
                                   bias=style.conv_bias if bias is None else bias)
        self.norm = _norm(style.norm, style.spatial_dims, cout, style.norm_eps, style.norm_affine)
        self.act = _nonlin(style.nonlin, style.negative_slope) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class StackedConvs(nn.Module):
    """nnU-Net's ``StackedConvBlocks``: `n` :class:`ConvNormAct`, the first with the stage's stride."""

    def __init__(self, style: Style, n: int, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int]):
        super().__init__()
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"convolutions per stage must be positive integers, got {n!r}")
        ones = (1,) * len(kernel)
        self.convs = nn.Sequential(*[ConvNormAct(style, cin if i == 0 else cout, cout, kernel, stride if i == 0
                                                 else ones) for i in range(n)])

    def forward(self, x: Tensor) -> Tensor:
        return self.convs(x)


class UNetDecoder(nn.Module):
    """nnU-Net's ``UNetDecoder`` without its segmentation heads (the network's 1x1 ``head`` is the last one).

    Stage s (lowest resolution first) up-samples with a transposed convolution of kernel = stride, concatenates
    the skip and runs ``n_conv[s]`` convolutions with the skip's kernel size.
    """

    def __init__(self, style: Style, features: Sequence[int], kernels: Sequence[Sequence[int]],
                 strides: Sequence[Sequence[int]], n_conv: Sequence[int]):
        super().__init__()
        stages = len(features)
        n_conv = per_stage(n_conv, stages - 1, "n_conv_per_stage_decoder")
        ups, blocks = [], []
        for s in range(1, stages):
            below, skip = features[-s], features[-(s + 1)]
            ups.append(style.transposed_cls(below, skip, tuple(strides[-s]), tuple(strides[-s]), bias=style.conv_bias))
            blocks.append(StackedConvs(style, n_conv[s - 1], 2 * skip, skip, kernels[-(s + 1)],
                                       (1,) * style.spatial_dims))
        self.stages = nn.ModuleList(blocks)
        self.transpconvs = nn.ModuleList(ups)

    def forward(self, skips: list[Tensor]) -> Tensor:
        x = skips.pop()
        for up, block in zip(self.transpconvs, self.stages):  # noqa: B905 - TorchScript has no zip(strict=)
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return x


def stage_layout(spatial_dims: int, features: Sequence[int], kernel_sizes: int | Sequence,
                 strides: int | Sequence | None) -> tuple[list[int], list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Features, kernels and strides per stage (each per axis); strides default to 1 then 2 on every axis."""
    if not isinstance(features, list | tuple) or not features or not all(
            isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in features):
        raise ValueError(f"features must list a positive channel count per stage, got {features!r}")
    stages = len(features)
    if strides is None:
        strides = [1] + [2] * (stages - 1)
    kernels = [as_per_axis(k, spatial_dims, f"kernel_sizes[{s}]") for s, k in
               enumerate(per_stage(kernel_sizes, stages, "kernel_sizes") if not isinstance(kernel_sizes, int)
                         else [kernel_sizes] * stages)]
    steps = [as_per_axis(k, spatial_dims, f"strides[{s}]") for s, k in
             enumerate(per_stage(strides, stages, "strides") if not isinstance(strides, int) else [strides] * stages)]
    return list(features), kernels, steps


def per_stage_counts(value: int | Sequence[int], stages: int, what: str) -> list[int]:
    """An integer for every stage or one per stage, each a positive integer."""
    items = [value] * stages if isinstance(value, int) else per_stage(value, stages, what)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items):
        raise ValueError(f"{what} must be positive integers, got {value!r}")
    return items


class EncoderDecoderHead:
    """``forward``, ``linear_head`` and ``forward_features`` of a network made of ``encoder``, ``decoder`` and a 1x1
    ``head`` (PlainConvUNet, ResidualEncoderUNet); listed before ``SegmentationNetwork`` among the bases."""

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))

    def linear_head(self) -> nn.Module:
        return self.head

    def forward_features(self, x: Tensor) -> Tensor:
        """The last decoder stage's output `(B, features[0], *spatial)`, the head's input."""
        return self.decoder(self.encoder(x))
