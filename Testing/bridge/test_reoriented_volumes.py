"""A volume node whose voxels are stored in another order (its IJK-to-RAS matrix permuted and flipped, the
physical image the same) gets, through read_inputs / compute / apply, the same segmentation in physical space."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk
from bridge_support import add_volume
from orientation_support import back_from, oriented_model

from medseg.catalog import resources_dir
from medseg.geometry import Geometry
from medseg.inference import SegmentOptions
from medseg.io import read_image
from MedSegLib.run import ModelCache, apply, compute, read_inputs
from MedSegLib.segmentation import labelmap_from_segmentation, segment_id

ORDERS = [((2, 0, 1), (False, True, True)), ((1, 2, 0), (True, False, False)), ((0, 1, 2), (True, True, True))]


@pytest.fixture(scope="module")
def sample():
    image, geometry = read_image(resources_dir() / "Samples" / "hippocampus_001_T1w.nii.gz")
    return image, geometry


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The bundled hippocampus model, its card given the orientation it was trained in (RAS), loaded once."""
    cache = ModelCache()
    return cache, oriented_model(tmp_path_factory.mktemp("models"))


def _reordered_node(scene, image: np.ndarray, ijk_to_ras: np.ndarray, axes, flips, name: str):
    """The voxels transposed and flipped, the IJK-to-RAS columns permuted and negated to match (origin at the new
    voxel 0), built in RAS as a Slicer user would."""
    array = np.flip(np.transpose(image, axes), tuple(a for a in range(3) if flips[a]))
    matrix, corner = np.eye(4), np.zeros(3)
    size_ijk = image.shape[::-1]
    for a in range(3):
        n, c = 2 - a, 2 - axes[a]  # new index axis n runs along old index axis c
        matrix[:3, n] = -ijk_to_ras[:3, c] if flips[a] else ijk_to_ras[:3, c]
        corner[c] = size_ijk[c] - 1 if flips[a] else 0
    matrix[:3, 3] = ijk_to_ras[:3, :3] @ corner + ijk_to_ras[:3, 3]
    return add_volume(scene, array, Geometry.from_ijk_to_ras(matrix), name), matrix


def _segment(scene, model, node):
    cache, path = model
    segmenter = cache.get(path, "cpu")
    inputs = read_inputs(node, segmenter.card)
    result = compute(segmenter, inputs, SegmentOptions())
    applied = apply(scene, inputs, result)
    return scene.GetNodeByID(applied.segmentation_id), result


@pytest.mark.parametrize(("axes", "flips"), ORDERS)
def test_a_permuted_and_flipped_volume_node_gets_the_same_segmentation(scene, sample, model, axes, flips):
    image, geometry = sample
    reference_node = add_volume(scene, image, geometry, "hippocampus_001")
    node, matrix = _reordered_node(scene, image, geometry.ijk_to_ras(), axes, flips, "reordered")
    assert np.allclose(_ijk_to_ras(node), matrix) and not np.allclose(_ijk_to_ras(reference_node), matrix)
    ids = [segment_id(1), segment_id(2)]

    reference_segmentation, reference = _segment(scene, model, reference_node)
    expected = labelmap_from_segmentation(reference_segmentation, reference_node, ids, [1, 2])
    assert {1, 2} <= set(np.unique(expected)) and np.array_equal(expected, reference.labels)

    segmentation, result = _segment(scene, model, node)
    assert result.info["orientation"]["reoriented"] and result.info["orientation"]["model"] == "RAS"
    own_grid = labelmap_from_segmentation(segmentation, node, ids, [1, 2])
    assert own_grid.shape == slicer.util.arrayFromVolume(node).shape
    assert np.array_equal(back_from(own_grid, axes, flips), expected)
    # In physical space, by Slicer: the reordered node's segmentation exported onto the original node's grid.
    assert np.array_equal(labelmap_from_segmentation(segmentation, reference_node, ids, [1, 2]), expected)
    assert [m.voxel_count for m in result.measurements] == [m.voxel_count for m in reference.measurements]


def _ijk_to_ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)
