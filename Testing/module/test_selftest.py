"""The in-Slicer self-test's checks (MedSegLib.selftest) on the real Slicer core, with the bundled sample volume, and
the edit -> volume table chain that the panel drives (the events it observes fire when a segment is painted)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import vtk
from module_support import SAMPLE, module_sources

slicer = pytest.importorskip("slicer", reason="needs the real Slicer core: pip install slicer-core")

from medseg.io import read_image  # noqa: E402
from MedSegLib.run import ModelCache  # noqa: E402
from MedSegLib.selftest import check_run, self_test_model  # noqa: E402
from MedSegLib.tables import recompute_table, table_rows  # noqa: E402
from MedSegLib.volumes import image_data_from_array, volume_from_array  # noqa: E402


@pytest.fixture(scope="module")
def sample():
    return read_image(SAMPLE)


@pytest.fixture(scope="module")
def model(tmp_path_factory, sample):
    return self_test_model(tmp_path_factory.mktemp("selftest"), calibration=sample[0])


@pytest.fixture
def volume(scene, sample):
    return volume_from_array(scene, sample[0], sample[1], "hippocampus_001_T1w")


def test_the_self_test_checks_pass_on_the_sample(scene, volume, model):
    path, bundled = model
    report = check_run(scene, volume, path, "cpu", ModelCache(), bundled)
    assert report["segments"] == ["anterior hippocampus", "posterior hippocampus"] or bundled
    assert all(c > 0 for c in report["voxel_counts"])  # the calibrated tiny model, or a trained one
    assert report["overlays"] == sorted(["activation:posterior hippocampus", "uncertainty"]) or bundled


def test_the_self_test_notices_a_wrong_table(scene, volume, model, monkeypatch):
    import MedSegLib.selftest as selftest

    real = selftest.table_rows
    monkeypatch.setattr(selftest, "table_rows", lambda node: [dict(r, voxel_count=r["voxel_count"] + 1)
                                                               for r in real(node)])
    with pytest.raises(AssertionError, match="table voxel counts .* differ from the engine's"):
        check_run(scene, volume, model[0], "cpu", ModelCache(), model[1])


def test_painting_a_segment_fires_the_observed_events_and_the_table_follows(scene, volume, model):
    from MedSegLib.run import SegmentationRun

    applied = SegmentationRun(scene, ModelCache()).run(volume, model[0], device="cpu")
    segmentation = scene.GetNodeByID(applied.segmentation_id)
    table = scene.GetNodeByID(applied.table_id)
    observed = re.search(r"return \(seg\.(\w+), seg\.(\w+), seg\.(\w+), source\)", module_sources()).groups()
    names = [*observed, "SourceRepresentationModified"]
    events = {getattr(slicer.vtkSegmentation, name): name for name in names}
    fired = []
    for event, name in events.items():
        segmentation.AddObserver(event, lambda caller, e, name=name: fired.append(name))

    segment_id = segmentation.GetSegmentation().GetNthSegmentID(0)
    before = table_rows(table)[0]["voxel_count"]
    labels = np.zeros(volume.GetImageData().GetDimensions()[::-1], dtype=np.uint8)
    labels[5:10, 5:10, 5:10] = 1
    painted = slicer.vtkOrientedImageData()  # what a Segment Editor effect writes: a labelmap on the volume's grid
    painted.ShallowCopy(image_data_from_array(labels))
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    painted.SetImageToWorldMatrix(ijk_to_ras)
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        painted, segmentation, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)

    assert fired, "painting a segment fired none of the events the panel observes"
    assert set(fired) <= set(names)
    recompute_table(segmentation)
    rows = table_rows(table)
    assert rows[0]["voxel_count"] == 125 != before
    assert rows[0]["volume_ml"] == pytest.approx(125 * float(np.prod(volume.GetSpacing())) / 1000)
