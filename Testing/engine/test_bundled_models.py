"""The bundled models: complete cards, small files, and real segmentations (bundled sample, held-out cases)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.catalog import bundled_models, resources_dir
from medseg.inference import Segmenter, SegmentOptions
from medseg.io import read_image
from medseg.metrics import score_label

MODELS = {entry.name: entry for entry in bundled_models()}
EXPECTED = ["abdominal-ct-organs", "hippocampus-unet3d", "hippocampus-unetpp", "left-atrium-vnet"]


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


@pytest.mark.parametrize("name", EXPECTED)
def test_card_terminology_is_the_dicom_master_lists(name):
    """Each label's codes are those of Resources/Models/terminology.json (what bundle_model.py writes): no two
    labels of a model share them, so a DICOM SEG tells anterior from posterior hippocampus."""
    codes = json.loads((resources_dir() / "Models" / "terminology.json").read_text())
    labels = MODELS[name].card.foreground_labels
    for label in labels:
        assert label.terminology == codes[label.name], f"{name} {label.name}: rebuild with scripts/bundle_model.py"
    assert len({json.dumps(label.terminology, sort_keys=True) for label in labels}) == len(labels)


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


@pytest.mark.parametrize(("level", "accurate"), [(1, False), (4, False), (4, True)])
def test_unetpp_levels_segment_the_bundled_sample(level, accurate):
    samples = resources_dir() / "Samples"
    image, geometry = read_image(samples / "hippocampus_003_T1w.nii.gz")
    truth, _ = read_image(samples / "hippocampus_003_label.nii.gz")
    options = SegmentOptions(measure=False, prune_level=level, accurate=accurate)
    result = Segmenter(MODELS["hippocampus-unetpp"].path, device="cpu").segment(image, geometry, options)
    dice = [score_label(result.labels == c, truth == c, geometry).dice for c in (1, 2)]
    assert min(dice) > (0.6 if level == 1 else 0.75), f"L{level} accurate={accurate}: Dice {dice}"


def test_left_atrium_model_segments_held_out_cases_at_full_resolution(shared_data):
    """Trained at 1.25 mm; run on 0.625 mm cases it never trained on, the labels land on their grid."""
    entry = MODELS["left-atrium-vnet"]
    assert entry.card.spacing == (1.25, 1.25, 1.25)
    validation = json.loads((entry.path.parent / "left-atrium-vnet.split.json").read_text())["validation"]
    segmenter = Segmenter(entry.path, device="cpu")
    for case in validation[:2]:
        image, geometry = read_image(shared_data / "left_atrium" / "imagesTr" / f"{case}.nii.gz")
        truth, _ = read_image(shared_data / "left_atrium" / "labelsTr" / f"{case}.nii.gz")
        result = segmenter.segment(image, geometry, SegmentOptions(measure=False))
        assert result.labels.shape == truth.shape and result.geometry == geometry
        dice = score_label(result.labels == 1, truth == 1, geometry).dice
        assert dice > 0.8, f"{case}: Dice {dice:.3f}"


def test_abdominal_ct_model_on_a_held_out_case_and_on_raw_hu_ct_in_another_voxel_order(shared_data):
    """Trained at 5 mm on BTCV (LPS, HU within [-125, 275]): on a validation case at its own grid the large organs are
    found; on TotalSegmentator's example CT (raw HU down to -1024, stored RAS) the liver lands where
    TotalSegmentator's own map has it; the organs the card's validation found unreliable are named in a warning."""
    entry = MODELS["abdominal-ct-organs"]
    card = entry.card
    assert card.spacing == (5.0, 5.0, 5.0) and card.inputs[0].normalization.window == (-125.0, 275.0)
    segmenter = Segmenter(entry.path, device="cpu")
    case = json.loads((entry.path.parent / "abdominal-ct-organs.split.json").read_text())["validation"][0]
    image, geometry = read_image(shared_data / "btcv" / "imagesTr" / f"{case}.nii.gz")
    truth, _ = read_image(shared_data / "btcv" / "labelsTr" / f"{case}.nii.gz")
    result = segmenter.segment(image, geometry, SegmentOptions(measure=False))
    assert result.labels.shape == truth.shape and result.geometry == geometry
    for name in ("liver", "spleen"):
        label = card.label(name).id
        dice = score_label(result.labels == label, truth == label, geometry).dice
        assert dice > 0.75, f"{case} {name}: Dice {dice:.3f}"
    weak = card.unreliable_labels()
    assert weak and all(name not in ("liver", "spleen") for name, _ in weak)
    assert any(all(name in w for name, _ in weak) for w in result.warnings)

    ts = shared_data / "examples" / "totalsegmentator"
    image, geometry = read_image(ts / "example_ct.nii.gz")
    assert float(image.min()) < -900  # raw HU, unlike the training data
    reference, ref_geometry = read_image(ts / "example_seg.nii.gz")
    labels = segmenter.segment(image, geometry, SegmentOptions(measure=False)).labels
    # example_seg belongs to example_ct_sm, whose voxels are example_ct's top 30 slices (k 82-111; see
    # scripts/ct_agreement.py); TotalSegmentator v2 class 5 is the liver
    top = labels[82:112] == card.label("liver").id
    assert top.shape == reference.shape[-3:]
    dice = score_label(top, reference == 5, ref_geometry).dice
    assert dice > 0.8, f"liver agreement with TotalSegmentator {dice:.3f}"
