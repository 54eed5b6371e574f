"""Volume nodes <-> engine arrays on the real Slicer core: voxel-exact round trips, transforms, refusals, ROI."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk
from bridge_support import add_volume

from medseg.geometry import Geometry
from MedSegLib.volumes import (
    array_from_volume,
    arrays_from_volumes,
    geometry_from_volume,
    roi_from_ijk_box,
    roi_to_ijk_box,
    volume_from_array,
    world_ijk_to_ras,
)


def _ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


@pytest.fixture(params=["hippocampus", "ctchest", "spinal_cord", "ctchest_oblique"])
def case(request, hippocampus, ctchest, spinal_cord):
    """(array, geometry): real volumes; the last has CTChest's 3.05 x 3.05 x 10 mm voxels on the spinal cord's
    oblique axes (oblique and anisotropic)."""
    if request.param == "hippocampus":
        return hippocampus[0], hippocampus[1]
    if request.param == "ctchest":
        return ctchest[0], ctchest[1]
    if request.param == "spinal_cord":
        return spinal_cord[0], spinal_cord[1]
    return ctchest[0], Geometry(ctchest[1].spacing, spinal_cord[1].origin, spinal_cord[1].direction)


def test_round_trip_node_engine_node_is_voxel_exact(scene, case):
    array, geometry = case
    node = add_volume(scene, array, geometry, "input")
    back, back_geometry = array_from_volume(node)
    assert back.dtype == np.float32 and np.array_equal(back, array)
    assert np.allclose(back_geometry.matrix, geometry.matrix, rtol=0, atol=1e-9)
    assert not np.shares_memory(back, slicer.util.arrayFromVolume(node))  # a copy, safe for a worker thread

    from_geometry = volume_from_array(scene, back, back_geometry, "from geometry")
    from_node = volume_from_array(scene, back, node, "from node")
    for made in (from_geometry, from_node):
        assert np.array_equal(slicer.util.arrayFromVolume(made), array)
        assert np.allclose(_ijk_to_ras(made), _ijk_to_ras(node), rtol=0, atol=1e-9)
    assert np.array_equal(_ijk_to_ras(from_node), _ijk_to_ras(node))  # copied, bit for bit


def test_linear_parent_transform_is_applied_and_kept(scene, spinal_cord):
    array, geometry = spinal_cord[:2]
    node = add_volume(scene, array, geometry, "T2w")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    angle = np.radians(20)
    to_parent = np.eye(4)
    to_parent[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    to_parent[:3, 3] = [5.0, -3.0, 12.0]
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(to_parent))
    node.SetAndObserveTransformNodeID(transform.GetID())

    expected = to_parent @ geometry.ijk_to_ras()
    assert np.allclose(world_ijk_to_ras(node), expected, atol=1e-9)
    assert np.allclose(geometry_from_volume(node).ijk_to_ras(), expected, atol=1e-9)
    overlay = volume_from_array(scene, array, node, "overlay")
    assert overlay.GetTransformNodeID() == transform.GetID()  # results stay on the volume's grid, same transform


def test_non_linear_or_shearing_transform_is_refused(scene, hippocampus):
    node = add_volume(scene, hippocampus[0], hippocampus[1], "hippo")
    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    node.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(ValueError, match=r"'hippo' is under the non-linear transform 'warp'.*[Hh]arden"):
        array_from_volume(node)
    shear = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shear")
    matrix = np.eye(4)
    matrix[0, 1] = 0.3
    shear.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    node.SetAndObserveTransformNodeID(shear.GetID())
    with pytest.raises(ValueError, match=r"'hippo'.*'shear' shears"):
        array_from_volume(node)


def test_bad_volumes_are_refused_by_name(scene, hippocampus):
    array, geometry = hippocampus[:2]
    with pytest.raises(ValueError, match="no input volume selected"):
        array_from_volume(None)
    vector = add_volume(scene, np.stack([array] * 3, axis=-1), geometry, "color", class_name="vtkMRMLVectorVolumeNode")
    with pytest.raises(ValueError, match=r"'color' is a vtkMRMLVectorVolumeNode with 3 component"):
        array_from_volume(vector)
    one_slice = add_volume(scene, array[10:11], geometry, "slice")
    with pytest.raises(ValueError, match=r"'slice' is a single slice \(35 x 51 x 1 voxels"):
        array_from_volume(one_slice)
    assert array_from_volume(one_slice, allow_single_slice=True)[0].shape == (1, 51, 35)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(ValueError, match="'empty' has no voxels"):
        array_from_volume(empty)
    nan = array.copy()
    nan[3, 4, 5] = np.nan
    with pytest.raises(ValueError, match=r"input volume 'with nan' has 1 NaN"):
        array_from_volume(add_volume(scene, nan, geometry, "with nan"))


def test_a_frame_of_a_4d_sequence_is_refused(scene, hippocampus):
    array, geometry = hippocampus[:2]
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "dynamic")
    for t in range(3):
        frame = slicer.vtkMRMLScalarVolumeNode()
        frame.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(geometry.ijk_to_ras()))
        slicer.util.updateVolumeFromArray(frame, array + t)
        sequence.SetDataNodeAtValue(frame, str(t))
    browser = slicer.vtkMRMLSequenceBrowserNode()  # the Sequences logic registers this class in Slicer
    browser.SetName("dynamic browser")
    scene.AddNode(browser)
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    proxy = add_volume(scene, array, geometry, "dynamic frame")
    browser.AddProxyNode(proxy, sequence, False)
    with pytest.raises(ValueError, match=r"'dynamic frame' is the current frame of the 4D sequence 'dynamic' \(3 "):
        array_from_volume(proxy)


def test_channels_share_a_grid_or_are_refused_naming_both(scene, spinal_cord):
    array, geometry, _, folder = spinal_cord
    from medseg.io import read_image

    t1, t1_geometry = read_image(folder / "sub-unf01_T1w.nii.gz")
    t2w = add_volume(scene, array, geometry, "T2w")
    t1w = add_volume(scene, t1, t1_geometry, "T1w")
    channels, common = arrays_from_volumes([t2w, t1w], ["T2w", "T1w"])
    assert channels.shape == (2, *array.shape) and np.array_equal(channels[1], t1)
    assert np.allclose(common.matrix, geometry.matrix, atol=1e-9)

    coarse = add_volume(scene, t1, Geometry((1.0, 1.0, 1.2), t1_geometry.origin, t1_geometry.direction), "T1w coarse")
    with pytest.raises(ValueError, match=r"'T2w' \(T2w\) and 'T1w coarse'.*different voxel grids: spacing"):
        arrays_from_volumes([t2w, coarse], ["T2w", "T1w"])
    cropped = add_volume(scene, t1[:, :100], t1_geometry, "T1w cropped")
    with pytest.raises(ValueError, match=r"'T1w cropped'.*size \(131, 100, 16\) vs|size \(131, 141, 16\) vs"):
        arrays_from_volumes([t2w, cropped])


def _roi(scene, center, size):
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "ROI")
    roi.SetCenter(*center)
    roi.SetSize(*size)
    return roi


def test_roi_to_voxel_box(scene, hippocampus, spinal_cord):
    array, geometry = hippocampus[:2]
    node = add_volume(scene, array, geometry, "hippo")
    ijk_to_ras = geometry.ijk_to_ras()
    # a box from voxel (2, 3, 4) to (11, 23, 14), inclusive, edges on voxel boundaries
    lo = ijk_to_ras @ [1.5, 2.5, 3.5, 1]
    hi = ijk_to_ras @ [11.5, 23.5, 14.5, 1]
    center, size = (lo[:3] + hi[:3]) / 2, np.abs(hi[:3] - lo[:3])
    assert roi_to_ijk_box(_roi(scene, center, size * 0.999), node) == (2, 12, 3, 24, 4, 15)
    assert roi_to_ijk_box(_roi(scene, center, size * 1.02), node) == (1, 13, 2, 25, 3, 16)  # touches one more
    moved = _roi(scene, center, size * 0.999)  # under a transform that moves it 3 voxels along i
    shift = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    to_parent = np.eye(4)
    to_parent[:3, 3] = ijk_to_ras[:3, :3] @ [3, 0, 0]
    shift.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(to_parent))
    moved.SetAndObserveTransformNodeID(shift.GetID())
    assert roi_to_ijk_box(moved, node) == (5, 15, 3, 24, 4, 15)
    partly = _roi(scene, (ijk_to_ras @ [0, 0, 0, 1])[:3], (10, 10, 10))
    assert roi_to_ijk_box(partly, node) == (0, 6, 0, 6, 0, 6)  # clipped to the volume
    outside = _roi(scene, (ijk_to_ras @ [200, 0, 0, 1])[:3], (10, 10, 10))
    with pytest.raises(ValueError, match=r"'ROI' is outside volume 'hippo' \(on axis i"):
        roi_to_ijk_box(outside, node)

    oblique = add_volume(scene, spinal_cord[0], spinal_cord[1], "cord")  # ROI axis-aligned, volume oblique
    m = spinal_cord[1].ijk_to_ras()
    box = roi_to_ijk_box(_roi(scene, (m @ [65, 70, 8, 1])[:3], (20, 20, 20)), oblique)
    assert box[0] == 55 and box[1] == 76 and box[2] < 60 < 80 < box[3] and box[4] == 0 and box[5] == 16


def test_typed_voxel_box_becomes_an_roi_that_covers_exactly_it(scene, hippocampus, spinal_cord):
    """The web page's typed box: an ROI along the volume's (oblique) axes that the run reads back voxel-exactly."""
    hippo = add_volume(scene, hippocampus[0], hippocampus[1], "hippo")
    cord = add_volume(scene, spinal_cord[0], spinal_cord[1], "cord")  # oblique: 9.3 degrees about i
    roi = None
    for node, box in ((hippo, (2, 12, 3, 24, 4, 15)), (cord, (55, 76, 40, 90, 3, 9)), (cord, (0, 131, 0, 141, 0, 16)),
                      (hippo, (0, 1, 0, 1, 0, 1))):
        roi = roi_from_ijk_box(scene, node, box, roi_node=roi)  # the same node moved each time
        assert roi_to_ijk_box(roi, node) == box
    assert scene.GetNumberOfNodesByClass("vtkMRMLMarkupsROINode") == 1
    for bad, match in (((3, 3, 0, 5, 0, 5), "axis i from 3 to 2"), ((0, 5, -1, 5, 0, 5), "axis j"),
                       ((0, 5, 0, 5, 0, 17), "axis k from 0 to 16.*0 to 15"), ((0, 5.5, 0, 5, 0, 5), "whole numbers")):
        with pytest.raises(ValueError, match=match):
            roi_from_ijk_box(scene, cord if bad[5] == 17 else hippo, bad)
