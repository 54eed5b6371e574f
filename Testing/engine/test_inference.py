"""The in-memory inference API: grids, ROI, resampling, 2D slice-wise, TTA, UNet++ options, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from card_support import card_dict
from threshold_net import Threshold

from medseg.card import ModelCard
from medseg.checkpoint import LoadedModel
from medseg.geometry import Geometry
from medseg.inference import Segmenter, SegmentOptions, inference_window
from medseg.models import build_model
from medseg.sliding_window import Cancelled, CancelToken

OBLIQUE = Geometry((0.7, 1.3, 2.5), (10.0, -20.0, 30.0),
                   tuple(map(tuple, np.linalg.qr(np.array([[2.0, 1, 0], [-1, 2, 1], [0, 1, 3]]))[0])))


def _threshold_segmenter(spatial_dims=3, spacing=None, patch=(16, 16, 16), slice_axis=0) -> Segmenter:
    model = Threshold(spatial_dims)
    d = card_dict(model)
    d.update(architecture="unet", architecture_args=model.config, patch_size=list(patch), spacing=spacing,
             slice_axis=slice_axis, labels=[{"id": 0, "name": "background", "color": [0, 0, 0]},
                                             {"id": 1, "name": "bright", "color": [255, 0, 0]}])
    d["inputs"][0]["normalization"] = {"kind": "none"}
    return Segmenter(LoadedModel(model, ModelCard.from_dict(d), Path("threshold")), device="cpu")


def _blob(shape=(30, 41, 23), center=(14, 20, 11), radius=7.0) -> np.ndarray:
    k, j, i = np.indices(shape)
    d = np.sqrt((k - center[0]) ** 2 + (j - center[1]) ** 2 + (i - center[2]) ** 2)
    return (radius - d).astype(np.float32)  # positive inside the sphere


def test_labels_land_voxel_exactly_on_an_oblique_anisotropic_grid():
    image = _blob()
    result = _threshold_segmenter().segment(image, OBLIQUE, SegmentOptions(overlap=0.25))
    np.testing.assert_array_equal(result.labels, (image > 0).astype(np.uint8))
    assert result.geometry == OBLIQUE
    (m,) = result.measurements
    assert m.voxel_count == int((image > 0).sum())
    assert m.volume_ml == pytest.approx(m.voxel_count * 0.7 * 1.3 * 2.5 / 1000)


def test_roi_is_pasted_back_exactly():
    image = _blob()
    roi = (3, 20, 5, 33, 2, 25)  # i0 i1 j0 j1 k0 k1
    result = _threshold_segmenter().segment(image, OBLIQUE, SegmentOptions(roi=roi, probabilities=True))
    expected = np.zeros(image.shape, np.uint8)
    box = (slice(2, 25), slice(5, 33), slice(3, 20))
    expected[box] = image[box] > 0
    np.testing.assert_array_equal(result.labels, expected)
    assert result.probabilities.shape == (2, *image.shape)
    assert result.probabilities[0][0, 0, 0] == 1.0 and result.probabilities[1][0, 0, 0] == 0.0


@pytest.mark.parametrize("roi", [(0, 99, 0, 10, 0, 10), (5, 5, 0, 10, 0, 10), (-1, 3, 0, 10, 0, 10), (0, 1, 2, 3)])
def test_roi_outside_the_image_is_refused(roi):
    with pytest.raises(ValueError, match="region of interest"):
        _threshold_segmenter().segment(_blob(), OBLIQUE, SegmentOptions(roi=roi))


def test_resampled_to_model_spacing_and_back_on_the_input_grid():
    """Run at 2 mm on a 0.7/1.3/2.5 mm image: the result is on the input grid, in the right place."""
    image = _blob(shape=(40, 60, 50), center=(20, 31, 24), radius=14.0)
    result = _threshold_segmenter(spacing=[2.0, 2.0, 2.0]).segment(image, OBLIQUE)
    assert result.info["network_grid_kji"] != list(image.shape)
    truth = image > 0
    got = result.labels == 1
    dice = 2 * (got & truth).sum() / (got.sum() + truth.sum())
    assert dice > 0.95
    np.testing.assert_allclose(np.argwhere(got).mean(0), np.argwhere(truth).mean(0), atol=0.5)


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_2d_networks_run_slice_by_slice(slice_axis):
    image = _blob()
    patch = (32, 32)
    result = _threshold_segmenter(2, patch=patch, slice_axis=slice_axis).segment(image, OBLIQUE)
    np.testing.assert_array_equal(result.labels, (image > 0).astype(np.uint8))


def test_tta_gives_mean_variance_and_volume_interval():
    torch.manual_seed(0)
    net = build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.0625, depth=3)
    d = card_dict(net)
    d["patch_size"] = [16, 16, 16]
    seg = Segmenter(LoadedModel(net.eval(), ModelCard.from_dict(d), Path("tiny")), device="cpu")
    image = np.random.default_rng(0).normal(size=(20, 22, 18)).astype(np.float32)
    plain = seg.segment(image, OBLIQUE, SegmentOptions(uncertainty=True))
    tta = seg.segment(image, OBLIQUE, SegmentOptions(tta=True, uncertainty=True))
    assert tta.info["passes"] == 8 and plain.info["passes"] == 1
    assert plain.tta_variance is None and tta.tta_variance.max() > 0
    assert 0 <= tta.entropy.min() and tta.entropy.max() <= 1
    for m in tta.measurements:
        lo, hi = m.volume_interval_ml
        assert lo <= hi


def test_unetpp_prune_level_and_accurate_mode_are_run_options():
    torch.manual_seed(0)
    net = build_model("unetpp", spatial_dims=3, in_channels=1, num_classes=3, width=0.125)
    d = card_dict(net)
    d.update(architecture="unetpp", patch_size=[16, 16, 16])
    seg = Segmenter(LoadedModel(net.eval(), ModelCard.from_dict(d), Path("pp")), device="cpu")
    image = np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32)
    runs = [seg.segment(image, OBLIQUE, SegmentOptions(prune_level=level, probabilities=True)) for level in (1, 4)]
    assert not np.allclose(runs[0].probabilities, runs[1].probabilities)
    accurate = seg.segment(image, OBLIQUE, SegmentOptions(accurate=True, probabilities=True))
    assert not np.allclose(accurate.probabilities, runs[1].probabilities)
    with pytest.raises(ValueError, match="UNet\\+\\+ options"):
        _threshold_segmenter().segment(_blob(), OBLIQUE, SegmentOptions(prune_level=2))


def test_grad_cam_is_on_the_input_grid_and_normalised():
    torch.manual_seed(0)
    net = build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.0625, depth=3)
    d = card_dict(net)
    d["patch_size"] = [16, 16, 16]
    seg = Segmenter(LoadedModel(net.eval(), ModelCard.from_dict(d), Path("tiny")), device="cpu")
    image = np.random.default_rng(1).normal(size=(21, 17, 19)).astype(np.float32)
    result = seg.segment(image, OBLIQUE, SegmentOptions(activation_classes=("posterior hippocampus", 1)))
    assert set(result.activations) == {"posterior hippocampus", "anterior hippocampus"}
    for cam in result.activations.values():
        # normalised: max 1, or all zero where an untrained network's class logit stays below its head's bias
        assert cam.shape == image.shape and cam.min() >= 0 and cam.max() in (0.0, pytest.approx(1.0))
    with pytest.raises(KeyError, match="its labels are"):
        seg.segment(image, OBLIQUE, SegmentOptions(activation_classes=("liver",)))


def test_cancel_returns_nothing():
    token = CancelToken()
    seg = _threshold_segmenter()

    def progress(fraction, message):
        token.cancel()

    with pytest.raises(Cancelled):
        seg.segment(_blob(), OBLIQUE, SegmentOptions(overlap=0.5), progress=progress, cancel=token)


@pytest.mark.parametrize(("image", "message"), [
    (np.zeros((5, 5), np.float32), "3D"),
    (np.zeros((0, 5, 5), np.float32), "empty"),
    (np.full((5, 5, 5), np.nan, np.float32), "NaN"),
    ([np.zeros((5, 5, 5), np.float32)] * 2, "expects 1 input channel"),
])
def test_bad_arrays_are_refused_with_the_reason(image, message):
    with pytest.raises(ValueError, match=message):
        _threshold_segmenter().segment(image, OBLIQUE)


def test_many_classes_blend_features_with_the_same_result():
    """7 classes and 4 feature channels: the Segmenter blends features; forcing logits gives the same output."""
    torch.manual_seed(0)
    net = build_model("unet", spatial_dims=3, in_channels=1, num_classes=7, width=0.0625, depth=3)
    d = card_dict(net)
    d["labels"] = [{"id": i, "name": f"organ {i}", "color": [i, i, i]} for i in range(7)]
    d["patch_size"] = [16, 16, 16]
    seg = Segmenter(LoadedModel(net.eval(), ModelCard.from_dict(d), Path("seven")), device="cpu")
    assert seg._head(SegmentOptions())[1] == 4
    image = np.random.default_rng(2).normal(size=(23, 27, 25)).astype(np.float32)
    options = SegmentOptions(tta=True, probabilities=True, uncertainty=True, precision="fp32")  # exact arithmetic
    features = seg.segment(image, OBLIQUE, options)
    seg.model.linear_head = lambda: None
    logits = seg.segment(image, OBLIQUE, options)
    np.testing.assert_array_equal(features.labels, logits.labels)
    np.testing.assert_allclose(features.probabilities, logits.probabilities, atol=1e-5)
    np.testing.assert_allclose(features.tta_variance, logits.tta_variance, atol=1e-5)
    assert [m.volume_interval_ml for m in features.measurements] == [m.volume_interval_ml for m in
                                                                      logits.measurements]


def test_window_fits_small_volumes_and_never_exceeds_the_patch():
    seg = _threshold_segmenter(patch=(16, 16, 16))  # Threshold has size divisor 1
    assert seg._window((12, 16, 9)) == (12, 16, 9)  # smaller than the patch: one window, no padding
    assert seg._window((20, 22, 18)) == (16, 16, 16)  # larger: windows of the patch the network was trained on
    assert seg._window((40, 10, 50)) == (16, 10, 16)  # shrunk where the volume is thinner
    torch.manual_seed(0)
    net = build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.0625, depth=4)
    d = card_dict(net)
    d["patch_size"] = [40, 56, 40]
    unet = Segmenter(LoadedModel(net.eval(), ModelCard.from_dict(d), Path("u")), device="cpu")
    assert unet._window((35, 51, 35)) == (40, 56, 40)  # rounded up to the size divisor (8)
    assert unet._window((43, 55, 41)) == (40, 56, 40)
    assert inference_window((7, 30, 50), (1, 32, 32), 16) == (1, 32, 32)  # 2D: one slice at a time
