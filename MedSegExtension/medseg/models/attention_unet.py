"""Attention U-Net (Oktay et al., 2018) for 2D and 3D: a U-Net whose skip connections pass through
additive attention gates.

Reference: O. Oktay, J. Schlemper, L. Le Folgoc, M. Lee, M. Heinrich, K. Misawa, K. Mori, S. McDonagh,
N. Y. Hammerla, B. Kainz, B. Glocker, D. Rueckert, "Attention U-Net: Learning Where to Look for the
Pancreas", MIDL 2018, arXiv:1804.03999.

Gate (the paper's grid attention, Eq. 1-2): for a skip feature map ``x_l`` and the gating signal ``g``, the
decoder feature one level coarser (before up-sampling, so ``g`` lies on ``x_l``'s grid down-sampled by 2)::

    q     = psi^T ReLU(W_x^T x_l + W_g^T g + b_g) + b_psi
    alpha = sigmoid(q)                                        (on g's grid)
    x_hat = W_o^T (x_l * resample(alpha, x_l's grid)) + norm  (1x1 output transform)

``W_x`` is a convolution with kernel 2 and stride 2 (no bias; it brings ``x_l`` to ``g``'s grid), ``W_g``
and ``psi`` are 1x1 convolutions with the biases ``b_g`` and ``b_psi``; ``alpha`` is resampled with
(tri/bi)linear interpolation. The intermediate width ``F_int`` equals the skip's channels, as in the
authors' 3D pancreas model. Every skip connection is gated, the full-resolution one included (the authors'
released 3D model leaves that one ungated).

The U-Net around the gates: double 3x3x3 convolutions (:class:`medseg.models.blocks.ConvBlock`, conv ->
norm -> ReLU twice), 2x2x2 max-pooling, 2x2x2 transposed convolutions halving the channels, concatenation
of the gated skip with the up-sampled features, and a 1x1x1 convolution to the class logits (no soft-max).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import blocks
from .base import SegmentationNetwork

__all__ = ["AttentionGate", "AttentionUNet"]

DEFAULT_FEATURES = (64, 128, 256, 512, 1024)


class AttentionGate(nn.Module):
    """Additive grid attention gate: weights the skip ``x`` by coefficients in [0, 1] computed from ``x`` and
    the coarser gating signal ``g``.

    Args:
        spatial_dims: 2 or 3.
        skip_channels: channels of ``x`` (``F_l``), also of the output.
        gate_channels: channels of ``g`` (``F_g``).
        inter_channels: channels of the intermediate sum (``F_int``).
        norm: normalisation after the 1x1 output transform, see :func:`medseg.models.blocks.norm`.

    Shapes:
        ``x (B, F_l, D, H, W)``, ``g (B, F_g, D/2, H/2, W/2)`` -> gated ``(B, F_l, D, H, W)`` and attention
        coefficients ``(B, 1, D, H, W)``.
    """

    def __init__(
        self, spatial_dims: int, skip_channels: int, gate_channels: int, inter_channels: int, norm: str | None
    ):
        super().__init__()
        self.w_x = blocks.conv(spatial_dims, skip_channels, inter_channels, 2, stride=2, bias=False)
        self.w_g = blocks.conv(spatial_dims, gate_channels, inter_channels, 1)
        self.psi = blocks.conv(spatial_dims, inter_channels, 1, 1)
        self.out = nn.Sequential(
            blocks.conv(spatial_dims, skip_channels, skip_channels, 1, bias=norm is None),
            blocks.norm(norm, spatial_dims, skip_channels),
        )
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"

    def forward(self, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """Gated skip and the attention coefficients resampled to ``x``'s grid."""
        q = self.psi(F.relu(self.w_x(x) + self.w_g(g)))
        alpha = F.interpolate(torch.sigmoid(q), size=x.shape[2:], mode=self.mode, align_corners=False)
        return self.out(x * alpha), alpha


class DecoderLevel(nn.Module):
    """Gate the skip with the coarser features, up-sample those, concatenate, double convolution.

    Shapes:
        ``x (B, cin, D, H, W)``, ``skip (B, ch, 2D, 2H, 2W)`` -> ``(B, ch, 2D, 2H, 2W)`` and the attention
        coefficients ``(B, 1, 2D, 2H, 2W)``.
    """

    def __init__(self, spatial_dims: int, cin: int, ch: int, norm: str | None):
        super().__init__()
        self.gate = AttentionGate(spatial_dims, ch, cin, ch, norm)
        self.up = blocks.conv_transpose(spatial_dims, cin, ch)
        self.conv = blocks.ConvBlock(spatial_dims, 2 * ch, ch, norm)

    def forward(self, x: Tensor, skip: Tensor) -> tuple[Tensor, Tensor]:
        gated, alpha = self.gate(skip, x)
        return self.conv(torch.cat([gated, self.up(x)], dim=1)), alpha


class AttentionUNet(SegmentationNetwork):
    """U-Net with additive attention gates on its skip connections (Oktay et al. 2018).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (modalities).
        num_classes: output channels, background included.
        width: multiplier of ``features`` (rounded, at least 1 per level); the paper's 3D model is
            ``width=0.25`` of the defaults (16-32-64-128-256).
        norm: normalisation after each convolution: "batch" (default), "instance", "group" or None.
        features: channels of the five levels, finest first, before ``width`` is applied.

    Raises:
        ValueError: bad ``spatial_dims``, ``in_channels``, ``num_classes``, ``width``, ``norm`` or
            ``features`` (five positive integers).

    Shapes:
        ``(B, in_channels, D, H, W)`` -> logits ``(B, num_classes, D, H, W)`` (``(B, C, H, W)`` in 2D); every
        spatial size must be a multiple of :attr:`size_divisor` (16: four 2x down-samplings).
    """

    size_divisor = 16

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int = 2,
        width: float = 1.0,
        norm: str | None = "batch",
        features: tuple[int, ...] | list[int] = DEFAULT_FEATURES,
    ):
        features = _check_features(features)
        super().__init__(spatial_dims, in_channels, num_classes, width=width, norm=norm, features=features)
        if norm not in blocks.NORMS:
            raise ValueError(f"norm must be one of {blocks.NORMS}, got {norm!r}")
        ch = [blocks.channels(f, width) for f in features]
        self.encoder = nn.ModuleList([blocks.ConvBlock(spatial_dims, in_channels, ch[0], norm)])
        self.encoder.extend(
            nn.Sequential(blocks.max_pool(spatial_dims), blocks.ConvBlock(spatial_dims, ch[i - 1], ch[i], norm))
            for i in range(1, len(ch))
        )
        self.decoder = nn.ModuleList(
            DecoderLevel(spatial_dims, ch[i + 1], ch[i], norm) for i in range(len(ch) - 2, -1, -1)
        )
        self.head = blocks.conv(spatial_dims, ch[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes, *spatial)`` for ``x`` ``(B, in_channels, *spatial)`` (no soft-max)."""
        return self.forward_with_attention(x)[0]

    def linear_head(self) -> nn.Module:
        return self.head

    def forward_features(self, x: Tensor) -> Tensor:
        """The finest decoder level's output, the head's input."""
        return self._decode(x)[0]

    def forward_with_attention(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits and the attention coefficients of every gate, e.g. to show them as explanations.

        Returns:
            ``(logits, maps)``: logits ``(B, num_classes, *spatial)`` and four maps in [0, 1], finest first,
            each on its skip's grid: ``maps[l]`` is ``(B, 1, *spatial / 2**l)``.
        """
        x, maps = self._decode(x)
        return self.head(x), maps

    def _decode(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips: list[Tensor] = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        maps: list[Tensor] = []
        for i, level in enumerate(self.decoder):
            x, alpha = level(x, skips[len(skips) - 2 - i])
            maps.insert(0, alpha)
        return x, maps


def _check_features(features: tuple[int, ...] | list[int]) -> list[int]:
    """The features as a JSON-friendly list; ValueError unless five positive integers."""
    values = list(features) if isinstance(features, (list, tuple)) else []
    positive = all(isinstance(f, int) and not isinstance(f, bool) and f > 0 for f in values)
    if len(values) != len(DEFAULT_FEATURES) or not positive:
        raise ValueError(f"features must be {len(DEFAULT_FEATURES)} positive integers, got {features!r}")
    return values
