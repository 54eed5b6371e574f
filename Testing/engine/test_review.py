"""Review: uncertain regions near the predicted boundaries, ranked, and a confidence per segment."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from medseg.card import Label
from medseg.geometry import LPS_TO_RAS, Geometry
from medseg.inference import Segmenter, SegmentOptions
from medseg.io import read_image
from medseg.review import ReviewOptions, _within, review_result

SPECS = [Label(0, "background"), Label(1, "left"), Label(2, "right")]
GEOMETRY = Geometry((0.8, 1.0, 2.0), (10.0, -5.0, 3.0))


@pytest.fixture(scope="module")
def hippocampus(samples):
    image, geometry = read_image(samples / "hippocampus_001_T1w.nii.gz")
    segmenter = Segmenter("hippocampus-unet3d", device="cpu")
    return segmenter, image, geometry, segmenter.segment(image, geometry, SegmentOptions(review=True))


def two_boxes() -> np.ndarray:
    labels = np.zeros((20, 30, 40), np.int16)
    labels[5:15, 5:15, 5:15] = 1
    labels[5:15, 10:25, 25:35] = 2
    return labels


def test_all_confident_map_lists_no_region_and_full_confidence():
    review = review_result(two_boxes(), np.zeros((20, 30, 40), np.float32), GEOMETRY, SPECS)
    assert review.regions == ()
    assert [s.confidence for s in review.segments] == [1.0, 1.0]
    assert all(s.band_volume_ml > 0 and s.uncertain_volume_ml == 0 for s in review.segments)


def test_uncertain_blob_near_a_boundary_is_listed_and_one_far_from_it_is_not():
    labels = two_boxes()
    entropy = np.zeros(labels.shape, np.float32)
    entropy[14:17, 8:12, 8:12] = 0.8  # straddles label 1's top face (k = 15)
    entropy[8:11, 27:30, 5:10] = 0.9  # background, over 3 mm from every boundary
    review = review_result(labels, entropy, GEOMETRY, SPECS, ReviewOptions(threshold=0.5, margin_mm=3.0))
    assert len(review.regions) == 1
    region = review.regions[0]
    assert (region.id, region.label_id, region.label_name, region.voxel_count) == (1, 1, "left", 48)
    assert region.volume_ml == pytest.approx(48 * 0.8 * 1.0 * 2.0 / 1000)
    assert region.mean_uncertainty == pytest.approx(0.8) and region.score == pytest.approx(region.volume_ml * 0.8)
    centre = GEOMETRY.index_to_lps([9.5, 9.5, 15.0])[0]
    assert np.allclose(region.centroid_lps, centre) and np.allclose(region.centroid_ras, LPS_TO_RAS @ centre)
    lo, hi = np.array(region.bbox_lps)
    assert np.all(lo <= centre) and np.all(centre <= hi)
    left = review.segments[0]
    assert 0 < left.confidence < 1 and left.uncertain_volume_ml == pytest.approx(region.volume_ml)
    assert review.segments[1].confidence == 1.0


def test_absent_segment_has_no_confidence_and_options_are_checked():
    labels = np.zeros((8, 8, 8), np.int16)
    labels[2:5, 2:5, 2:5] = 1
    review = review_result(labels, np.zeros(labels.shape, np.float32), GEOMETRY, SPECS)
    assert review.segments[1].confidence is None and review.segments[1].band_volume_ml == 0.0
    with pytest.raises(ValueError, match="threshold"):
        ReviewOptions(threshold=0.0)
    with pytest.raises(ValueError, match="margin"):
        ReviewOptions(margin_mm=float("nan"))
    with pytest.raises(ValueError, match="does not match"):
        review_result(labels, np.zeros((8, 8, 9), np.float32), GEOMETRY, SPECS)


def test_both_distance_transforms_give_the_same_band():
    rng = np.random.default_rng(0)
    mask = rng.random((20, 30, 25)) > 0.995
    for margin in (0.9, 2.0, 3.0):
        scipy_band = ndimage.distance_transform_edt(~mask, sampling=(2.0, 1.0, 0.8)) <= margin  # the reference
        itk_band = _within(mask, (0.8, 1.0, 2.0), margin)
        assert np.array_equal(scipy_band, itk_band) and mask.sum() < scipy_band.sum() < mask.size


def interface_distance_mm(labels: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Distance from every voxel to the nearest voxel that has a face-neighbour with another label."""
    interface = np.zeros(labels.shape, bool)
    for axis in range(3):
        change = np.diff(labels, axis=axis) != 0
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        interface[tuple(lo)] |= change
        interface[tuple(hi)] |= change
    return ndimage.distance_transform_edt(~interface, sampling=geometry.spacing[::-1])


def test_real_case_regions_lie_near_boundaries_sorted_by_score_with_stable_ids(hippocampus):
    segmenter, image, geometry, result = hippocampus
    review = result.review
    assert result.entropy is not None and len(review.regions) >= 2
    assert [r.id for r in review.regions] == list(range(1, len(review.regions) + 1))
    scores = [r.score for r in review.regions]
    assert scores == sorted(scores, reverse=True)
    distance = interface_distance_mm(result.labels, geometry)
    margin = review.options.margin_mm
    for region in review.regions:
        assert region.label_id in (1, 2) and region.mean_uncertainty >= review.options.threshold
        k, j, i = np.round(region.centroid_ijk[::-1]).astype(int)
        lo, hi = np.array(region.bbox_lps)
        assert distance[k, j, i] <= margin + np.linalg.norm(hi - lo) / 2
    uncertain_near = (result.entropy >= review.options.threshold) & (distance <= margin)
    assert sum(r.voxel_count for r in review.regions) <= uncertain_near.sum()
    for segment in review.segments:
        assert 0.5 < segment.confidence < 1.0
    again = segmenter.segment(image, geometry, SegmentOptions(review=True)).review
    assert again.to_dict() == review.to_dict()


def test_report_carries_the_review_only_when_asked(hippocampus):
    segmenter, image, geometry, result = hippocampus
    report = json.loads(json.dumps(result.report()))
    assert [r["id"] for r in report["review"]["regions"]] == [r.id for r in result.review.regions]
    assert report["review"]["segments"][0]["name"] == "anterior hippocampus"
    plain = segmenter.segment(image, geometry, SegmentOptions())
    assert plain.review is None and "review" not in plain.report() and plain.entropy is None
