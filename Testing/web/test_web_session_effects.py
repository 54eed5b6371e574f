"""The page's Threshold, Draw and Logical operators (trame-slicer's segment editor effects) on a real result: a
`MedSegWebApp` on a trame server that is never started (no browser; its axial slice view exists and renders off
screen), the hippocampus sample segmented by the bundled model. Each edit is checked voxel for voxel against numpy and
undone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trame_slicer", reason="needs trame-slicer (the web extra: see scripts/setup.sh)")

from MedSegWeb.security import ServeOptions

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "Samples" / "hippocampus_001_T1w.nii.gz"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from trame.app import get_server

    from MedSegWeb.app import MedSegWebApp

    root = tmp_path_factory.mktemp("root")
    shutil.copy(SAMPLE, root / SAMPLE.name)
    app = MedSegWebApp(ServeOptions(data_root=root), server=get_server("medseg-test-effects", client_type="vue3"))
    session = app.session
    session.open_path(SAMPLE.name)
    session.start({"modelName": "hippocampus-unet3d", "device": "cpu", "uncertainty": False, "probabilities": False})
    assert session.task.wait(120)
    assert session.poll().applied, session.status.error
    app._refresh_result()
    yield app
    session.close()


def _mask(app, segment_id: str) -> np.ndarray:
    """The segment as a boolean (k, j, i) array on the volume's grid."""
    return app.slicer_app.segmentation_editor.get_segment_labelmap(segment_id, as_numpy_array=True).astype(bool)


def _intensities(app) -> np.ndarray:
    from vtkmodules.util.numpy_support import vtk_to_numpy

    image = app.session.volume.GetImageData()
    return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(image.GetDimensions()[::-1])


def _segments(app) -> tuple[str, str]:
    first, second = (item["value"] for item in app.session.segment_items())
    return first, second


def test_threshold_makes_the_segment_the_voxels_in_range_and_undo_restores(app):
    session, s = app.session, app.state
    first, second = _segments(app)
    volume = _intensities(app)
    assert (s.threshold_min, s.threshold_max) == tuple(float(f"{v:.4g}") for v in np.percentile(volume, (1, 99)))
    before_first, before_second = _mask(app, first), _mask(app, second)
    low, high = (float(v) for v in np.percentile(volume, (50, 80)))
    session.set_effect("threshold", None, "erase_inside", (str(low), str(high)))  # the preview in the slice view
    effect = app.slicer_app.segmentation_editor.active_effect
    assert effect.get_threshold_min_max_values() == (low, high) and effect.get_param_proxy().is_visible
    s.segment_id, s.threshold_min, s.threshold_max = first, str(low), str(high)  # as typed in the page
    app.threshold()
    assert not s.message_error, s.message
    in_range = (volume >= low) & (volume <= high)
    assert 0 < in_range.sum() < in_range.size
    assert np.array_equal(_mask(app, first), in_range)  # editable area "everywhere": exactly numpy's voxels
    assert np.array_equal(_mask(app, second), before_second & ~in_range)  # "overwrite all": taken from the other
    assert [row["voxel_count"] for row in session.remeasure()] == [in_range.sum(), (before_second & ~in_range).sum()]
    session.undo()
    assert np.array_equal(_mask(app, first), before_first) and np.array_equal(_mask(app, second), before_second)
    assert session.remeasure()[0]["voxel_count"] == before_first.sum()
    with pytest.raises(ValueError, match="threshold minimum: 'dark' is not a number"):
        session.threshold(first, "dark", high)
    with pytest.raises(ValueError, match="minimum is above the maximum; swap them"):
        session.threshold(first, high, low)
    s.threshold_max = "nan"
    app.threshold()
    assert s.message_error and "threshold maximum: 'nan' is not a finite number" in s.message
    assert np.array_equal(_mask(app, first), before_first)
    session.set_effect("none")


def test_draw_fills_the_polygon_on_its_slice_and_undo_restores(app):
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    session = app.session
    first, second = _segments(app)
    before_first, before_second = _mask(app, first), _mask(app, second)
    session.set_segment(first)
    session.set_effect("draw")
    effect = app.slicer_app.segmentation_editor.active_effect
    assert type(effect).__name__ == "SegmentationEffectDraw"
    view = app.slicer_app.view_manager.get_slice_views()[0]  # the page's axial view
    slice_node = view.get_view_node()
    app.slicer_app.display_manager.reset_views()
    ijk_to_ras = vtkMatrix4x4()
    session.volume.GetIJKToRASMatrix(ijk_to_ras)
    spacing = session.volume.GetSpacing()
    dims = session.volume.GetImageData().GetDimensions()
    centre = [d // 2 for d in dims]
    assert [ijk_to_ras.GetElement(r, c) != 0 for r in range(3) for c in range(3)] == [
        r == c for r in range(3) for c in range(3)]  # an axis-aligned grid: the square below is a voxel square
    centre_ras = ijk_to_ras.MultiplyPoint([*centre, 1])
    slice_node.SetSliceOffset(centre_ras[2])  # the axial slice through the volume's centre
    ras_to_xy = vtkMatrix4x4()
    vtkMatrix4x4.Invert(slice_node.GetXYToRAS(), ras_to_xy)
    half = 5  # voxels each side of the centre; the polygon's corners lie between voxel centres
    points = vtkPoints()
    for di, dj in ((-1, -1), (1, -1), (1, 1), (-1, 1)):  # a square drawn on the view (display coordinates)
        ras = [centre_ras[0] + di * (half + 0.5) * spacing[0], centre_ras[1] + dj * (half + 0.5) * spacing[1],
               centre_ras[2], 1]
        x, y = ras_to_xy.MultiplyPoint(ras)[:2]
        points.InsertNextPoint(x, y, 0)
    effect.apply_points_display_coordinates(points, view)  # what the view's drag hands trame-slicer on release
    square = np.zeros_like(before_first)
    i, j, k = centre
    square[k, j - half:j + half + 1, i - half:i + half + 1] = True
    assert np.array_equal(_mask(app, first), before_first | square)  # that slice only, the square only
    assert np.array_equal(_mask(app, second), before_second & ~square)
    session.undo()
    assert np.array_equal(_mask(app, first), before_first) and np.array_equal(_mask(app, second), before_second)
    session.set_effect("none")


def test_logical_operators_between_two_segments_and_undo(app):
    from trame_slicer.segmentation import SegmentationOverwriteMode

    session, s = app.session, app.state
    editor = app.slicer_app.segmentation_editor
    first, second = _segments(app)
    a, b = _mask(app, first), _mask(app, second)
    assert a.any() and b.any() and not (a & b).any()
    assert s.logical_other == second

    def check(operation, other, expected_first, expected_second):
        s.segment_id, s.logical_operation, s.logical_other = first, operation, other
        app.logical()
        assert not s.message_error, s.message
        assert np.array_equal(_mask(app, first), expected_first), operation
        assert np.array_equal(_mask(app, second), expected_second), operation
        assert session.remeasure()[0]["voxel_count"] == expected_first.sum()

    check("copy", second, b, np.zeros_like(b))  # the default overwrite mode: segments never overlap
    session.undo()
    assert np.array_equal(_mask(app, first), a) and np.array_equal(_mask(app, second), b)
    check("clear", "", np.zeros_like(a), b)
    session.undo()
    check("invert", "", ~a, np.zeros_like(b))
    session.undo()
    editor.set_overwrite_mode(SegmentationOverwriteMode.ALLOW_OVERLAP)  # to see union/subtract/intersect apart
    try:
        check("union", second, a | b, b)
        check("subtract", second, a, b)
        check("union", second, a | b, b)
        check("intersect", second, b, b)
        for _ in range(4):
            session.undo()
    finally:
        editor.set_overwrite_mode(SegmentationOverwriteMode.OVERWRITE_ALL)
    assert np.array_equal(_mask(app, first), a) and np.array_equal(_mask(app, second), b)
    with pytest.raises(ValueError, match="needs a second segment"):
        session.logical(first, "subtract", "")
    with pytest.raises(ValueError, match="with itself"):
        session.logical(first, "union", first)
    with pytest.raises(ValueError, match="unknown logical operation 'xor'"):
        session.logical(first, "xor", second)
    session.set_effect("none")
