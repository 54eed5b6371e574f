"""Label-map clean-up: largest component, small islands, enclosed holes, other labels left alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from medseg.geometry import Geometry
from medseg.postprocess import PostprocessOptions, postprocess

GEOMETRY = Geometry((1.0, 1.0, 1.0))


def shell(shape, centre, outer: float, inner: float) -> tuple[np.ndarray, np.ndarray]:
    """A hollow ball (voxel centres with inner < distance <= outer) and its cavity (distance <= inner)."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    d = np.sqrt((k - centre[0]) ** 2 + (j - centre[1]) ** 2 + (i - centre[2]) ** 2)
    return (d <= outer) & (d > inner), d <= inner


def run(labels, options, **kwargs):
    before = labels.copy()
    out, record = postprocess(labels, kwargs.pop("geometry", GEOMETRY), options, **kwargs)
    assert np.array_equal(labels, before), "the input label map was modified"
    assert out.dtype == labels.dtype and out.shape == labels.shape
    json.dumps(record, allow_nan=False)
    for label in record["removed_voxels"]:  # new = old - removed + filled
        assert np.count_nonzero(out == label) == (np.count_nonzero(labels == label) - record["removed_voxels"][label]
                                                  + record["filled_voxels"][label])
    return out, record


def test_options_validate_and_describe_themselves():
    with pytest.raises(ValueError, match="min_island_ml"):
        PostprocessOptions(min_island_ml=-1.0)
    with pytest.raises(ValueError, match="min_island_ml"):
        PostprocessOptions(min_island_ml=float("nan"))
    options = PostprocessOptions(largest_component=True, fill_holes=True, min_island_ml=0.5)
    assert options.to_dict() == {"largest_component": True, "fill_holes": True, "min_island_ml": 0.5}
    assert options.describe() == "largest component, islands < 0.5 mL removed, holes filled"
    assert PostprocessOptions().describe() == "none"


def test_largest_component_is_kept_and_other_labels_are_untouched():
    labels = np.zeros((10, 20, 30), np.uint8)
    labels[2:6, 2:7, 2:7] = 1  # 100 voxels
    labels[2:4, 10:13, 20:25] = 1  # 30 voxels, separate
    labels[7:9, 15:18, 3:5] = 2
    labels[7:8, 2:3, 28:29] = 2  # a second label's own island, not processed below
    out, record = run(labels, PostprocessOptions(largest_component=True), label_ids=[1])
    assert record["removed_voxels"] == {1: 30} and record["filled_voxels"] == {1: 0}
    assert np.count_nonzero(out == 1) == 100 and not out[2:4, 10:13, 20:25].any()
    assert np.array_equal(out == 2, labels == 2)


def test_components_are_26_connected():
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    labels[3, 3, 3] = 1  # touches the cube only at a corner: the same component
    out, record = run(labels, PostprocessOptions(largest_component=True))
    assert record["removed_voxels"] == {1: 0} and np.array_equal(out, labels)


def test_hollow_sphere_is_filled_but_an_open_one_is_not():
    wall, cavity = shell((21, 21, 21), (10, 10, 10), 8.0, 5.0)
    labels = wall.astype(np.uint8) * 3
    out, record = run(labels, PostprocessOptions(fill_holes=True))
    assert record["filled_voxels"] == {3: int(cavity.sum())} and np.all(out[cavity] == 3)
    opened = labels.copy()
    opened[10, 10, 13:] = 0  # a face-connected channel from the cavity to the outside
    out, record = run(opened, PostprocessOptions(fill_holes=True))
    assert record["filled_voxels"] == {3: 0} and np.array_equal(out, opened)


def test_a_cavity_leaking_only_through_a_corner_is_enclosed():
    labels = np.zeros((7, 7, 7), np.uint8)
    labels[1:6, 1:6, 1:6] = 1
    labels[2:5, 2:5, 2:5] = 0  # 27-voxel cavity
    labels[5, 5, 5] = 0  # the wall's corner voxel: touches the cavity (4, 4, 4) only at a corner
    out, record = run(labels, PostprocessOptions(fill_holes=True))
    assert record["filled_voxels"] == {1: 27} and out[5, 5, 5] == 0


def test_holes_do_not_take_other_labels_voxels_and_nested_holes_go_to_the_innermost_label():
    outer, outer_cavity = shell((31, 31, 31), (15, 15, 15), 14.0, 11.0)
    inner, inner_cavity = shell((31, 31, 31), (15, 15, 15), 7.0, 4.0)
    labels = (outer * 1 + inner * 2).astype(np.uint8)
    labels[15, 15, 13:16] = 5  # another label inside the inner cavity, adjacent to background voxels
    out, record = run(labels, PostprocessOptions(fill_holes=True))
    gap = outer_cavity & ~inner & ~inner_cavity  # background between the two shells
    core = inner_cavity & (labels == 0)
    assert np.all(out[gap] == 1) and np.all(out[core] == 2) and np.all(out[labels == 5] == 5)
    assert record["filled_voxels"] == {1: int(gap.sum()), 2: int(core.sum()), 5: 0}


def test_islands_below_min_volume_are_dropped_and_those_above_kept():
    geometry = Geometry((0.5, 0.5, 2.0))  # 0.5 uL voxels: 4 voxels = 0.002 mL
    labels = np.zeros((8, 20, 20), np.uint8)
    labels[1:3, 2:4, 2:4] = 1  # 8 voxels = 0.004 mL: kept (equal to the limit)
    labels[5, 10, 10:13] = 1  # 3 voxels = 0.0015 mL: dropped
    labels[5, 15:17, 15:17] = 1  # 4 voxels = 0.002 mL: dropped
    labels[1:3, 10:14, 10:14] = 2  # 32 voxels: kept
    labels[6, 2, 18] = 2  # 1 voxel: dropped
    out, record = run(labels, PostprocessOptions(min_island_ml=0.004), geometry=geometry)
    assert record["removed_voxels"] == {1: 7, 2: 1}
    expected = labels.copy()
    expected[5] = 0
    expected[6, 2, 18] = 0
    assert np.array_equal(out, expected)


def test_all_steps_together_count_an_island_refilled_inside_a_hole():
    wall, cavity = shell((21, 21, 21), (10, 10, 10), 8.0, 5.0)
    labels = wall.astype(np.uint8)
    labels[10, 10, 10] = 1  # an island of the same label inside its own cavity
    out, record = run(labels, PostprocessOptions(largest_component=True, fill_holes=True))
    assert record["removed_voxels"] == {1: 1} and record["filled_voxels"] == {1: int(cavity.sum())}
    assert np.all(out[cavity | wall] == 1)


def test_nothing_to_do_returns_an_equal_copy():
    labels = np.random.default_rng(0).integers(0, 3, (5, 6, 7)).astype(np.uint16)
    out, record = run(labels, PostprocessOptions())
    assert out is not labels and np.array_equal(out, labels)
    assert record["removed_voxels"] == {1: 0, 2: 0} == record["filled_voxels"]
    with pytest.raises(ValueError, match="background"):
        postprocess(labels, GEOMETRY, PostprocessOptions(), label_ids=[0, 1])


def test_real_totalsegmentator_map(shared_data):
    image = sitk.ReadImage(str(shared_data / "examples" / "totalsegmentator" / "example_seg.nii.gz"))
    labels = sitk.GetArrayFromImage(image)
    options = PostprocessOptions(largest_component=True, fill_holes=True, min_island_ml=1.0)
    out, record = run(labels, options, geometry=Geometry.from_sitk(image))
    assert set(record["removed_voxels"]) == set(np.unique(labels).tolist()) - {0}
    cc = sitk.ConnectedComponent(sitk.GetImageFromArray((out == 5).astype(np.uint8)), True)
    assert sitk.GetArrayViewFromImage(cc).max() == 1  # one liver component left
