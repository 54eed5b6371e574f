"""What a reader changed: the AI's label map against the corrected one, per label.

Both maps are on one grid. Per label: the AI and corrected volumes (mL), Dice and HD95 between them
(:func:`medseg.metrics.score_label`, MONAI's definitions; HD95 ``None`` when either mask is empty; an unchanged
label is Dice 1 and HD95 0 without computing distance maps), and the
volume added (voxels of the label in the corrected map that the AI did not give it) and removed (the AI's
voxels of the label that the corrected map no longer gives it), in mL. A voxel moved from one label to another
counts as removed from the first and added to the second.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .geometry import Geometry
from .metrics import score_label

__all__ = ["EDIT_COLUMNS", "EditStats", "any_edited", "compare_masks"]

EDIT_COLUMNS = ("ai_volume_ml", "corrected_volume_ml", "edit_dice", "edit_hd95_mm", "added_ml", "removed_ml")


@dataclass(frozen=True)
class EditStats:
    """One label's AI mask against its corrected mask."""

    label_id: int
    name: str
    ai_volume_ml: float
    corrected_volume_ml: float
    dice: float
    hd95_mm: float | None
    added_ml: float
    removed_ml: float
    added_voxels: int
    removed_voxels: int

    @property
    def edited(self) -> bool:
        return self.added_voxels > 0 or self.removed_voxels > 0

    def to_dict(self) -> dict:
        return {**asdict(self), "edited": self.edited}


def compare_masks(ai_labels: np.ndarray, corrected_labels: np.ndarray, geometry: Geometry,
                  labels: Mapping[int, str] | Sequence[tuple[int, str]]) -> list[EditStats]:
    """Compare the AI's label map with the corrected one, label by label.

    Args:
        ai_labels: the AI's integer label map ``(Z, Y, X)``.
        corrected_labels: the corrected map on the same grid.
        geometry: the grid's geometry (spacing for volumes and HD95).
        labels: label id -> name (or (id, name) pairs) to compare, in the order wanted; id 0 is skipped.

    Returns:
        One :class:`EditStats` per non-background label.
    """
    if ai_labels.shape != corrected_labels.shape:
        raise ValueError(f"the AI label map {ai_labels.shape} and the corrected one {corrected_labels.shape} are on "
                         f"different grids; resample the corrected map onto the AI's grid first")
    pairs = list(labels.items()) if isinstance(labels, Mapping) else list(labels)
    voxel_ml = geometry.voxel_volume_ml
    out = []
    for label_id, name in pairs:
        if label_id == 0:
            continue
        ai, corrected = ai_labels == label_id, corrected_labels == label_id
        added, removed = int((corrected & ~ai).sum()), int((ai & ~corrected).sum())
        if added or removed:
            scores = score_label(corrected, ai, geometry)
            dice, hd95, ai_ml, corrected_ml = scores.dice, scores.hd95_mm, scores.volume_ref_ml, scores.volume_pred_ml
        else:  # unchanged (the table's refresh after every edit): no distance maps to compute
            ai_ml = corrected_ml = float(ai.sum()) * voxel_ml
            dice, hd95 = 1.0, (0.0 if ai_ml else None)
        out.append(EditStats(int(label_id), str(name), ai_ml, corrected_ml, dice, hd95, added * voxel_ml,
                             removed * voxel_ml, added, removed))
    return out


def any_edited(stats: Sequence[EditStats]) -> bool:
    """Whether any label was changed."""
    return any(s.edited for s in stats)
