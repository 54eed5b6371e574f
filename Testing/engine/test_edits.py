"""compare_masks: the AI's label map against the corrected one."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.edits import any_edited, compare_masks
from medseg.geometry import Geometry
from medseg.io import read_image
from medseg.metrics import score_label

GEOMETRY = Geometry((0.5, 1.0, 2.0))
LABELS = {0: "background", 1: "liver", 2: "spleen"}


def ai_map() -> np.ndarray:
    labels = np.zeros((12, 20, 24), np.uint8)
    labels[2:8, 4:12, 4:12] = 1
    labels[2:8, 4:12, 14:20] = 2
    return labels


def test_unchanged_map_is_not_edited():
    stats = compare_masks(ai_map(), ai_map(), GEOMETRY, LABELS)
    assert [s.label_id for s in stats] == [1, 2] and not any_edited(stats)
    assert all(s.dice == 1.0 and s.hd95_mm == 0.0 and s.added_ml == 0.0 == s.removed_ml for s in stats)
    assert stats[0].ai_volume_ml == stats[0].corrected_volume_ml == pytest.approx(6 * 8 * 8 * 0.001)


def test_painted_and_erased_voxels_are_counted_in_ml():
    ai, corrected = ai_map(), ai_map()
    corrected[8:10, 4:12, 4:12] = 1  # 128 voxels added to label 1
    corrected[2:8, 4:6, 14:20] = 0  # 72 voxels erased from label 2
    corrected[2:8, 4:12, 12:14] = 2  # 96 background voxels painted as label 2
    voxel_ml = 0.5 * 1.0 * 2.0 / 1000
    liver, spleen = compare_masks(ai, corrected, GEOMETRY, [(1, "liver"), (2, "spleen")])
    assert (liver.added_voxels, liver.removed_voxels, spleen.added_voxels, spleen.removed_voxels) == (128, 0, 96, 72)
    assert liver.added_ml == pytest.approx(128 * voxel_ml) and spleen.removed_ml == pytest.approx(72 * voxel_ml)
    assert spleen.corrected_volume_ml - spleen.ai_volume_ml == pytest.approx((96 - 72) * voxel_ml)
    for stats, label in ((liver, 1), (spleen, 2)):
        reference = score_label(corrected == label, ai == label, GEOMETRY)
        assert stats.dice == reference.dice and stats.hd95_mm == reference.hd95_mm
        assert stats.edited and stats.to_dict()["edited"]
    assert liver.hd95_mm == pytest.approx(4.0)  # two 2 mm slices added on one face


def test_a_voxel_moved_between_labels_is_removed_from_one_and_added_to_the_other():
    ai, corrected = ai_map(), ai_map()
    corrected[2:8, 4:12, 10:12] = 2
    liver, spleen = compare_masks(ai, corrected, GEOMETRY, LABELS)
    assert liver.removed_voxels == spleen.added_voxels == 96 and liver.added_voxels == spleen.removed_voxels == 0


def test_a_label_erased_entirely_has_no_hd95_and_other_grids_are_refused():
    ai, corrected = ai_map(), ai_map()
    corrected[corrected == 2] = 0
    spleen = compare_masks(ai, corrected, GEOMETRY, LABELS)[1]
    assert spleen.corrected_volume_ml == 0.0 and spleen.dice == 0.0 and spleen.hd95_mm is None
    with pytest.raises(ValueError, match="different grids"):
        compare_masks(ai, corrected[:, :, :-1], GEOMETRY, LABELS)


def test_real_reference_against_itself_eroded(samples):
    labels, geometry = read_image(samples / "hippocampus_001_label.nii.gz")
    labels = labels.astype(np.int16)
    corrected = labels.copy()
    corrected[(labels == 1) & (np.roll(labels, 1, axis=0) != 1)] = 0
    anterior, posterior = compare_masks(labels, corrected, geometry, {1: "anterior", 2: "posterior"})
    assert anterior.removed_voxels == int((labels == 1).sum() - (corrected == 1).sum()) > 0
    assert anterior.added_voxels == 0 and 0 < anterior.dice < 1 and not posterior.edited
