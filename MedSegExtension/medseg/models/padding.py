"""The padding rule shared by tests and inference: mirror-pad up to the network's size divisor."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["crop_to", "pad_to_multiple"]


def pad_to_multiple(x: Tensor, divisor: int, min_size: int = 0) -> tuple[Tensor, tuple[int, ...]]:
    """Pad the spatial axes of `x` `(B, C, *spatial)` at their far end to multiples of `divisor`.

    Mirrored (reflect) borders as in the U-Net paper's overlap-tile strategy; where an axis is too short to
    reflect, replicate is used. Returns the padded tensor and the original spatial shape for :func:`crop_to`.
    """
    shape = tuple(x.shape[2:])
    target = [max(min_size, -(-s // divisor) * divisor) for s in shape]
    pads: list[int] = []
    for s, t in reversed(list(zip(shape, target, strict=True))):
        pads += [0, t - s]
    if not any(pads):
        return x, shape
    mode = "reflect" if all(t - s < s for s, t in zip(shape, target, strict=True)) else "replicate"
    return F.pad(x, pads, mode=mode), shape


def crop_to(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Undo :func:`pad_to_multiple`: keep the first `shape` voxels of each spatial axis."""
    index = (slice(None), slice(None), *(slice(0, s) for s in shape))
    return x[index]
