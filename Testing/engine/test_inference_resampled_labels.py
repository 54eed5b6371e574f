"""Labels resampled back to the input grid class by class (no K full-grid probability maps) are the arg-max of the
resampled probabilities, voxel for voxel, ties included."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from medseg.catalog import bundled_models
from medseg.checkpoint import load_checkpoint
from medseg.inference import Segmenter, SegmentOptions, _resampled_argmax
from medseg.io import read_image
from medseg.preprocess import resample


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, 0).float()


@pytest.mark.parametrize("shape", [(20, 17, 31), (5, 6, 7), (9, 11, 13)])
def test_class_by_class_argmax_equals_the_argmax_of_all_maps(shape):
    generator = torch.Generator().manual_seed(3)
    probabilities = _softmax(torch.randn(7, 9, 11, 13, generator=generator) * 3)
    probabilities[3] = probabilities[1]  # exact ties everywhere between classes 1 and 3: the first one wins
    probabilities[:, :4] = 1 / 7  # a flat block: every class ties, class 0 wins
    expected = resample(probabilities, shape).argmax(0).numpy()
    labels = _resampled_argmax(probabilities, shape, np.dtype(np.uint8))
    assert labels.dtype == np.uint8 and labels.shape == shape
    assert int(np.count_nonzero(labels != expected)) == 0
    assert set(np.unique(labels)) >= {0, 1} and 3 not in labels  # class 3 only ever ties with class 1


@pytest.fixture(scope="module")
def hippocampus(samples):
    entry = {e.name: e for e in bundled_models()}.get("hippocampus-unet3d")
    if entry is None:
        pytest.skip("needs the bundled model hippocampus-unet3d")
    return load_checkpoint(entry.path), read_image(samples / "hippocampus_001_T1w.nii.gz")


@pytest.mark.parametrize("temperature", [None, 1.7])
def test_hippocampus_labels_are_voxel_identical_with_and_without_probabilities(hippocampus, temperature):
    loaded, (image, geometry) = hippocampus
    calibration = {"temperature": temperature} if temperature else None
    card = dataclasses.replace(loaded.card, spacing=(0.8, 1.3, 0.9), calibration=calibration)  # forces resampling
    segmenter = Segmenter(dataclasses.replace(loaded, card=card), device="cpu")
    with_maps = segmenter.segment(image, geometry, SegmentOptions(probabilities=True, uncertainty=True))
    without = segmenter.segment(image, geometry, SegmentOptions(uncertainty=True))
    assert with_maps.info["network_grid_kji"] != list(image.shape)  # the network ran on another grid
    assert without.probabilities is None and with_maps.probabilities.shape == (3, *image.shape)
    assert without.labels.dtype == with_maps.labels.dtype
    assert int(np.count_nonzero(without.labels != with_maps.labels)) == 0
    assert np.count_nonzero(without.labels) > 100  # real hippocampus labels, not an empty result
    np.testing.assert_array_equal(without.entropy, with_maps.entropy)
