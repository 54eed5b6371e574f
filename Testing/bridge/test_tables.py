"""The volume table on the real Slicer core: equal to each segment's exported labelmap, refreshed after edits."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import slicer
import vtk
from bridge_support import add_volume, application_modules, hippocampus_card, synthetic_result

from MedSegLib.run import RunInputs, apply
from MedSegLib.segmentation import TABLE_ROLE, layers
from MedSegLib.tables import COLUMNS, recompute_table, table_rows, write_csv


def _segment_volume_ml(scene, segmentation, segment_id, volume) -> tuple[int, float]:
    """Voxels and mL of one segment, exported alone by Slicer's ExportSegmentsToLabelmapNode."""
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        segmentation, ids, labelmap, volume, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
    count = int(np.count_nonzero(slicer.util.arrayFromVolume(labelmap)))
    spacing = labelmap.GetSpacing()
    scene.RemoveNode(labelmap)
    return count, count * spacing[0] * spacing[1] * spacing[2] / 1000.0


def _same_row(a: dict, b: dict) -> bool:
    """Equal rows: text and None exactly, numbers to 1e-9."""
    return a.keys() == b.keys() and all(
        (x == y) if isinstance(x, str) or x is None or y is None else x == pytest.approx(y, rel=1e-9, abs=1e-12)
        for x, y in ((a[k], b[k]) for k in a))


@pytest.fixture
def applied(scene, hippocampus):
    """The hippocampus reference labels put in the scene as a result (no network needed)."""
    array, geometry, labels = hippocampus
    volume = add_volume(scene, array, geometry, "hippocampus_001")
    card = hippocampus_card()
    inputs = RunInputs(array[None], geometry, volume.GetID(), volume.GetName(), (volume.GetID(),))
    result = apply(scene, inputs, synthetic_result(array, geometry, labels, card), None)
    return volume, scene.GetNodeByID(result.segmentation_id), scene.GetNodeByID(result.table_id), labels


def test_table_volumes_equal_each_segments_exported_labelmap(scene, applied):
    volume, segmentation, table, labels = applied
    rows = table_rows(table)
    assert [r["name"] for r in rows] == ["anterior hippocampus", "posterior hippocampus"]
    for row, segment_id in zip(rows, ("Segment_1", "Segment_2"), strict=True):
        count, ml = _segment_volume_ml(scene, segmentation, segment_id, volume)
        assert row["voxel_count"] == count == int((labels == row["label_id"]).sum()) > 0
        assert row["volume_ml"] == pytest.approx(ml, rel=1e-12)
        assert row["soft_volume_ml"] == pytest.approx(ml, rel=1e-6)  # one-hot probabilities
        assert row["volume_interval_lo_ml"] < row["volume_ml"] < row["volume_interval_hi_ml"]
        assert row["surface_area_mm2"] > 0 and row["largest_diameter_mm"] > 0 and row["intensity_mean"] > 0
    assert table.GetColumnUnitLabel("volume_ml") == "mL" and table.GetColumnUnitLabel("surface_area_mm2") == "mm2"
    assert table.GetColumnTitle("largest_diameter_mm") == "Largest diameter (mm)"
    assert segmentation.GetNodeReferenceID(TABLE_ROLE) == table.GetID()
    before = table_rows(table)
    table_id = recompute_table(segmentation).GetID()  # unchanged segments: same numbers, same node
    assert table_id == table.GetID()
    assert all(_same_row(a, b) for a, b in zip(before, table_rows(table), strict=True))


def test_table_follows_a_user_edit(scene, applied, monkeypatch):
    volume, segmentation, table, labels = applied
    monkeypatch.setattr(slicer, "modules", application_modules(scene), raising=False)
    before = {r["name"]: r for r in table_rows(table)}
    # the user erases the anterior hippocampus in the upper half of the slices (a Python-console edit)
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "Segment_1", volume)
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    mask[ks[len(ks) // 2]:] = 0
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, "Segment_1", volume)
    # ... and paints a new, overlapping segment (its own layer) with the Segment Editor's logic
    lesion = np.zeros_like(labels)
    k, j, i = (int(np.median(axis)) for axis in np.nonzero(labels == 2))
    lesion[k - 5:k + 5, j - 5:j + 5, i - 5:i + 5] = 1
    assert (lesion & (labels == 2)).any()  # overlaps the posterior hippocampus
    segmentation.GetSegmentation().AddEmptySegment("lesion", "lesion", (1.0, 0.0, 0.0))
    image = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(volume)
    image.GetPointData().GetScalars().Fill(0)
    lesion_image = vtk.util.numpy_support.numpy_to_vtk(lesion.ravel(), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(lesion_image)
    assert slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, segmentation, "lesion", slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)

    assert len(layers(segmentation)) == 2  # overlapping segments live in separate layers

    after = {r["name"]: r for r in table_rows(recompute_table(segmentation))}
    assert list(after) == ["anterior hippocampus", "posterior hippocampus", "lesion"]
    kept = int(mask.sum())
    assert 0 < kept < before["anterior hippocampus"]["voxel_count"]
    assert after["anterior hippocampus"]["voxel_count"] == kept
    for name, segment_id in (("anterior hippocampus", "Segment_1"), ("posterior hippocampus", "Segment_2"),
                             ("lesion", "lesion")):
        count, ml = _segment_volume_ml(scene, segmentation, segment_id, volume)
        assert after[name]["voxel_count"] == count and after[name]["volume_ml"] == pytest.approx(ml, rel=1e-12)
    assert _same_row(after["posterior hippocampus"], before["posterior hippocampus"])
    assert after["lesion"]["voxel_count"] == 1000 and after["lesion"]["label_id"] == 3
    # what the model said is kept: soft volume and TTA interval describe the prediction, not the edit
    assert after["anterior hippocampus"]["soft_volume_ml"] == before["anterior hippocampus"]["soft_volume_ml"]
    assert after["lesion"]["soft_volume_ml"] is None


def test_csv_export(tmp_path, applied):
    _, _, table, _ = applied
    path = write_csv(table, tmp_path / "volumes.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [c.key for c in COLUMNS]
    for row, expected in zip(rows, table_rows(table), strict=True):
        assert row["name"] == expected["name"]
        assert float(row["volume_ml"]) == expected["volume_ml"]  # full precision
    assert [p.name for p in tmp_path.iterdir()] == ["volumes.csv"]
    assert math.isnan(table.GetTable().GetColumnByName("largest_diameter_mm").GetValue(0)) is False
