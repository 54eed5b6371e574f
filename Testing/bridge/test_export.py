"""Save on the real Slicer core: files read back equal to the segments, all or nothing."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import slicer
from bridge_support import add_volume, application_modules, hippocampus_card, synthetic_result

from medseg.card import Label, ModelCard
from medseg.io import read_image, read_segmentation
from MedSegLib.export import save_results
from MedSegLib.run import RunInputs, apply
from MedSegLib.segmentation import labelmap_from_segmentation


def _apply(scene, array, geometry, labels, card, name="input"):
    volume = add_volume(scene, array, geometry, name)
    inputs = RunInputs(array[None], geometry, volume.GetID(), volume.GetName(), (volume.GetID(),))
    result = apply(scene, inputs, synthetic_result(array, geometry, labels, card))
    return volume, scene.GetNodeByID(result.segmentation_id)


def test_saved_files_read_back_equal_to_the_labels(scene, hippocampus, tmp_path):
    array, geometry, labels = hippocampus
    _, segmentation = _apply(scene, array, geometry, labels, hippocampus_card(), "hippocampus_001")
    files = save_results(tmp_path / "out", segmentation)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "hippocampus_001 tiny-hippocampus.csv", "hippocampus_001 tiny-hippocampus.nii.gz",
        "hippocampus_001 tiny-hippocampus.seg.nrrd",
        "hippocampus_001 tiny-hippocampus_ai.nii.gz"]  # and no temporary file left behind
    ai, ai_geometry = read_image(files["ai.nii.gz"])  # the AI's original labels (unedited here: the same)
    assert np.array_equal(ai, labels) and np.allclose(ai_geometry.matrix, geometry.matrix, atol=1e-9)
    seg_labels, seg_geometry, segments = read_segmentation(files["seg.nrrd"])
    assert np.array_equal(seg_labels, labels)
    assert np.allclose(seg_geometry.matrix, geometry.matrix, atol=1e-9)
    card = hippocampus_card()
    assert [(s.id, s.name, s.color) for s in segments] == [(s.id, s.name, s.color) for s in card.foreground_labels]
    assert segments[0].terminology == card.labels[1].terminology
    nifti, nifti_geometry = read_image(files["nii.gz"])
    assert np.array_equal(nifti, labels) and np.allclose(nifti_geometry.matrix, geometry.matrix, atol=1e-9)
    with files["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["voxel_count"]) for r in rows] == [int((labels == i).sum()) for i in (1, 2)]


def test_save_after_an_edit_on_a_transformed_oblique_volume(scene, spinal_cord, tmp_path, monkeypatch):
    array, geometry, mask, _ = spinal_cord
    card = ModelCard.from_dict({**hippocampus_card().to_dict(), "name": "cord", "labels": [
        {"id": 0, "name": "background", "color": [0, 0, 0]}, {"id": 1, "name": "spinal cord", "color": [250, 250, 0]},
        {"id": 2, "name": "csf", "color": [0, 0, 250]}]})
    volume, segmentation = _apply(scene, array, geometry, mask, card, "T2w")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    matrix = np.eye(4)
    matrix[:3, 3] = [0.0, 15.0, 0.0]
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    segmentation.SetAndObserveTransformNodeID(transform.GetID())
    monkeypatch.setattr(slicer, "modules", application_modules(scene), raising=False)
    edited = mask.copy()
    edited[8:] = 0  # the user erases the upper slices
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited, segmentation, "Segment_1", volume)

    files = save_results(tmp_path, segmentation, base_name="cord edited", formats=("seg.nrrd", "nii.gz"))
    labels, file_geometry, segments = read_segmentation(files["seg.nrrd"])
    assert np.array_equal(labels, edited) and 0 < edited.sum() < mask.sum()
    # the volume's own coordinates (as Slicer saves the volume), so the file overlays sub-unf01_T2w.nii.gz
    assert np.allclose(file_geometry.matrix, geometry.matrix, atol=1e-6)
    assert [s.name for s in segments] == ["spinal cord", "csf"]
    assert np.array_equal(read_image(files["nii.gz"])[0], edited)


def test_overlapping_segments_are_saved_with_slicers_writer(scene, hippocampus, tmp_path):
    array, geometry, labels = hippocampus
    volume, segmentation = _apply(scene, array, geometry, labels, hippocampus_card())
    everything = (labels > 0).astype(np.uint8)  # a new segment over both others: a second layer
    segmentation.GetSegmentation().AddEmptySegment("whole", "whole hippocampus", (0.0, 1.0, 0.0))
    image = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(volume)
    from vtk.util import numpy_support

    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(everything.ravel(), deep=True))
    assert slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(image, segmentation, "whole")
    files = save_results(tmp_path, segmentation, formats=("seg.nrrd", "nii.gz"))

    reloaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reloaded")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(files["seg.nrrd"]))
    assert storage.ReadData(reloaded)
    for segment_id, expected in (("Segment_1", labels == 1), ("Segment_2", labels == 2), ("whole", everything)):
        assert np.array_equal(labelmap_from_segmentation(reloaded, volume, [segment_id]), expected)
    assert reloaded.GetSegmentation().GetNumberOfLayers() == 2
    merged, _ = read_image(files["nii.gz"])
    assert np.array_equal(merged, np.where(everything, 3, labels))  # later segments win in one label map


def test_save_is_all_or_nothing(scene, hippocampus, tmp_path, monkeypatch):
    array, geometry, labels = hippocampus
    _, segmentation = _apply(scene, array, geometry, labels, hippocampus_card(), "case")
    existing = tmp_path / "case tiny-hippocampus.csv"
    existing.write_text("an earlier table\n")
    with pytest.raises(FileExistsError, match="already exist"):
        save_results(tmp_path, segmentation, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing.name]

    def disk_full(path, *args, **kwargs):
        path.write_bytes(b"half a file")
        raise OSError(f"cannot write {path}: no space left on device")

    monkeypatch.setattr("MedSegLib.export.write_image", disk_full)
    with pytest.raises(OSError, match="no space left"):
        save_results(tmp_path, segmentation)
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing.name]  # no .seg.nrrd, no temporary files
    assert existing.read_text() == "an earlier table\n"
    with pytest.raises(ValueError, match="unknown export format"):
        save_results(tmp_path, segmentation, formats=("stl",))


def test_label_ids_of_user_segments_in_the_label_map(scene, hippocampus, tmp_path):
    array, geometry, labels = hippocampus
    _, segmentation = _apply(scene, array, geometry, labels, hippocampus_card())
    segmentation.GetSegmentation().RemoveSegment("Segment_1")
    segmentation.GetSegmentation().AddEmptySegment("new", "new", (1.0, 0.0, 0.0))
    files = save_results(tmp_path, segmentation, formats=("seg.nrrd",))
    saved, _, segments = read_segmentation(files["seg.nrrd"])
    assert [(s.id, s.name) for s in segments] == [(2, "posterior hippocampus"), (3, "new")]
    assert np.array_equal(saved, np.where(labels == 2, 2, 0))
    assert isinstance(segments[0], Label)


def test_hostile_card_text_never_reaches_a_path_a_segment_name_or_a_file_header(scene, hippocampus, tmp_path):
    array, geometry, labels = hippocampus
    card = ModelCard.from_dict({**hippocampus_card().to_dict(), "name": "../../" + "x" * 250, "labels": [
        {"id": 0, "name": "background", "color": [0, 0, 0]},
        {"id": 1, "name": "front\nSegment9_Name:=injected\x1b[2J", "color": [250, 250, 0]},
        {"id": 2, "name": "back\u202e", "color": [0, 0, 250]}]})
    _, segmentation = _apply(scene, array, geometry, labels, card, "..")
    files = save_results(tmp_path / "out", segmentation)
    assert all(p.parent == tmp_path / "out" and len(p.name) < 140 for p in files.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing written outside the folder
    names = [segmentation.GetSegmentation().GetNthSegment(i).GetName() for i in range(2)]
    assert names == ["front Segment9_Name:=injected", "back"]
    _, _, segments = read_segmentation(files["seg.nrrd"])
    assert [s.name for s in segments] == names  # one segment per label: no field was injected into the header
