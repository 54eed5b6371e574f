"""Probability-guided editing: threshold slider and click add/remove, checked against scipy.ndimage.label."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.guided_edit import region_at, threshold_mask

ndimage = pytest.importorskip("scipy.ndimage", reason="scipy (test extra) is the independent component labeller")

SHAPE = (24, 40, 48)


def blob(center, radii, peak=1.0) -> np.ndarray:
    k, j, i = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    d = sum(((g - c) / r) ** 2 for g, c, r in zip((k, j, i), center, radii, strict=True))
    return (peak * np.exp(-d)).astype(np.float32)


@pytest.fixture
def probability() -> np.ndarray:
    """A smooth organ at i = 14 and a weaker, separate blob at i = 38."""
    return np.maximum(blob((12, 20, 14), (6, 8, 8)), blob((12, 20, 38), (3, 4, 4), peak=0.7))


def reference(candidates: np.ndarray, seed: np.ndarray) -> np.ndarray:
    labels, _ = ndimage.label(candidates)  # face connectivity, as the engine
    keep = np.unique(labels[seed & candidates])
    return np.isin(labels, keep[keep > 0])


def organ(probability, threshold=0.5) -> np.ndarray:
    return (probability >= threshold) & (np.arange(SHAPE[2]) < 30)[None, None, :]


def test_the_slider_grows_and_shrinks_along_the_map_without_jumping_to_far_blobs(probability):
    seed = organ(probability)
    sizes = []
    for threshold in (0.9, 0.7, 0.5, 0.3, 0.1):
        mask = threshold_mask(probability, threshold, seed_mask=seed)
        assert np.array_equal(mask, reference(probability >= threshold, seed))
        assert not mask[:, :, 30:].any()  # the far blob is above 0.1 but never touches the organ
        sizes.append(int(mask.sum()))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert (probability[:, :, 30:] >= 0.1).any()  # the far blob would have been taken by a plain threshold


def test_the_slider_never_takes_nor_crosses_other_segments(probability):
    other = np.zeros(SHAPE, bool)
    other[:, :, 24:27] = True  # a wall between the organ and the far blob
    bridge = np.maximum(probability, 0.4 * (np.abs(np.arange(SHAPE[2]) - 26) < 14)[None, None, :])
    seed = organ(probability)
    mask = threshold_mask(bridge, 0.3, seed_mask=seed, other_labels=other)
    assert mask.any() and not (mask & other).any() and not mask[:, :, 27:].any()
    crossing = threshold_mask(bridge, 0.3, seed_mask=seed)  # without the wall, the low bridge joins the far side
    assert crossing[:, :, 27:].any()


def test_no_seed_is_a_plain_threshold_and_an_empty_seed_gives_nothing(probability):
    assert np.array_equal(threshold_mask(probability, 0.4), probability >= 0.4)
    assert not threshold_mask(probability, 0.4, seed_mask=np.zeros(SHAPE, bool)).any()


def test_click_add_takes_the_region_at_or_near_the_click(probability):
    seed = organ(probability)
    added = region_at(probability, (12, 20, 38), threshold=0.3, mask=seed)
    assert np.array_equal(added, reference(probability >= 0.3, np.eye(1, probability.size, np.ravel_multi_index(
        (12, 20, 38), SHAPE), dtype=bool).reshape(SHAPE)))
    assert added.any() and not added[:, :, :30].any()
    threshold = float(probability[12, 20, 41]) + 0.01  # the click lands just outside the region, 2 voxels away
    near = region_at(probability, (12, 20, 42), threshold=threshold, mask=seed)
    assert near[12, 20, 38] and not near[12, 20, 42]
    assert not region_at(probability, (0, 0, 0), threshold=0.3, mask=seed).any()  # nothing near: nothing added


def test_click_add_respects_other_segments(probability):
    other = np.zeros(SHAPE, bool)
    other[:, :, 38:] = True
    added = region_at(probability, (12, 20, 36), threshold=0.3, mask=np.zeros(SHAPE, bool), other_labels=other)
    assert added.any() and not (added & other).any()


def test_click_remove_takes_the_whole_connected_piece_of_the_mask(probability):
    mask = (probability >= 0.3)  # organ + far blob, two pieces
    removed = region_at(probability, (12, 20, 38), threshold=0.3, mask=mask, mode="remove")
    assert np.array_equal(removed, mask & (np.arange(SHAPE[2]) >= 30)[None, None, :])
    assert np.array_equal(region_at(probability, (12, 21, 14), threshold=0.99, mask=mask, mode="remove"),
                          mask & (np.arange(SHAPE[2]) < 30)[None, None, :])  # the threshold plays no part
    assert not region_at(probability, (0, 0, 0), threshold=0.3, mask=mask, mode="remove").any()


@pytest.mark.parametrize(("call", "message"), [
    (lambda p: threshold_mask(p, 0.0), "threshold must be in"),
    (lambda p: threshold_mask(p, 0.5, seed_mask=np.zeros((2, 2, 2), bool)), "same voxel grid"),
    (lambda p: threshold_mask(p[0], 0.5), "must be 3D"),
    (lambda p: region_at(p, (99, 0, 0), threshold=0.5, mask=p > 0.5), "outside the volume"),
    (lambda p: region_at(p, (1, 1, 1), threshold=0.5, mask=p > 0.5, mode="erase"), "mode must be"),
])
def test_bad_inputs_say_what_to_fix(probability, call, message):
    with pytest.raises(ValueError, match=message):
        call(probability)
