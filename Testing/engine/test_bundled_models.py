"""The bundled models: complete cards, small files, and a real segmentation of the bundled sample."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.catalog import bundled_models, resources_dir
from medseg.inference import Segmenter, SegmentOptions
from medseg.io import read_image
from medseg.metrics import score_label

MODELS = {entry.name: entry for entry in bundled_models()}
EXPECTED = ["hippocampus-unet3d"]  # bundled so far (the training issue lists the rest)


def test_expected_models_are_bundled():
    assert set(EXPECTED) <= set(MODELS), f"bundled: {sorted(MODELS)}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_card_is_complete_and_file_small(name):
    entry = MODELS[name]
    card = entry.card
    assert entry.path.stat().st_size <= 25e6
    for key in ("dataset", "license", "source", "split", "epochs", "hardware"):
        assert card.training.get(key), f"{name}: training.{key} missing"
    assert card.metrics, f"{name}: no validation metrics"
    assert all(label.terminology for label in card.foreground_labels), f"{name}: label without terminology"


@pytest.mark.parametrize("name", [n for n in sorted(MODELS) if n.startswith("hippocampus")])
def test_hippocampus_models_segment_the_bundled_sample(name):
    samples = resources_dir() / "Samples"
    image, geometry = read_image(samples / "hippocampus_001_T1w.nii.gz")
    truth, _ = read_image(samples / "hippocampus_001_label.nii.gz")
    result = Segmenter(MODELS[name].path, device="cpu").segment(image, geometry, SegmentOptions(measure=False))
    for label in MODELS[name].card.foreground_labels:
        dice = score_label(result.labels == label.id, truth == label.id, geometry).dice
        assert dice > 0.75, f"{name} {label.name}: Dice {dice:.3f} on the sample (a validation case)"
    assert np.array_equal(np.unique(result.labels), [0, 1, 2])
