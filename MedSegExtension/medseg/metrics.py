"""Segmentation metrics against a reference: Dice, IoU, HD95, average surface distance and normalised surface
Dice in mm, volumes.

Definitions (those of MONAI's ``compute_hausdorff_distance``, ``compute_average_surface_distance`` and
``compute_surface_dice`` with their defaults, checked against them by the tests):

- The *surface* of a mask is its voxels with a face-neighbour outside it (outside the array counts as outside).
- A *directed* distance of a surface voxel of one mask is the Euclidean distance in mm (spacing honoured,
  voxel centre to voxel centre) to the nearest surface voxel of the other mask (SimpleITK's exact Maurer
  distance map).
- HD95 is the larger of the two directed 95th percentiles (pred -> ref, ref -> pred; linear interpolation
  between order statistics, as ``numpy.percentile`` and ``torch.quantile``); not the percentile of both sets
  pooled, which lies between the two directed ones and so understates the worse direction.
- ASD is the symmetric mean: the mean of both directed sets pooled.
- NSD (normalised surface Dice, Nikolov et al. 2021) at a tolerance ``tau`` mm is the fraction of surface
  voxels of both masks whose directed distance is at most ``tau``. MONAI's voxel-counting default, not the
  surface-element areas of DeepMind's ``surface-distance`` (MONAI's ``use_subvoxels=True``). The default
  tolerance, 1 mm, is one voxel of the hippocampus data; Nikolov et al. chose a tolerance per organ from the
  variation between annotators, so give ``nsd_tolerance_mm`` to match a published figure.

Undefined values, as MONAI: when either mask is empty there is no distance to measure, so HD95 and ASD are None
(MONAI: nan or inf). NSD is 0.0 when only one mask is empty (none of the surface present lies within the
tolerance; MONAI 0) and None when both are (MONAI nan). Dice and IoU are always defined: 1.0 when both masks are
empty, 0.0 when only one is. Means over cases leave None out and say how many they left out (``medseg evaluate``:
``n_undefined``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

from .geometry import Geometry

__all__ = ["DEFAULT_NSD_TOLERANCE_MM", "LabelScores", "score_label", "surface_distances"]

DEFAULT_NSD_TOLERANCE_MM = 1.0


@dataclass(frozen=True)
class LabelScores:
    """Scores of one label in one case; HD95 and ASD are None when a mask is empty, NSD when both are."""

    dice: float
    iou: float
    hd95_mm: float | None
    asd_mm: float | None
    nsd: float | None
    nsd_tolerance_mm: float
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


def _distance_map(surface: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Distance (mm) from every voxel to the nearest voxel of `surface` (0 on it)."""
    image = sitk.GetImageFromArray(surface.astype(np.uint8))
    image.SetSpacing(spacing)
    dist = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return np.maximum(sitk.GetArrayViewFromImage(dist), 0.0)


def surface_distances(pred: np.ndarray, ref: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances (mm) of non-empty boolean masks: (pred -> ref, ref -> pred).

    Both masks are cropped to their common bounding box plus one voxel first: the distances between points
    inside it do not depend on what lies outside.
    """
    union = pred | ref
    box = tuple(slice(max(int(w.min()) - 1, 0), int(w.max()) + 2) for w in np.nonzero(union))
    surf_pred, surf_ref = _surface(pred[box]), _surface(ref[box])
    spacing = tuple(float(s) for s in geometry.spacing)
    return _distance_map(surf_ref, spacing)[surf_pred], _distance_map(surf_pred, spacing)[surf_ref]


def score_label(pred: np.ndarray, ref: np.ndarray, geometry: Geometry,
                nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM) -> LabelScores:
    """Scores of boolean masks `pred` and `ref` (same grid, [k, j, i]); NSD at `nsd_tolerance_mm` mm."""
    if not np.isfinite(nsd_tolerance_mm) or nsd_tolerance_mm < 0:
        raise ValueError(f"the NSD tolerance must be a finite number of mm >= 0, got {nsd_tolerance_mm}")
    pred, ref = pred.astype(bool), ref.astype(bool)
    inter, total = int((pred & ref).sum()), int(pred.sum() + ref.sum())
    union = total - inter
    dice = 1.0 if total == 0 else 2 * inter / total
    iou = 1.0 if union == 0 else inter / union
    hd95 = asd = nsd = None
    if pred.any() and ref.any():
        to_ref, to_pred = surface_distances(pred, ref, geometry)
        hd95 = float(max(np.percentile(to_ref, 95), np.percentile(to_pred, 95)))
        both = np.concatenate([to_ref, to_pred])
        asd = float(both.mean())
        nsd = float((both <= nsd_tolerance_mm).sum() / both.size)
    elif pred.any() or ref.any():
        nsd = 0.0
    vp, vr = float(pred.sum()) * geometry.voxel_volume_ml, float(ref.sum()) * geometry.voxel_volume_ml
    return LabelScores(dice, iou, hd95, asd, nsd, float(nsd_tolerance_mm), vp, vr, vp - vr)
