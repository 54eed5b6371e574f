"""Label measurements: exact volumes, surface area and diameter accuracy, positions in LPS and RAS."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import SimpleITK as sitk

from medseg.card import Label
from medseg.geometry import Geometry
from medseg.measure import TABLE_COLUMNS, LabelMeasurement, largest_diameter_mm, measure_labels, measurements_table


def rotation(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return rz @ ry @ rx


OBLIQUE = Geometry((0.7, 1.3, 2.9), (-12.5, 40.0, 7.25), tuple(map(tuple, rotation(0.4, -0.7, 1.1))))
SPECS = [Label(0, "background"), Label(1, "one"), Label(2, "two"), Label(3, "three")]


def ball(shape_kji, centre_ijk, radius_mm: float, spacing) -> np.ndarray:
    """Voxels whose centre lies within `radius_mm` of the continuous index `centre_ijk` (physical distance)."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape_kji], indexing="ij")
    d = [(idx - c) * s for idx, c, s in zip((i, j, k), centre_ijk, spacing, strict=True)]
    return (d[0] ** 2 + d[1] ** 2 + d[2] ** 2) <= radius_mm**2


def physical(image: sitk.Image, ijk) -> np.ndarray:
    return np.array(image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in ijk)))


def test_volume_is_exactly_count_times_voxel_volume_on_an_oblique_anisotropic_grid():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(17, 23, 29)).astype(np.uint8)
    labels[labels == 3] = 0  # label 3 absent
    out = measure_labels(labels, OBLIQUE, SPECS)
    assert [m.label_id for m in out] == [1, 2, 3]
    voxel_ml = np.prod(OBLIQUE.spacing) / 1000.0
    for m in out:
        count = int(np.count_nonzero(labels == m.label_id))
        assert m.voxel_count == count
        assert m.volume_ml == count * voxel_ml


def test_absent_label_is_zero_with_none_where_undefined_and_json_safe():
    labels = np.zeros((5, 6, 7), np.uint8)
    labels[1:3, 2:4, 2:5] = 1
    probabilities = np.full((3, *labels.shape), 0.25, np.float32)
    m = measure_labels(labels, OBLIQUE, SPECS[:3], image=np.ones(labels.shape), probabilities=probabilities)[1]
    assert (m.label_id, m.name, m.voxel_count, m.volume_ml, m.surface_area_mm2) == (2, "two", 0, 0.0, 0.0)
    assert m.centroid_lps is m.centroid_ras is m.bbox_lps is m.largest_diameter_mm is None
    assert m.intensity_mean is m.intensity_std is m.volume_interval_ml is None
    assert m.soft_volume_ml == pytest.approx(0.25 * labels.size * OBLIQUE.voxel_volume_ml)  # soft: defined
    json.dumps(m.to_dict(), allow_nan=False)


def test_sphere_surface_area_diameter_and_centroid_under_an_oblique_direction():
    """Surface area against 4 pi r^2, within the error measured on 36 spheres with sub-voxel offsets (see the notes of
    medseg.measure): 0.54 % for r >= 10 voxels of the coarsest spacing, 1.65 % for r >= 5. Here r = 20 mm: 20 voxels
    at 1 mm (-0.34 % measured, 0.6 % allowed), 8 voxels along z at 0.8 x 1.0 x 2.5 mm (-0.73 %, 1.7 % allowed)."""
    for spacing, tol in (((1.0, 1.0, 1.0), 0.006), ((0.8, 1.0, 2.5), 0.017)):
        geometry = Geometry(spacing, (3.0, -50.0, 120.0), tuple(map(tuple, rotation(0.3, 0.9, -0.5))))
        half = [round(20.0 / s) for s in spacing]  # 20 mm is a whole number of voxels on each axis
        centre = tuple(h + 2 for h in half)  # (i, j, k)
        labels = ball([2 * h + 4 for h in half[::-1]], centre, 20.0, spacing).astype(np.uint8)
        m = measure_labels(labels, geometry, [Label(1, "ball")])[0]
        assert m.surface_area_mm2 == pytest.approx(4 * np.pi * 20.0**2, rel=tol)
        # voxel centres at +-r on each axis exist: the largest distance is exactly 2 r
        assert m.largest_diameter_mm == pytest.approx(40.0, abs=1e-9)
        expected = np.asarray(geometry.origin) + np.asarray(geometry.direction) @ (np.asarray(spacing) * centre)
        assert np.allclose(m.centroid_lps, expected, atol=1e-9)
        assert np.allclose(m.centroid_lps, physical(geometry.to_sitk(labels), centre), atol=1e-9)
        assert np.allclose(m.centroid_ras, expected * [-1, -1, 1], atol=1e-9)


def test_diameter_of_off_grid_spheres_is_just_below_2r():
    """Voxel centres lie inside the sphere, so the diameter is <= 2 r; measured at most 0.26 mm below for r >= 3 voxels
    (the bound is one voxel diagonal, 2.8 mm here)."""
    rng = np.random.default_rng(3)
    spacing = (0.8, 1.0, 2.5)
    for _ in range(3):
        centre = np.array([20.0, 18.0, 9.0]) + rng.uniform(-0.5, 0.5, 3)
        mask = ball((18, 36, 40), centre, 12.0, spacing)
        d = largest_diameter_mm(mask, Geometry(spacing, direction=OBLIQUE.direction))
        assert 24.0 - 0.3 <= d <= 24.0


def test_largest_diameter_equals_itk_feret_diameter_on_random_shapes():
    rng = np.random.default_rng(1)
    for _ in range(12):
        shape = rng.integers(2, 16, 3)
        mask = rng.random(shape) > rng.uniform(0.5, 0.99)
        if not mask.any():
            continue
        direction = tuple(map(tuple, rotation(*rng.uniform(0, 6, 3))))
        geometry = Geometry(tuple(rng.uniform(0.3, 3.0, 3)), (1.0, 2.0, 3.0), direction)
        f = sitk.LabelShapeStatisticsImageFilter()
        f.ComputeFeretDiameterOn()
        f.Execute(geometry.to_sitk(mask.astype(np.uint8)))
        assert largest_diameter_mm(mask, geometry) == pytest.approx(f.GetFeretDiameter(1), abs=1e-9)


def test_bbox_covers_the_voxel_corners_in_lps():
    labels = np.zeros((10, 12, 14), np.uint8)
    labels[2:5, 3:9, 4:6] = 1  # k 2..4, j 3..8, i 4..5
    identity = Geometry((0.5, 2.0, 3.0), (10.0, 20.0, 30.0))
    lo, hi = measure_labels(labels, identity, [Label(1, "box")])[0].bbox_lps
    assert np.allclose(lo, np.array([10, 20, 30]) + (np.array([4, 3, 2]) - 0.5) * [0.5, 2.0, 3.0])
    assert np.allclose(hi, np.array([10, 20, 30]) + (np.array([5, 8, 4]) + 0.5) * [0.5, 2.0, 3.0])
    lo, hi = measure_labels(labels, OBLIQUE, [Label(1, "box")])[0].bbox_lps
    image = OBLIQUE.to_sitk(labels)
    corners = np.array([physical(image, c) for c in itertools.product((3.5, 5.5), (2.5, 8.5), (1.5, 4.5))])
    assert np.allclose(lo, corners.min(axis=0)) and np.allclose(hi, corners.max(axis=0))


def test_soft_volume_interval_and_intensity_statistics():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, size=(9, 10, 11)).astype(np.int16)
    probabilities = rng.random((3, *labels.shape)).astype(np.float32)
    image = rng.normal(100.0, 20.0, size=(2, *labels.shape)).astype(np.float32)
    passes = {1: [1.5, 1.2, 1.7]}
    out = measure_labels(labels, OBLIQUE, SPECS[:3], image=image, probabilities=probabilities, volume_passes_ml=passes)
    for m in out:
        assert m.soft_volume_ml == pytest.approx(probabilities[m.label_id].sum(dtype=np.float64)
                                                 * OBLIQUE.voxel_volume_ml, rel=1e-12)
        values = image[0][labels == m.label_id]
        assert m.intensity_mean == pytest.approx(np.mean(values, dtype=np.float64), rel=1e-12)
        assert m.intensity_std == pytest.approx(np.std(values, dtype=np.float64), rel=1e-12)
    assert out[0].volume_interval_ml == (1.2, 1.7)
    assert out[1].volume_interval_ml is None


def test_table_rows_have_unit_columns_and_are_json():
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1:4, 1:4, 1:4] = 1
    out = measure_labels(labels, OBLIQUE, SPECS[:3], volume_passes_ml={1: [0.1, 0.2]})
    rows = measurements_table(out)
    assert [list(row) for row in rows] == [list(TABLE_COLUMNS)] * 2
    assert {"volume_ml", "surface_area_mm2", "largest_diameter_mm", "centroid_ras_x_mm"} <= set(TABLE_COLUMNS)
    assert rows[0]["volume_interval_hi_ml"] == 0.2 and rows[1]["centroid_lps_x_mm"] is None
    assert rows[0]["centroid_ras_y_mm"] == -rows[0]["centroid_lps_y_mm"]
    json.dumps(rows, allow_nan=False)
    assert isinstance(out[0], LabelMeasurement)
    assert json.loads(json.dumps(out[0].to_dict()))["bbox_lps"] == [list(c) for c in out[0].bbox_lps]


def test_inputs_that_do_not_fit_are_refused():
    labels = np.zeros((4, 5, 6), np.uint8)
    with pytest.raises(ValueError, match="integer label map"):
        measure_labels(labels.astype(float), OBLIQUE, SPECS)
    with pytest.raises(ValueError, match="does not match the label map"):
        measure_labels(labels, OBLIQUE, SPECS, image=np.zeros((4, 5, 7)))
    with pytest.raises(ValueError, match=r"label ids \[3\] have no probability channel"):
        measure_labels(labels, OBLIQUE, SPECS, probabilities=np.zeros((3, 4, 5, 6), np.float32))


def read(path):
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), Geometry.from_sitk(image)


def test_real_hippocampus_volumes(shared_data):
    labels, geometry = read(shared_data / "hippocampus" / "labelsTr" / "hippocampus_001.nii.gz")
    specs = [Label(1, "anterior"), Label(2, "posterior")]
    voxel_ml = np.prod(geometry.spacing) / 1000.0
    for m in measure_labels(labels, geometry, specs):
        count = int(np.count_nonzero(labels == m.label_id))
        assert count > 100 and m.voxel_count == count and m.volume_ml == count * voxel_ml


def test_real_totalsegmentator_organs(shared_data):
    labels, geometry = read(shared_data / "examples" / "totalsegmentator" / "example_seg.nii.gz")
    organs = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver"}
    out = measure_labels(labels, geometry, [Label(i, name) for i, name in organs.items()])
    voxel_ml = np.prod(geometry.spacing) / 1000.0
    image = geometry.to_sitk(labels)
    for m in out:
        mask = labels == m.label_id
        assert m.voxel_count == np.count_nonzero(mask) > 0 and m.volume_ml == m.voxel_count * voxel_ml
        f = sitk.LabelShapeStatisticsImageFilter()
        f.ComputeFeretDiameterOn()
        f.Execute(sitk.Cast(image == m.label_id, sitk.sitkUInt8))
        assert m.largest_diameter_mm == pytest.approx(f.GetFeretDiameter(1), abs=1e-9)
        assert np.allclose(m.centroid_lps, f.GetCentroid(1))
    liver = next(m for m in out if m.name == "liver")
    assert 500 < liver.volume_ml < 3000  # an adult liver
    json.dumps([m.to_dict() for m in out], allow_nan=False)
