"""Review on the real Slicer core: the slice views jump to a region of the bundled model's review list."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk
from bridge_support import add_volume

from medseg.inference import SegmentOptions
from MedSegLib.review import jump_to, next_region
from MedSegLib.run import ModelCache, compute, read_inputs


def _slice_nodes(scene) -> list:
    return [scene.GetNthNodeByClass(n, "vtkMRMLSliceNode") for n in range(scene.GetNumberOfNodesByClass(
        "vtkMRMLSliceNode"))]


def test_jump_to_centres_the_three_slice_views_on_the_point(scene):
    point = np.array([12.5, -40.0, 7.25])
    assert jump_to(scene, point) == 3
    nodes = _slice_nodes(scene)
    assert sorted(n.GetOrientation() for n in nodes) == ["Axial", "Coronal", "Sagittal"]
    for node in nodes:
        slice_to_ras = slicer.util.arrayFromVTKMatrix(node.GetSliceToRAS())
        assert np.allclose(slice_to_ras[:3, 3], point)  # centred: the view's centre is the point
        assert node.GetSliceOffset() == pytest.approx(slice_to_ras[:3, 2] @ point)  # the slice passes through it
    offsets = {n.GetOrientation(): abs(n.GetSliceOffset()) for n in nodes}
    assert offsets == pytest.approx({"Axial": 7.25, "Sagittal": 12.5, "Coronal": 40.0})


def test_next_region_walks_the_list_and_wraps():
    assert next_region([3, 1, 2], None) == 3 and next_region([3, 1, 2], 3) == 1
    assert next_region([3, 1, 2], 2) == 3 and next_region([3, 1, 2], 3, step=-1) == 2
    assert next_region([3, 1, 2], 9) == 3 and next_region([], 1) is None


def test_a_real_review_region_lands_in_its_voxels(scene, samples):
    from medseg.io import read_image

    array, geometry = read_image(samples / "hippocampus_001_T1w.nii.gz")
    volume = add_volume(scene, array, geometry, "hippocampus_001")
    segmenter = ModelCache().get("hippocampus-unet3d", "cpu")
    result = compute(segmenter, read_inputs(volume, segmenter.card), SegmentOptions(review=True))
    regions = result.review.regions
    assert regions and regions[0].id == 1
    first = next_region([r.id for r in regions], None)
    region = next(r for r in regions if r.id == first)
    jump_to(scene, region.centroid_ras)
    ras_to_ijk = vtk.vtkMatrix4x4()
    volume.GetRASToIJKMatrix(ras_to_ijk)
    ijk = slicer.util.arrayFromVTKMatrix(ras_to_ijk) @ [*region.centroid_ras, 1.0]
    assert np.allclose(ijk[:3], region.centroid_ijk, atol=1e-6)  # Slicer puts the point on the region's voxels
    for node in _slice_nodes(scene):
        assert np.allclose(slicer.util.arrayFromVTKMatrix(node.GetSliceToRAS())[:3, 3], region.centroid_ras)
