"""From the user's volume to the network's input grid and back: normalisation, resampling, ROI crop."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .card import Normalization
from .geometry import Geometry

__all__ = ["crop_nonzero", "crop_roi", "nonzero_mask", "normalize", "normalize_channel", "paste_roi", "resample",
           "shape_at_spacing", "target_shape"]

_MAX_SAMPLES = 2_000_000  # percentiles and statistics from at most this many voxels (a fixed stride)


def _sample(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(-1)
    return flat[:: max(1, flat.size // _MAX_SAMPLES)]


def normalize_channel(x: np.ndarray, norm: Normalization) -> np.ndarray:
    """Normalise one channel `(Z, Y, X)` as its card says; returns float32."""
    x = np.asarray(x, dtype=np.float32)
    if norm.kind == "none":
        return x
    if norm.kind == "ct":
        lo, hi = norm.window
        return ((np.clip(x, lo, hi) - norm.mean) / norm.std).astype(np.float32)
    sample = _sample(x)
    if norm.kind == "minmax":
        lo, hi = float(sample.min()), float(x.max())
        return ((x - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)
    if norm.percentiles is not None:
        lo, hi = np.percentile(sample, norm.percentiles)
        x = np.clip(x, lo, hi)
        sample = np.clip(sample, lo, hi)
    std = float(sample.std())
    return ((x - float(sample.mean())) / (std if std > 1e-8 else 1.0)).astype(np.float32)


def normalize(channels: np.ndarray, norms: Sequence[Normalization],
              masked: Sequence[bool] | None = None) -> np.ndarray:
    """`(C, Z, Y, X)` -> float32, channel c normalised by ``norms[c]``.

    ``masked[c]`` (nnU-Net's ``use_mask_for_norm``): a z-score channel takes its mean and std from the
    :func:`nonzero_mask` region only, and stays 0 outside it.
    """
    if not masked or not any(masked):
        return np.stack([normalize_channel(c, n) for c, n in zip(channels, norms, strict=True)])
    mask = nonzero_mask(channels)
    out = []
    for c, n, m in zip(channels, norms, masked, strict=True):
        if m and n.kind == "zscore" and mask.any():
            x = np.zeros(c.shape, dtype=np.float32)
            x[mask] = normalize_channel(c[mask], n)
            out.append(x)
        else:
            out.append(normalize_channel(c, n))
    return np.stack(out)


def nonzero_mask(channels: np.ndarray) -> np.ndarray:
    """Voxels non-zero in any channel of `(C, Z, Y, X)`, holes filled (face connectivity), as nnU-Net's
    ``create_nonzero_mask``."""
    import SimpleITK as sitk

    any_nonzero = np.any(channels != 0, axis=0)
    filled = sitk.BinaryFillhole(sitk.GetImageFromArray(any_nonzero.astype(np.uint8)), fullyConnected=False)
    return sitk.GetArrayFromImage(filled).astype(bool)


def crop_nonzero(channels: np.ndarray, geometry: Geometry, box: list[tuple[int, int]] | None):
    """Crop `(C, Z, Y, X)` (already cropped to `box`, in the full image's array order, or None) further to the box
    of its voxels non-zero in any channel, as nnU-Net's ``crop_to_nonzero``; returns (cropped, its geometry, the
    combined box in the full image). Voxels outside are background in the result (``paste_roi``)."""
    nonzero = np.any(channels != 0, axis=0)
    if not nonzero.any():
        return channels, geometry, box
    inner = []
    for axis in range(nonzero.ndim):
        hits = np.flatnonzero(np.any(nonzero, axis=tuple(a for a in range(nonzero.ndim) if a != axis)))
        inner.append((int(hits[0]), int(hits[-1]) + 1))
    cropped = channels[(slice(None), *(slice(lo, hi) for lo, hi in inner))]
    offsets = [lo for lo, _ in box] if box is not None else [0] * nonzero.ndim
    return (cropped, geometry.crop(tuple(lo for lo, _ in inner)),
            [(o + lo, o + hi) for o, (lo, hi) in zip(offsets, inner, strict=True)])


def target_shape(shape: Sequence[int], geometry: Geometry, spacing_xyz: Sequence[float]) -> tuple[int, ...]:
    """Array shape `(Z, Y, X)` at the target spacing (mm, x y z), keeping the physical extent."""
    return shape_at_spacing(shape, geometry.spacing, spacing_xyz)


def shape_at_spacing(shape: Sequence[int], spacing_xyz: Sequence[float],
                     target_xyz: Sequence[float]) -> tuple[int, ...]:
    """Array shape `(Z, Y, X)` of `shape` at `spacing_xyz` resampled to `target_xyz` (mm, x y z)."""
    current = np.asarray(spacing_xyz, dtype=float)[::-1]
    target = np.asarray(target_xyz, dtype=float)[::-1]
    return tuple(max(1, round(s * c / t)) for s, c, t in zip(shape, current, target, strict=True))


def resample(x: torch.Tensor, shape: Sequence[int], mode: str = "trilinear") -> torch.Tensor:
    """Resample `(C, Z, Y, X)` to `shape` (align_corners=False, the exact inverse of the way back)."""
    if tuple(x.shape[1:]) == tuple(shape):
        return x
    kwargs = {"align_corners": False} if mode != "nearest" else {}
    return F.interpolate(x[None], size=tuple(shape), mode=mode, **kwargs)[0]


def _check_roi(roi: Sequence[int], shape: Sequence[int]) -> list[tuple[int, int]]:
    """ROI given as (i0, i1, j0, j1, k0, k1), half-open, -> [(k0, k1), (j0, j1), (i0, i1)]."""
    if len(roi) != 6:
        raise ValueError(f"region of interest must be 6 indices i0 i1 j0 j1 k0 k1, got {list(roi)}")
    box = [(int(roi[4]), int(roi[5])), (int(roi[2]), int(roi[3])), (int(roi[0]), int(roi[1]))]
    size_ijk = list(shape[::-1])
    for (lo, hi), size, axis in zip(box[::-1], size_ijk, "ijk", strict=True):
        if not 0 <= lo < hi <= size:
            raise ValueError(f"region of interest {list(roi)} is outside the image: on axis {axis} it needs "
                             f"0 <= {axis}0 < {axis}1 <= {size} (the image is {size_ijk[0]} x {size_ijk[1]} x "
                             f"{size_ijk[2]} voxels, i j k); pick a box inside the image")
    return box


def crop_roi(channels: np.ndarray, geometry: Geometry, roi: Sequence[int] | None):
    """Crop `(C, Z, Y, X)` to the ROI; returns (cropped, its geometry, the box in array order or None)."""
    if roi is None:
        return channels, geometry, None
    box = _check_roi(roi, channels.shape[1:])
    cropped = channels[(slice(None), *(slice(lo, hi) for lo, hi in box))]
    return cropped, geometry.crop(tuple(lo for lo, _ in box)), box


def paste_roi(array: np.ndarray, shape: Sequence[int], box: list[tuple[int, int]] | None, fill: float = 0):
    """Put an ROI result back into a full-size array of `shape` (the rest `fill`)."""
    if box is None:
        return array
    full = np.full(tuple(shape), fill, dtype=array.dtype)
    full[tuple(slice(lo, hi) for lo, hi in box)] = array
    return full
