"""Probability-guided editing of a result's segment in the scene: threshold slider, click to add, click to remove.

Each call reads the segment's probability overlay (the result's ``"probability:<name>"`` overlay volume, matched by
the segment's name; :func:`MedSegLib.run.apply` adds it when the run kept probabilities), the segment and the other
segments on the source volume's grid, computes with :mod:`medseg.guided_edit`, and writes the segment's binary
labelmap with ``vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment`` (what the Segment Editor's effects
call; a core static method, so it runs on slicer-core as in the application). Voxels of other segments are never
taken. The volume table is not re-measured here: call ``MedSegLib.tables.recompute_table`` after an edit, as after
any Segment Editor edit. A call costs the engine's time plus two segment exports and one write on the whole grid
(``scripts/benchmark_guided_edit.py --bridge``).

The slider: consecutive :func:`apply_threshold` calls on one segment form one slider session whose seed is the
segment as it was before the first move, so moving the slider back returns exactly to where it was; any other
change of the segment (a click, a paint stroke) starts a new session.

Undo: the Segment Editor's undo lives in the application's editor widget (``qMRMLSegmentEditorWidget``, Qt), on
top of ``vtkSegmentationHistory``, which is in the Segmentations core and runs on slicer-core. Each edit here first
saves the segmentation's state: through `save_state` when given (the panel passes the embedded editor widget's
``saveStateForUndo``, so the editor's own Undo button undoes it), else into a ``vtkSegmentationHistory`` that this
module keeps per segmentation node, which :func:`undo_last_edit` restores (all segments, exactly). A slider session
saves once, before its first move, so one undo reverts the whole drag.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import slicer
import vtk

from medseg.guided_edit import region_at, threshold_mask
from medseg.text import printable

from .i18n import tr as _
from .segmentation import _oriented_labelmap, _segment_ids, labelmap_from_segmentation, overlay_nodes, source_volume
from .volumes import world_ijk_to_ras

__all__ = ["add_region_at", "apply_threshold", "probability_overlay", "remove_region_at", "undo_last_edit"]

PROBABILITY_PREFIX = "probability:"
def _keep_hint() -> str:
    return _('enable "keep probabilities" (the run option "probability of each label") and run the model again')


@dataclass
class _Memory:
    """Per segmentation node: its undo history and the current slider session."""

    history: object
    session: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # segment -> (seed, written)


_MEMORY: dict[tuple[str, str], _Memory] = {}


def _memory(segmentation_node) -> _Memory:
    key = (segmentation_node.GetScene().GetAddressAsString("") if segmentation_node.GetScene() else "",
           segmentation_node.GetID())
    memory = _MEMORY.get(key)
    segmentation = segmentation_node.GetSegmentation()
    if memory is None or memory.history.GetSegmentation().GetAddressAsString("") != segmentation.GetAddressAsString(""):
        history = slicer.vtkSegmentationHistory()
        history.SetSegmentation(segmentation)
        memory = _MEMORY[key] = _Memory(history)
    return memory


def probability_overlay(segmentation_node, segment_id: str):
    """The segment's probability overlay volume node; ValueError naming the fix when the result has none."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    if segment is None:
        raise ValueError(_("segmentation {segmentation!r} has no segment {segment!r}").format(
            segmentation=segmentation_node.GetName(), segment=segment_id))
    name = segment.GetName()
    overlays = {kind: node for kind, node in overlay_nodes(segmentation_node).items()
                if kind and kind.startswith(PROBABILITY_PREFIX)}
    for kind, node in overlays.items():
        if printable(kind[len(PROBABILITY_PREFIX):]) == name:
            return node
    if not overlays:
        raise ValueError(_("result {result!r} kept no probability maps, so segment {segment!r} cannot be edited "
                           "along them: {hint}").format(result=segmentation_node.GetName(), segment=name,
                                                        hint=_keep_hint()))
    names = ", ".join(repr(k[len(PROBABILITY_PREFIX):]) for k in overlays)
    raise ValueError(_("result {result!r} has no probability map for segment {segment!r} (it has {names}; a renamed "
                       "segment no longer matches): {hint} for this label").format(
        result=segmentation_node.GetName(), segment=name, names=names, hint=_keep_hint()))


def _probability(segmentation_node, segment_id: str, volume) -> np.ndarray:
    node = probability_overlay(segmentation_node, segment_id)
    array = slicer.util.arrayFromVolume(node)
    dims = volume.GetImageData().GetDimensions()
    if array.shape != tuple(dims[::-1]):
        raise ValueError(_("probability overlay {overlay!r} is not on the grid of volume {volume!r}; run the model "
                           "again").format(overlay=node.GetName(), volume=volume.GetName()))
    return array


def _masks(segmentation_node, segment_id: str, volume) -> tuple[np.ndarray, np.ndarray]:
    """(the segment, every other segment) as boolean arrays on the volume's grid."""
    mask = labelmap_from_segmentation(segmentation_node, volume, [segment_id], [1]) > 0
    others = [sid for sid in _segment_ids(segmentation_node) if sid != segment_id]
    other = labelmap_from_segmentation(segmentation_node, volume, others) > 0 if others else np.zeros_like(mask)
    return mask, other


def _save(segmentation_node, save_state: Callable[[], None] | None) -> None:
    if save_state is not None:
        save_state()
    else:
        _memory(segmentation_node).history.SaveState()


def _write(segmentation_node, segment_id: str, mask: np.ndarray, volume) -> None:
    """Replace the segment's voxels on the volume's whole grid with `mask`."""
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    image = _oriented_labelmap(mask.astype(np.uint8), ijk_to_ras)
    dims = volume.GetImageData().GetDimensions()
    extent = (0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(image, segmentation_node, segment_id, logic.MODE_REPLACE, extent):
        raise RuntimeError(_("could not write segment {segment!r} of {segmentation!r}").format(
            segment=segment_id, segmentation=segmentation_node.GetName()))


def apply_threshold(scene, segmentation_node, segment_id: str, threshold: float, *,
                    save_state: Callable[[], None] | None = None) -> np.ndarray:
    """Set the segment to ``{p >= threshold}`` grown from the segment (see the module docstring); returns the mask.

    Raises:
        ValueError: no probability map for the segment, an empty segment, or a threshold outside (0, 1].
    """
    volume = source_volume(segmentation_node)
    probability = _probability(segmentation_node, segment_id, volume)
    mask, other = _masks(segmentation_node, segment_id, volume)
    memory = _memory(segmentation_node)
    seed, written = memory.session.get(segment_id, (None, None))
    if written is None or not np.array_equal(written, mask):  # a new slider session
        if not mask.any():
            raise ValueError(_("segment {segment!r} is empty: add a region (click) before moving the threshold")
                             .format(segment=segment_id))
        seed = mask
        _save(segmentation_node, save_state)
    new = threshold_mask(probability, threshold, seed_mask=seed, other_labels=other)
    _write(segmentation_node, segment_id, new, volume)
    memory.session[segment_id] = (seed, new)
    return new


def _point_kji(volume, ras_point) -> tuple[float, float, float]:
    ijk = np.linalg.inv(world_ijk_to_ras(volume)) @ np.array([*map(float, ras_point), 1.0])
    return float(ijk[2]), float(ijk[1]), float(ijk[0])


def _click(segmentation_node, segment_id: str, ras_point, threshold: float, mode: str, radius: int,
           save_state: Callable[[], None] | None) -> np.ndarray:
    volume = source_volume(segmentation_node)
    probability = _probability(segmentation_node, segment_id, volume)
    mask, other = _masks(segmentation_node, segment_id, volume)
    region = region_at(probability, _point_kji(volume, ras_point), threshold=threshold, mask=mask, mode=mode,
                       other_labels=other, radius=radius)
    if region.any():
        _save(segmentation_node, save_state)
        _write(segmentation_node, segment_id, mask | region if mode == "add" else mask & ~region, volume)
        _memory(segmentation_node).session.pop(segment_id, None)
    return region


def add_region_at(scene, segmentation_node, segment_id: str, ras_point, threshold: float, *, radius: int = 3,
                  save_state: Callable[[], None] | None = None) -> np.ndarray:
    """Add the region of ``{p >= threshold}`` at the world RAS point to the segment; returns the region (empty:
    nothing at or within `radius` voxels of the point, the segment is unchanged)."""
    return _click(segmentation_node, segment_id, ras_point, threshold, "add", radius, save_state)


def remove_region_at(scene, segmentation_node, segment_id: str, ras_point, threshold: float = 0.5, *,
                     radius: int = 3, save_state: Callable[[], None] | None = None) -> np.ndarray:
    """Remove the connected piece of the segment at the world RAS point; returns it (empty: nothing removed)."""
    return _click(segmentation_node, segment_id, ras_point, threshold, "remove", radius, save_state)


def undo_last_edit(scene, segmentation_node) -> bool:
    """Restore the segmentation as it was before the last edit made here without `save_state`; False when there is
    nothing to undo."""
    memory = _memory(segmentation_node)
    if not memory.history.IsRestorePreviousStateAvailable():
        return False
    memory.session.clear()
    return bool(memory.history.RestorePreviousState())
