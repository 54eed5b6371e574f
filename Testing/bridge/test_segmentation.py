"""Label maps <-> segmentation nodes on the real Slicer core: segments land voxel-exactly on the input volume."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk
from bridge_support import add_volume

from medseg.card import Label
from medseg.geometry import Geometry
from medseg.io import read_segmentation
from MedSegLib.segmentation import (
    LABEL_ID_TAG,
    build_segments,
    labelmap_from_segmentation,
    layers,
    place_in_hierarchy,
    segment_labels,
    set_segments,
)
from MedSegLib.tables import measure_segmentation

HIPPOCAMPUS = (
    Label(0, "background", (0, 0, 0)),
    Label(1, "anterior hippocampus", (220, 180, 60),
          {"category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
           "type": {"scheme": "SCT", "code": "5366008", "meaning": "Hippocampus"}}),
    Label(2, "posterior hippocampus", (60, 140, 220)),
)


def _export_with_slicer(scene, segmentation, volume, segment_ids) -> np.ndarray:
    """What the brief names: ExportSegmentsToLabelmapNode through a temporary labelmap node."""
    ids = vtk.vtkStringArray()
    for sid in segment_ids:
        ids.InsertNextValue(sid)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "export")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        segmentation, ids, labelmap, volume, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
    out = slicer.util.arrayFromVolume(labelmap).copy()
    scene.RemoveNode(labelmap)
    return out


def _segmentation(scene, labels, specs, volume):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
    node.CreateDefaultDisplayNodes()
    set_segments(node, build_segments(labels, specs, volume), volume)
    return node


@pytest.fixture(params=["hippocampus", "spinal_cord", "ctchest_oblique"])
def labelled(request, hippocampus, spinal_cord, ctchest):
    """(array, geometry, labels, label specs) from real data; the last is oblique and anisotropic."""
    if request.param == "hippocampus":
        return (*hippocampus, HIPPOCAMPUS)
    if request.param == "spinal_cord":
        array, geometry, mask, _ = spinal_cord
        return array, geometry, mask, (Label(0, "background"), Label(1, "spinal cord", (250, 250, 0)))
    labels, _, specs = read_segmentation(ctchest[2])
    geometry = Geometry(ctchest[1].spacing, spinal_cord[1].origin, spinal_cord[1].direction)
    return ctchest[0], geometry, labels, (Label(0, "background"), *specs)


def test_segments_land_voxel_exactly_on_the_input(scene, labelled):
    array, geometry, labels, specs = labelled
    volume = add_volume(scene, array, geometry, "input")
    node = _segmentation(scene, labels, specs, volume)
    segmentation = node.GetSegmentation()
    foreground = [s for s in specs if s.id != 0]
    ids = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    assert ids == [f"Segment_{s.id}" for s in foreground]  # as medseg.io.write_segmentation names them
    assert len(layers(node)) == 1  # one shared layer, as Slicer's own import makes
    back = labelmap_from_segmentation(node, volume, ids, [s.id for s in foreground])
    assert back.shape == labels.shape and np.array_equal(back, labels)
    by_slicer = _export_with_slicer(scene, node, volume, ids)  # values 1..n in segment order
    assert np.array_equal(np.take([0, *(s.id for s in foreground)], by_slicer), labels)
    for spec, sid in zip(foreground, ids, strict=True):
        segment = segmentation.GetSegment(sid)
        assert segment.GetName() == spec.name and segment.GetLabelValue() == spec.id
        assert np.allclose(segment.GetColor(), np.array(spec.color) / 255)


def test_reference_geometry_hierarchy_and_parent_transform(scene, spinal_cord):
    array, geometry, mask, _ = spinal_cord
    volume = add_volume(scene, array, geometry, "T2w", study="MR study")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    to_parent = np.eye(4)
    to_parent[:3, 3] = [10.0, 0.0, -4.0]
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(to_parent))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    specs = (Label(0, "background"), Label(1, "spinal cord", (250, 250, 0)))
    node = _segmentation(scene, mask, specs, volume)
    place_in_hierarchy(scene, node, volume)

    assert node.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()) == volume.GetID()
    assert node.GetTransformNodeID() == transform.GetID()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    assert sh.GetItemName(sh.GetItemParent(sh.GetItemByDataNode(node))) == "MR study"
    assert np.array_equal(labelmap_from_segmentation(node, volume), mask)
    # a second volume, not transformed, on the same world grid: the segments land on it too (through the transform)
    world = Geometry.from_ijk_to_ras(to_parent @ geometry.ijk_to_ras())
    plain = add_volume(scene, array, world, "T2w hardened")
    assert np.array_equal(labelmap_from_segmentation(node, plain), mask)


def test_terminology_in_slicers_format_and_empty_labels(scene, ctchest):
    array, geometry, path = ctchest
    volume = add_volume(scene, array, geometry, "CTChest")
    loaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Slicer's own")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(loaded)
    pairs = segment_labels(loaded)
    specs = [Label(0, "background"), *(label for _, label in pairs)]
    assert specs[5].terminology["typeModifier"]["meaning"] == "Right"  # right lung
    labels = np.zeros(array.shape, np.uint8)
    labels[10:12, 40:50, 40:50] = 3  # only one label present: the others become empty segments
    node = _segmentation(scene, labels, specs, volume)
    made = node.GetSegmentation()
    for sid, label in pairs:
        original = loaded.GetSegmentation().GetSegment(sid)
        ours = made.GetSegment(f"Segment_{label.id}")
        assert ours.GetTag("TerminologyEntry", tag := vtk.reference("")) and original.GetTag(
            "TerminologyEntry", theirs := vtk.reference(""))
        # the exact codes Slicer wrote, in our context (the DICOM master list; CTChest names Slicer's General Anatomy
        # list, whose codes are the same SNOMED CT codes)
        assert str(tag).partition("~")[2] == str(theirs).partition("~")[2]
        assert str(tag).partition("~")[0] == "Segmentation category and type - DICOM master list"
    assert made.GetNumberOfSegments() == 7 and len(layers(node)) == 1
    assert np.array_equal(labelmap_from_segmentation(node, volume, [f"Segment_{i}" for i in range(1, 8)],
                                                     range(1, 8)), labels)


def test_a_slicer_segmentation_file_exports_onto_the_volume(scene, ctchest):
    """Slicer's own CTChest .seg.nrrd (read by Slicer's storage node) -> the same labels as medseg.io reads."""
    array, geometry, path = ctchest
    volume = add_volume(scene, array, geometry, "CTChest")
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "CTChest segmentation")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    expected, file_geometry, _ = read_segmentation(path)
    assert np.allclose(file_geometry.matrix, geometry.matrix, atol=1e-6)
    pairs = segment_labels(node)
    assert [label.id for _, label in pairs] == list(range(1, 8))  # no MedSeg tags: ids follow the order
    merged = labelmap_from_segmentation(node, volume, [sid for sid, _ in pairs], [label.id for _, label in pairs])
    assert np.array_equal(merged, expected)
    measured = measure_segmentation(node, volume)  # the volume table of a segmentation made in Slicer
    assert [m.name for m in measured] == [label.name for _, label in pairs]
    for m in measured:
        count = int((expected == m.label_id).sum())
        assert m.voxel_count == count and m.volume_ml == pytest.approx(count * geometry.voxel_volume_ml, rel=1e-12)


def test_label_ids_from_tags_and_user_segments(scene, hippocampus):
    array, geometry, labels = hippocampus
    volume = add_volume(scene, array, geometry, "hippo")
    node = _segmentation(scene, labels, HIPPOCAMPUS, volume)
    segmentation = node.GetSegmentation()
    segmentation.AddEmptySegment("user", "lesion", (1.0, 0.0, 0.0))  # what Segment Editor's "Add" does
    segmentation.SetSegmentIndex("Segment_2", 0)  # the user reorders
    pairs = segment_labels(node)
    assert [(sid, label.id, label.name) for sid, label in pairs] == [
        ("Segment_2", 2, "posterior hippocampus"), ("Segment_1", 1, "anterior hippocampus"), ("user", 3, "lesion")]
    assert pairs[1][1].terminology["type"]["code"] == "5366008"
    assert segmentation.GetSegment("Segment_1").HasTag(LABEL_ID_TAG)


def test_build_segments_refuses_a_label_map_on_another_grid(scene, hippocampus):
    array, geometry, labels = hippocampus
    volume = add_volume(scene, array, geometry, "hippo")
    with pytest.raises(ValueError, match=r"not on the grid of volume 'hippo'"):
        build_segments(labels[:, :10], HIPPOCAMPUS, volume)


def test_an_all_background_result_gives_empty_segments(scene, hippocampus):
    array, geometry, _ = hippocampus
    volume = add_volume(scene, array, geometry, "hippo")
    node = _segmentation(scene, np.zeros(array.shape, np.uint8), HIPPOCAMPUS, volume)
    assert node.GetSegmentation().GetNumberOfSegments() == 2
    merged = labelmap_from_segmentation(node, volume)
    assert merged.shape == array.shape and merged.max() == 0
