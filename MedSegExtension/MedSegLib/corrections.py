"""What the clinician changed: the AI's original mask kept with a result, and the edits measured against it.

When a result is applied (:func:`MedSegLib.run.apply`), the engine's label map (label values = the model's label
ids, on the input volume's grid) is stored in a ``vtkMRMLLabelMapVolumeNode`` that the segmentation references
with the ``MedSeg.AiMask`` role. The node is hidden from editors (node selectors, the Data module's tree) and
never placed in the subject hierarchy, so it is not in the user's way. Saving the scene keeps it: the reference
is in the segmentation's MRML element, and Slicer >= 5.12 writes the voxels of hidden storable nodes itself (into
``<scene>_Private/`` beside a ``.mrml``, inside an ``.mrb``), which the bridge tests check on slicer-core 5.13 by
a commit and a reload. Slicer 5.10-5.11 do not (their Save dialog skips hidden nodes): there the mask survives
only through MedSeg's Save, :func:`MedSegLib.export.save_results`, which writes it beside the segmentation as
``<name>_ai.nii.gz``. A replaced result updates the same node; a failed
apply removes or restores it with the rest (``run.apply``'s rollback).

:func:`edit_stats` exports the (edited) segments on the source volume's grid, layer by layer, and compares each
model segment (one tagged with its label id) with the AI mask of that label through
``medseg.edits.compare_masks``; a segment the user added has no AI counterpart (AI volume 0, all added).
"""

from __future__ import annotations

import numpy as np
import slicer

from medseg.edits import EditStats, compare_masks

from .segmentation import LABEL_ID_TAG, _tag, layer_labelmaps, source_volume
from .volumes import geometry_from_volume, update_volume_from_array

__all__ = ["AI_MASK_ROLE", "EDITED_ATTRIBUTE", "ai_labels", "ai_mask_node", "edit_stats", "result_edited",
           "store_ai_mask"]

AI_MASK_ROLE = "MedSeg.AiMask"  # node reference: segmentation -> the hidden labelmap of the model's own labels
EDITED_ATTRIBUTE = "MedSeg.Edited"  # on the volume table after a re-measure: "1" when any segment differs


def ai_mask_node(segmentation_node):
    """The hidden labelmap holding the AI's original labels, or None (a result from before, or not a result)."""
    return segmentation_node.GetNodeReference(AI_MASK_ROLE)


def store_ai_mask(scene, segmentation_node, labels: np.ndarray, volume_node, name: str, added: list[str]):
    """Keep `labels` (the model's label map on `volume_node`'s grid) with the result; new node IDs go to `added`.

    The node is hidden from editors before it enters the scene, so the application's subject hierarchy logic
    never gives it an item.
    """
    dtype = np.uint8 if labels.max(initial=0) <= 255 else np.uint16
    labels = labels.astype(dtype, copy=False)
    node = ai_mask_node(segmentation_node)
    if node is None:
        node = scene.CreateNodeByClass("vtkMRMLLabelMapVolumeNode")
        node.UnRegister(None)  # the scene holds the reference
        node.SetName(scene.GenerateUniqueName(name))
        node.SetHideFromEditors(True)
        scene.AddNode(node)
        added.append(node.GetID())
        segmentation_node.SetNodeReferenceID(AI_MASK_ROLE, node.GetID())
    update_volume_from_array(node, labels, volume_node)
    return node


def ai_labels(segmentation_node, volume_node=None) -> np.ndarray | None:
    """The AI's label map on the source volume's grid, or None when the result has none (or it no longer fits)."""
    node = ai_mask_node(segmentation_node)
    if node is None or node.GetImageData() is None:
        return None
    volume_node = source_volume(segmentation_node, volume_node)
    labels = np.array(slicer.util.arrayFromVolume(node), copy=True)
    dims = volume_node.GetImageData().GetDimensions()
    return labels if labels.shape == tuple(dims[::-1]) else None


def edit_stats(segmentation_node, volume_node=None, exported=None) -> dict[str, EditStats] | None:
    """Per segment ID, the AI mask against the segment as it is now; None when the result has no AI mask.

    `exported`: the segmentation's ``layer_labelmaps`` on the source volume when the caller already has them (the
    table's re-measure), so each layer is exported once.
    """
    ai = ai_labels(segmentation_node, volume_node)
    if ai is None:
        return None
    volume_node = source_volume(segmentation_node, volume_node)
    geometry = geometry_from_volume(volume_node)
    segmentation = segmentation_node.GetSegmentation()
    out: dict[str, EditStats] = {}
    for group, specs, corrected in exported or layer_labelmaps(segmentation_node, volume_node):
        model = [s.id for sid, s in zip(group, specs, strict=True)
                 if _tag(segmentation.GetSegment(sid), LABEL_ID_TAG) == str(s.id)]
        ai_layer = np.where(np.isin(ai, model), ai, 0)
        stats = compare_masks(ai_layer, corrected, geometry, [(s.id, s.name) for s in specs])
        out.update(zip(group, stats, strict=True))
    return out


def result_edited(segmentation_node, stats: dict[str, EditStats]) -> bool:
    """Whether the user changed the result: a segment differs from the AI's, or a model segment was deleted."""
    if any(s.edited for s in stats.values()):
        return True
    ai = ai_labels(segmentation_node)
    present = {s.label_id for s in stats.values()}
    return ai is not None and bool(set(np.unique(ai).tolist()) - {0} - present)
