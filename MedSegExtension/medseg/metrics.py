"""Segmentation metrics against a reference: Dice, IoU, HD95 and average surface distance in mm, volumes.

Surface distances are measured between the boundary voxels of the two masks (voxels of a mask with a
face-neighbour outside it), with SimpleITK's Maurer distance map in physical units (spacing honoured),
symmetric: HD95 is the 95th percentile of both directed distance sets together, ASD their mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

from .geometry import Geometry

__all__ = ["LabelScores", "score_label"]


@dataclass(frozen=True)
class LabelScores:
    """Scores of one label in one case; distances are None when a mask is empty (undefined)."""

    dice: float
    iou: float
    hd95_mm: float | None
    asd_mm: float | None
    volume_pred_ml: float
    volume_ref_ml: float
    volume_error_ml: float

    def to_dict(self) -> dict:
        return asdict(self)


def _surface(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for shift in (1, -1):
            inner &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return mask & ~inner


def _distances_to(mask: np.ndarray, points: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Distance (mm) from each of `points` (a boolean array) to the surface of `mask`."""
    image = geometry.to_sitk(_surface(mask).astype(np.uint8))
    dist = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return np.abs(sitk.GetArrayViewFromImage(dist))[points]


def score_label(pred: np.ndarray, ref: np.ndarray, geometry: Geometry) -> LabelScores:
    """Scores of boolean masks `pred` and `ref` (same grid, [k, j, i])."""
    pred, ref = pred.astype(bool), ref.astype(bool)
    inter, total = int((pred & ref).sum()), int(pred.sum() + ref.sum())
    union = total - inter
    dice = 1.0 if total == 0 else 2 * inter / total
    iou = 1.0 if union == 0 else inter / union
    hd95 = asd = None
    if pred.any() and ref.any():
        d = np.concatenate([_distances_to(ref, _surface(pred), geometry), _distances_to(pred, _surface(ref), geometry)])
        hd95, asd = float(np.percentile(d, 95)), float(d.mean())
    elif not pred.any() and not ref.any():
        hd95 = asd = 0.0
    vp, vr = float(pred.sum()) * geometry.voxel_volume_ml, float(ref.sum()) * geometry.voxel_volume_ml
    return LabelScores(dice, iou, hd95, asd, vp, vr, vp - vr)
