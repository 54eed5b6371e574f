"""Walk the regions a reader should check (``medseg.review``): centre the slice views on one, pick the next.

:func:`jump_to` is what Slicer's own "jump to" does (markups, the Data module's "centre on"): every slice view
(``vtkMRMLSliceNode``) of the scene moves its slice through the point and centres it there,
``vtkMRMLSliceNode.JumpAllSlices(scene, r, a, s, CenteredJumpSlice)``. Points are RAS world millimetres, which a
region's ``centroid_ras`` is (the engine works in the input volume's world coordinates, parent transforms included).
"""

from __future__ import annotations

from collections.abc import Sequence

import slicer

__all__ = ["jump_to", "next_region"]


def jump_to(scene, ras_point: Sequence[float], view_group: int = -1) -> int:
    """Centre every slice view of `scene` (of `view_group`, -1: all) on `ras_point`; returns how many moved."""
    r, a, s = (float(v) for v in ras_point)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice, view_group)
    return scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")


def next_region(region_ids: Sequence[int], current: int | None, step: int = 1) -> int | None:
    """The region after (`step` 1) or before (-1) `current` in list order, wrapping around; the first when
    `current` is None or no longer listed; None for an empty list."""
    ids = list(region_ids)
    if not ids:
        return None
    if current not in ids:
        return ids[0] if step >= 0 else ids[-1]
    return ids[(ids.index(current) + step) % len(ids)]
