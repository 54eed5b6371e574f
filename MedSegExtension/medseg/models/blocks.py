"""Small building blocks shared by the architectures, for 2D and 3D."""

from __future__ import annotations

from torch import nn

__all__ = [
    "ConvBlock",
    "channels",
    "conv",
    "conv_transpose",
    "dropout",
    "max_pool",
    "norm",
]

NORMS = ("batch", "instance", "group", None)


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")


def conv(spatial_dims: int, cin: int, cout: int, kernel: int, stride: int = 1, bias: bool = True) -> nn.Module:
    """A same-padded convolution (odd kernels keep the size; stride divides it)."""
    _check_dims(spatial_dims)
    cls = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    padding = kernel // 2 if stride == 1 else 0
    return cls(cin, cout, kernel, stride=stride, padding=padding, bias=bias)


def conv_transpose(spatial_dims: int, cin: int, cout: int, kernel: int = 2, stride: int = 2) -> nn.Module:
    """Transposed convolution that multiplies the size by `stride` (kernel == stride)."""
    _check_dims(spatial_dims)
    cls = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
    return cls(cin, cout, kernel, stride=stride)


def max_pool(spatial_dims: int, kernel: int = 2) -> nn.Module:
    _check_dims(spatial_dims)
    return (nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d)(kernel)


def dropout(spatial_dims: int, p: float) -> nn.Module:
    if p <= 0:
        return nn.Identity()
    return (nn.Dropout2d if spatial_dims == 2 else nn.Dropout3d)(p)


def norm(kind: str | None, spatial_dims: int, ch: int) -> nn.Module:
    """Normalisation layer by name: "batch", "instance" (affine), "group" (8 groups) or None."""
    _check_dims(spatial_dims)
    if kind is None:
        return nn.Identity()
    if kind == "batch":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(ch)
    if kind == "instance":
        return (nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d)(ch, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, ch), ch)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def channels(base: int, width: float) -> int:
    """Channels of a stage after the width multiplier (at least 1)."""
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    return max(1, round(base * width))


class ConvBlock(nn.Sequential):
    """`n` x (conv k x k [x k] -> norm -> ReLU), the U-Net double convolution when n == 2.

    Args:
        spatial_dims: 2 or 3.
        cin: input channels.
        cout: output channels of every convolution.
        norm_kind: see :func:`norm`; the convolution has no bias when a norm follows it.
        n: number of convolutions.
        kernel: kernel size (odd).
    """

    def __init__(
        self, spatial_dims: int, cin: int, cout: int, norm_kind: str | None = None, n: int = 2, kernel: int = 3
    ):
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [
                conv(spatial_dims, cin if i == 0 else cout, cout, kernel, bias=norm_kind is None),
                norm(norm_kind, spatial_dims, cout),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)
