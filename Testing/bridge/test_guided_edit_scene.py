"""Probability-guided editing on the real Slicer core: slider, click add/remove, undo, re-measure."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import vtk
from bridge_support import add_volume, hippocampus_card, synthetic_result

from medseg.guided_edit import region_at, threshold_mask
from MedSegLib.guided_edit import add_region_at, apply_threshold, probability_overlay, remove_region_at, undo_last_edit
from MedSegLib.run import RunInputs, apply
from MedSegLib.segmentation import labelmap_from_segmentation
from MedSegLib.tables import recompute_table, table_rows

ndimage = pytest.importorskip("scipy.ndimage", reason="scipy (test extra) blurs the labels into probability maps")

FAR = (3, 5, 5)  # (k, j, i): a corner, far from the hippocampus, where a weak separate blob is put in label 1's map


def smooth_probabilities(labels: np.ndarray, n_labels: int) -> np.ndarray:
    """Blurred one-hot maps (sums to 1 per voxel), and a separate blob of label 1 at FAR."""
    blurred = np.stack([ndimage.gaussian_filter((labels == n).astype(np.float32), 1.5) for n in range(n_labels)])
    k, j, i = np.ogrid[tuple(slice(0, s) for s in labels.shape)]
    blob = 0.8 * np.exp(-((k - FAR[0]) ** 2 + (j - FAR[1]) ** 2 + (i - FAR[2]) ** 2) / 4.0)
    blurred[1] = np.maximum(blurred[1], blob)
    blurred[0] = np.clip(1 - blurred[1:].sum(axis=0), 0, 1)
    return blurred.astype(np.float32)


@pytest.fixture
def applied(scene, hippocampus):
    array, geometry, labels = hippocampus
    volume = add_volume(scene, array, geometry, "hippocampus_001")
    inputs = RunInputs(array[None], geometry, volume.GetID(), volume.GetName(), (volume.GetID(),))
    card = hippocampus_card()
    result = synthetic_result(array, geometry, labels, card)
    result.probabilities = smooth_probabilities(labels, len(card.labels))
    applied = apply(scene, inputs, result)
    return volume, scene.GetNodeByID(applied.segmentation_id), scene.GetNodeByID(applied.table_id), labels


def segment(segmentation, volume, sid: str) -> np.ndarray:
    return labelmap_from_segmentation(segmentation, volume, [sid], [1]) > 0


def ras_of(volume, kji) -> list[float]:
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(matrix)
    return list((ijk_to_ras @ np.array([kji[2], kji[1], kji[0], 1.0]))[:3])


def test_the_slider_grows_and_shrinks_the_segment_as_the_engine_says(scene, applied):
    volume, segmentation, _, labels = applied
    probability = slicer.util.arrayFromVolume(probability_overlay(segmentation, "Segment_1"))
    seed, other = labels == 1, labels == 2
    posterior = segment(segmentation, volume, "Segment_2")
    sizes = {}
    for threshold in (0.3, 0.1, 0.05, 0.6, 0.3):
        apply_threshold(scene, segmentation, "Segment_1", threshold)
        mask = segment(segmentation, volume, "Segment_1")
        assert np.array_equal(mask, threshold_mask(probability, threshold, seed_mask=seed, other_labels=other))
        assert not mask[FAR].any() and not (mask & other).any()
        assert np.array_equal(segment(segmentation, volume, "Segment_2"), posterior)  # the other segment untouched
        sizes.setdefault(threshold, int(mask.sum()))
        assert sizes[threshold] == int(mask.sum())  # back at 0.3: exactly the first 0.3
    assert sizes[0.6] < sizes[0.3] < sizes[0.1] < sizes[0.05]
    assert undo_last_edit(scene, segmentation)  # one undo reverts the whole drag
    assert np.array_equal(segment(segmentation, volume, "Segment_1"), seed)
    assert np.array_equal(segment(segmentation, volume, "Segment_2"), posterior)


def test_click_add_and_remove_at_ras_points_then_undo_and_remeasure(scene, applied):
    volume, segmentation, _, labels = applied
    probability = slicer.util.arrayFromVolume(probability_overlay(segmentation, "Segment_1"))
    before = segment(segmentation, volume, "Segment_1")
    added = add_region_at(scene, segmentation, "Segment_1", ras_of(volume, (FAR[0], FAR[1], FAR[2] + 1)), 0.3)
    assert added[FAR] and np.array_equal(added, region_at(probability, (FAR[0], FAR[1], FAR[2] + 1), threshold=0.3,
                                                          mask=before, other_labels=labels == 2))
    assert np.array_equal(segment(segmentation, volume, "Segment_1"), before | added)
    rows = table_rows(recompute_table(segmentation))
    voxel_ml = float(np.prod(volume.GetSpacing())) / 1000.0
    assert rows[0]["volume_ml"] == pytest.approx((before | added).sum() * voxel_ml, rel=1e-9)
    assert rows[0]["edited"] == "yes" and rows[1]["edited"] == "no"

    removed = remove_region_at(scene, segmentation, "Segment_1", ras_of(volume, FAR))
    assert np.array_equal(removed, added)  # the far piece, not the hippocampus
    assert np.array_equal(segment(segmentation, volume, "Segment_1"), before)
    assert undo_last_edit(scene, segmentation)  # undo the removal
    assert np.array_equal(segment(segmentation, volume, "Segment_1"), before | added)
    assert undo_last_edit(scene, segmentation)  # undo the addition
    assert np.array_equal(segment(segmentation, volume, "Segment_1"), before)
    assert np.array_equal(segment(segmentation, volume, "Segment_2"), labels == 2)
    assert table_rows(recompute_table(segmentation))[0]["edited"] == "no"


def test_a_click_on_nothing_changes_nothing(scene, applied):
    volume, segmentation, _, labels = applied
    far = (labels.shape[0] - 1, labels.shape[1] - 1, labels.shape[2] - 1)
    assert not add_region_at(scene, segmentation, "Segment_1", ras_of(volume, far), 0.3).any()
    assert np.array_equal(segment(segmentation, volume, "Segment_1"), labels == 1)
    assert not undo_last_edit(scene, segmentation)


def test_a_result_without_probabilities_says_to_keep_them(scene, hippocampus):
    array, geometry, labels = hippocampus
    volume = add_volume(scene, array, geometry, "hippocampus_001")
    inputs = RunInputs(array[None], geometry, volume.GetID(), volume.GetName(), (volume.GetID(),))
    applied = apply(scene, inputs, synthetic_result(array, geometry, labels, hippocampus_card()))
    with pytest.raises(ValueError, match="keep probabilities"):
        apply_threshold(scene, scene.GetNodeByID(applied.segmentation_id), "Segment_1", 0.4)
