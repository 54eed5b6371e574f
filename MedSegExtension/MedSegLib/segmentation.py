"""Label maps <-> segmentation nodes, voxel-exactly on the input volume's grid.

A result becomes one segment per foreground label of the model card (name, color, terminology), all in one shared
binary-labelmap layer on the input volume's own voxel grid (its IJK-to-RAS matrix; the segmentation node is put
under the volume's parent transform), exactly as ``vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode``
builds them from an oriented image: each segment is a ``vtkSegment`` whose binary labelmap is the shared image and
whose label value is its label id. The segments are built off-scene first (plain VTK objects, no MRML events), so
that the scene is only touched when everything is ready (see ``run.apply``); no temporary labelmap node ever appears
in the scene.

Back to arrays: :func:`labelmap_from_segmentation` merges segments on the reference volume's grid with
``vtkSlicerSegmentationsModuleLogic.GenerateMergedLabelmapInReferenceGeometry``, the function that
``ExportSegmentsToLabelmapNode`` runs before it copies the result into a labelmap node (again: no temporary node).

Each model segment carries tags that travel with the segmentation (also in ``.seg.nrrd`` files): its label id, and
the model's soft volume and test-time-augmentation interval, which describe the prediction and stay valid after the
user edits the segment.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from medseg.card import Label
from medseg.io import terminology_from_tags, terminology_string
from medseg.measure import LabelMeasurement
from medseg.text import printable

from .i18n import tr as _
from .volumes import image_data_from_array

__all__ = [
    "LABEL_ID_TAG",
    "MODEL_ATTRIBUTE",
    "OVERLAY_KIND_ATTRIBUTE",
    "OVERLAY_ROLE",
    "SOURCE_VOLUME_ROLE",
    "TABLE_ROLE",
    "build_segments",
    "find_result",
    "labelmap_from_segmentation",
    "layer_labelmaps",
    "overlay_nodes",
    "place_in_hierarchy",
    "segment_labels",
    "set_segments",
    "source_volume",
]

log = logging.getLogger(__name__)

LABEL_ID_TAG = "MedSeg.LabelId"
SOFT_VOLUME_TAG = "MedSeg.SoftVolumeMl"
INTERVAL_TAG = "MedSeg.VolumeIntervalMl"
MODEL_ATTRIBUTE = "MedSeg.Model"
SOURCE_VOLUME_ROLE = "MedSeg.SourceVolume"  # node reference: result -> the input volume
TABLE_ROLE = "MedSeg.Table"  # node reference: segmentation -> its volume table
OVERLAY_ROLE = "MedSeg.Overlay"  # node references: segmentation -> its overlay volumes
OVERLAY_KIND_ATTRIBUTE = "MedSeg.OverlayKind"  # on overlay volumes: "uncertainty", "activation:<label>", ...
TERMINOLOGY_TAG = "TerminologyEntry"  # vtkSegment::GetTerminologyEntryTagName(), stable since Slicer 4.10
BINARY_LABELMAP = "Binary labelmap"  # vtkSegmentationConverter::GetSegmentationBinaryLabelmapRepresentationName()


def segment_id(label_id: int) -> str:
    """Segment IDs as ``medseg.io.write_segmentation`` writes them, so files and nodes agree."""
    return f"Segment_{label_id}"


def _oriented_labelmap(labels: np.ndarray, ijk_to_ras: vtk.vtkMatrix4x4) -> slicer.vtkOrientedImageData:
    """The shared layer: `labels` cropped to its non-zero voxels (as Slicer's import does), indices kept."""
    dtype = np.uint8 if labels.max(initial=0) <= 255 else np.uint16
    nonzero = [np.flatnonzero(np.any(labels, axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    image = slicer.vtkOrientedImageData()
    if any(len(n) == 0 for n in nonzero):
        image.SetExtent(0, -1, 0, -1, 0, -1)
        image.AllocateScalars(numpy_support.get_vtk_array_type(np.dtype(dtype)), 1)
    else:
        box = tuple(slice(int(n[0]), int(n[-1]) + 1) for n in nonzero)  # k, j, i
        crop = image_data_from_array(labels[box].astype(dtype, copy=False))
        image.ShallowCopy(crop)
        image.SetExtent(box[2].start, box[2].stop - 1, box[1].start, box[1].stop - 1, box[0].start, box[0].stop - 1)
    image.SetGeometryFromImageToWorldMatrix(ijk_to_ras)
    return image


def build_segments(labels: np.ndarray, specs: Sequence[Label], reference_volume,
                   measurements: Sequence[LabelMeasurement] = ()) -> list[tuple[str, slicer.vtkSegment]]:
    """One ``vtkSegment`` per foreground label, sharing one labelmap on the reference volume's voxel grid.

    Args:
        labels: integer label map ``(Z, Y, X)`` on the reference volume's grid.
        specs: the model card's labels (id 0, the background, gets no segment).
        reference_volume: the input volume node (its IJK-to-RAS matrix is used).
        measurements: the engine's measurements; their soft volume and TTA interval become segment tags.

    Returns:
        ``[(segment_id, segment)]`` in label order, not in any segmentation yet (see :func:`set_segments`).
    """
    dims = reference_volume.GetImageData().GetDimensions()
    if tuple(labels.shape[::-1]) != tuple(dims):
        raise ValueError(_("the label map {shape} (i, j, k) is not on the grid of volume {volume!r} {dims}; the "
                           "volume changed during the run: run again").format(
            shape=labels.shape[::-1], volume=reference_volume.GetName(), dims=tuple(dims)))
    if labels.dtype.kind not in "iu" or (labels.size and (labels.min() < 0 or labels.max() > 65535)):
        raise ValueError(f"labels must be integers 0..65535, got {labels.dtype}")  # no tr: a caller's bug
    ijk_to_ras = vtk.vtkMatrix4x4()
    reference_volume.GetIJKToRASMatrix(ijk_to_ras)
    shared = _oriented_labelmap(labels, ijk_to_ras)
    by_id = {m.label_id: m for m in measurements}
    out = []
    for spec in specs:
        if spec.id == 0:
            continue
        segment = slicer.vtkSegment()
        segment.SetName(printable(spec.name))  # card text: no control characters in the scene or a file header
        segment.SetColor(*(c / 255.0 for c in spec.color))
        segment.SetNameAutoGenerated(False)
        segment.SetColorAutoGenerated(False)
        segment.SetLabelValue(int(spec.id))
        segment.AddRepresentation(BINARY_LABELMAP, shared)
        segment.SetTag(LABEL_ID_TAG, str(spec.id))
        if spec.terminology:
            segment.SetTag(TERMINOLOGY_TAG, terminology_string(spec.terminology))
        _tag_model_values(segment, by_id.get(spec.id))
        out.append((segment_id(spec.id), segment))
    return out


def _tag_model_values(segment, measurement: LabelMeasurement | None) -> None:
    if measurement is None:
        return
    if measurement.soft_volume_ml is not None:
        segment.SetTag(SOFT_VOLUME_TAG, repr(float(measurement.soft_volume_ml)))
    if measurement.volume_interval_ml is not None:
        segment.SetTag(INTERVAL_TAG, " ".join(repr(float(v)) for v in measurement.volume_interval_ml))


def set_segments(segmentation_node, segments: list[tuple[str, slicer.vtkSegment]], reference_volume) -> None:
    """Replace every segment of `segmentation_node` with `segments`; its reference geometry becomes the volume's.

    The node is put under the volume's parent transform, so segments and voxels coincide in every view.
    """
    segmentation = segmentation_node.GetSegmentation()
    was_modifying = segmentation_node.StartModify()
    try:
        segmentation.RemoveAllSegments()
        if hasattr(segmentation, "SetSourceRepresentationName"):  # Slicer >= 5.4; "master" before
            segmentation.SetSourceRepresentationName(BINARY_LABELMAP)
        else:
            segmentation.SetMasterRepresentationName(BINARY_LABELMAP)
        segmentation_node.SetAndObserveTransformNodeID(reference_volume.GetTransformNodeID())
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        for sid, segment in segments:
            if not segmentation.AddSegment(segment, sid):
                raise RuntimeError(_("could not add segment {segment!r} to {segmentation!r}").format(
                    segment=segment.GetName(), segmentation=segmentation_node.GetName()))
    finally:
        segmentation_node.EndModify(was_modifying)


# ---------------------------------------------------------------------------------------------- back to arrays


def _segment_ids(segmentation_node) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]


def segment_labels(segmentation_node) -> list[tuple[str, Label]]:
    """``[(segment_id, Label)]`` in segment order: the model's label id from the segment's tag, else the next free id
    (segments the user added); name, color 0-255 and terminology from the segment."""
    segmentation = segmentation_node.GetSegmentation()
    ids = _segment_ids(segmentation_node)
    tagged: dict[str, int] = {}
    for sid in ids:
        text = _tag(segmentation.GetSegment(sid), LABEL_ID_TAG)
        if text is not None and text.isdigit() and int(text) not in tagged.values() and 0 < int(text) <= 65535:
            tagged[sid] = int(text)
    next_id = max(tagged.values(), default=0) + 1
    out = []
    for sid in ids:
        segment = segmentation.GetSegment(sid)
        if sid not in tagged:
            tagged[sid], next_id = next_id, next_id + 1
        color = tuple(round(c * 255) for c in segment.GetColor())
        terminology = terminology_from_tags(f"{TERMINOLOGY_TAG}:{_tag(segment, TERMINOLOGY_TAG) or ''}")
        out.append((sid, Label(tagged[sid], segment.GetName(), color, terminology)))
    return out


def _tag(segment, key: str) -> str | None:
    """A segment tag's value, or None (vtkSegment::GetTag fills a string by reference in C++)."""
    if not segment.HasTag(key):
        return None
    value = vtk.reference("")
    return str(value) if segment.GetTag(key, value) else None


def model_values(segment) -> tuple[float | None, tuple[float, float] | None]:
    """The model's soft volume and TTA interval (mL) stored on a segment, or None."""
    soft = _tag(segment, SOFT_VOLUME_TAG)
    interval = _tag(segment, INTERVAL_TAG)
    try:
        soft_value = float(soft) if soft else None
        lo_hi = tuple(float(v) for v in interval.split()) if interval else None
    except ValueError:
        return None, None
    return soft_value, (lo_hi if lo_hi is not None and len(lo_hi) == 2 else None)


def labelmap_from_segmentation(segmentation_node, reference_volume, segment_ids: Sequence[str] | None = None,
                               label_values: Sequence[int] | None = None) -> np.ndarray:
    """Segments -> an integer label map ``(Z, Y, X)`` on the reference volume's whole voxel grid.

    Args:
        segmentation_node: the segmentation (edited or not, under any transform).
        reference_volume: the volume whose grid the map is on (the input volume).
        segment_ids: segments to merge, in painting order (None: all, in the segmentation's order).
        label_values: the value of each segment in the map (None: 1, 2, ... in `segment_ids` order).

    Overlapping segments (several layers) are merged in order: a later segment wins where they overlap; use one
    call per layer (``vtkSegmentation.GetSegmentIDsForLayer``) to measure each exactly.
    """
    ids = list(segment_ids) if segment_ids is not None else _segment_ids(segmentation_node)
    values = list(label_values) if label_values is not None else list(range(1, len(ids) + 1))
    dims = reference_volume.GetImageData().GetDimensions()
    dtype = np.uint8 if max(values, default=0) <= 255 else np.uint16
    if not ids:
        return np.zeros(dims[::-1], dtype=dtype)
    if not segmentation_node.GetSegmentation().CreateRepresentation(BINARY_LABELMAP):
        raise ValueError(_("segmentation {segmentation!r} cannot be converted to a binary labelmap").format(
            segmentation=segmentation_node.GetName()))
    id_array, value_array = vtk.vtkStringArray(), vtk.vtkIntArray()
    for sid, value in zip(ids, values, strict=True):
        id_array.InsertNextValue(sid)
        value_array.InsertNextValue(int(value))
    merged = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GenerateMergedLabelmapInReferenceGeometry(
        segmentation_node, reference_volume, id_array, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, merged,
        value_array)
    extent = merged.GetExtent()
    if tuple(extent) != (0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1):
        raise RuntimeError(  # no tr: Slicer's export broke its contract, for developers
            f"merged labelmap of {segmentation_node.GetName()!r} has extent {extent}, not the grid of "
            f"{reference_volume.GetName()!r} {dims}")
    array = numpy_support.vtk_to_numpy(merged.GetPointData().GetScalars()).reshape(dims[::-1])
    return array.astype(dtype, copy=True)


def layers(segmentation_node) -> list[list[str]]:
    """Segment IDs grouped by binary-labelmap layer (segments in one layer never overlap), in segment order."""
    segmentation = segmentation_node.GetSegmentation()
    groups: dict[int, list[str]] = {}
    for sid in _segment_ids(segmentation_node):
        groups.setdefault(segmentation.GetLayerIndex(sid), []).append(sid)
    return list(groups.values())


def layer_labelmaps(segmentation_node, volume_node) -> list[tuple[list[str], list[Label], np.ndarray]]:
    """Each binary-labelmap layer exported once on `volume_node`'s grid: ``(segment IDs, their Labels, label map)``,
    the segments written with their label ids (``segment_labels``), so overlapping segments stay whole."""
    labels = dict(segment_labels(segmentation_node))
    out = []
    for group in layers(segmentation_node):
        specs = [labels[sid] for sid in group]
        out.append((group, specs, labelmap_from_segmentation(segmentation_node, volume_node, group,
                                                             [s.id for s in specs])))
    return out


# ---------------------------------------------------------------------------------------------- scene bookkeeping


def find_result(scene, volume_node, model_name: str):
    """The latest segmentation node that `model_name` made from `volume_node`, or None."""
    found = None
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
        node = scene.GetNthNodeByClass(n, "vtkMRMLSegmentationNode")
        if (node.GetAttribute(MODEL_ATTRIBUTE) == model_name
                and node.GetNodeReferenceID(SOURCE_VOLUME_ROLE) == volume_node.GetID()):
            found = node
    return found


def overlay_nodes(segmentation_node) -> dict:
    """``{kind: overlay volume node}`` of a result ("activation:<label>", "probability:<label>", "uncertainty",
    "tta_variance"), for the panel's overlay picker; overlays the user deleted are skipped."""
    out = {}
    for n in range(segmentation_node.GetNumberOfNodeReferences(OVERLAY_ROLE)):
        node = segmentation_node.GetNthNodeReference(OVERLAY_ROLE, n)
        if node is not None:
            out[node.GetAttribute(OVERLAY_KIND_ATTRIBUTE)] = node
    return out


def source_volume(segmentation_node, volume_node=None):
    """The volume a result was made from (or `volume_node` when given); ValueError if unknown."""
    if volume_node is not None:
        return volume_node
    node = segmentation_node.GetNodeReference(SOURCE_VOLUME_ROLE) or segmentation_node.GetNodeReference(
        segmentation_node.GetReferenceImageGeometryReferenceRole())
    if node is None:
        raise ValueError(_("segmentation {segmentation!r} has no source volume; pick the volume it was made on")
                         .format(segmentation=segmentation_node.GetName()))
    return node


def place_in_hierarchy(scene, node, volume_node) -> None:
    """Put `node` in the subject hierarchy beside `volume_node` (under its study, or at the top)."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if sh is None:
        return
    volume_item = sh.GetItemByDataNode(volume_node)
    parent = sh.GetItemParent(volume_item) if volume_item else sh.GetSceneItemID()
    item = sh.GetItemByDataNode(node)
    if item:
        sh.SetItemParent(item, parent)
    else:
        sh.CreateItem(parent, node)
