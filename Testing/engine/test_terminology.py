"""Resources/Models/terminology.json for the BTCV abdominal organs: every label of the data set resolves to codes and
a color (through scripts/bundle_model.py's `complete_labels`, into a card the engine validates), the codes are those
of Slicer's DICOM master list (category, type, laterality modifier), and a DICOM SEG carries them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from medseg.card import ModelCard
from medseg.catalog import resources_dir

REPO = Path(__file__).resolve().parents[2]
MASTER_LIST = "SegmentationCategoryTypeModifier-DICOM-Master.term.json"


def _bundle_module():
    spec = importlib.util.spec_from_file_location("bundle_model", REPO / "scripts" / "bundle_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _codes() -> dict:
    return json.loads((resources_dir() / "Models" / "terminology.json").read_text())


@pytest.fixture(scope="module")
def btcv_labels(shared_data) -> dict[int, str]:
    meta = json.loads((shared_data / "btcv" / "dataset.json").read_text())
    return {int(k): v for k, v in meta["labels"].items()}


@pytest.fixture(scope="module")
def btcv_card(btcv_labels):
    """A card with BTCV's labels, completed as bundle_model.py completes a trained card, validated by the engine."""
    from card_support import card_dict

    from medseg.models import build_model

    model = build_model("unet", spatial_dims=3, in_channels=1, num_classes=len(btcv_labels), width=0.0625, depth=2)
    card = card_dict(model, channels=("CT",))
    card["labels"] = [{"id": i, "name": name, "color": [128, 128, 128]} for i, name in sorted(btcv_labels.items())]
    missing = _bundle_module().complete_labels(card, _codes())
    assert missing == [], f"labels without codes in terminology.json: {missing}"
    return ModelCard.from_dict(card)


def test_every_btcv_label_resolves_to_distinct_codes_and_a_color(btcv_labels, btcv_card):
    assert len(btcv_labels) == 14 and [lb.name for lb in btcv_card.labels] == [btcv_labels[i] for i in range(14)]
    foreground = btcv_card.foreground_labels
    assert all(label.terminology for label in foreground)
    assert len({json.dumps(label.terminology, sort_keys=True) for label in foreground}) == 13
    assert all(label.color != (128, 128, 128) for label in foreground)
    by_name = {label.name: label.terminology for label in foreground}
    assert by_name["right kidney"]["typeModifier"]["meaning"] == "Right"
    assert by_name["left adrenal gland"]["typeModifier"]["meaning"] == "Left"
    assert by_name["left kidney"]["type"] == by_name["right kidney"]["type"]


def test_the_codes_are_those_of_the_dicom_master_list(btcv_card):
    """Checked against Slicer's own terminology file (installed with trame-slicer): the category and type exist with
    these code values and meanings, and a laterality modifier is one the list gives that type."""
    spec = importlib.util.find_spec("trame_slicer")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs Slicer's DICOM master list terminology file (PyPI package trame-slicer)")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "terminologies" / MASTER_LIST
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    master = json.loads(path.read_text())
    assert master["SegmentationCategoryTypeContextName"] == "Segmentation category and type - DICOM master list"
    types = {}
    for category in master["SegmentationCodes"]["Category"]:
        for item in category.get("Type", []):
            types[(category["CodeValue"], item["CodeValue"])] = item
    for label in btcv_card.foreground_labels:
        term = label.terminology
        found = types.get((term["category"]["code"], term["type"]["code"]))
        assert found is not None, label.name
        assert (found["CodingSchemeDesignator"], found["CodeMeaning"]) == ("SCT", term["type"]["meaning"]), label.name
        if "typeModifier" in term:
            modifiers = {(m["CodeValue"], m["CodeMeaning"]) for m in found.get("Modifier", [])}
            modifier = term["typeModifier"]
            assert (modifier["code"], modifier["meaning"]) in modifiers, label.name
        elif found.get("recommendedDisplayRGBValue"):
            assert list(label.color) == found["recommendedDisplayRGBValue"], label.name


def test_a_dicom_seg_carries_the_organ_codes(shared_data, btcv_card):
    hd = pytest.importorskip("highdicom", reason="DICOM SEG needs highdicom (pip install -e '.[dicom,test]')")
    from medseg.dicom import build_segmentation, read_source
    from medseg.io import read_image

    series = shared_data / "examples" / "totalsegmentator" / "dicom_repaired"
    image, geometry = read_image(series)
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[2:6, 100:140, 100:140] = 2  # right kidney
    labels[8:12, 100:140, 300:340] = 13  # left adrenal gland
    seg = build_segmentation(labels, geometry, read_source(series), btcv_card, checkpoint_sha256="0" * 64)
    assert isinstance(seg, hd.seg.Segmentation)
    got = {s.SegmentLabel: (s.SegmentedPropertyTypeCodeSequence[0].CodeValue,
                            s.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning)
           for s in seg.SegmentSequence}
    assert got == {"right kidney": ("64033007", "Right"), "left adrenal gland": ("23451007", "Left")}


def test_btcv_labels_map_to_totalsegmentator_classes_by_name(btcv_labels):
    """scripts/ct_agreement.py compares with TotalSegmentator's map by class name, never by id: every BTCV organ
    finds its TotalSegmentator v2 class, and each a different one."""
    spec = importlib.util.spec_from_file_location("ct_agreement", REPO / "scripts" / "ct_agreement.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    organs = {i: name for i, name in btcv_labels.items() if i}
    pairs = module.match_by_name(organs, module.TOTALSEG_V2)
    named = {organs[i]: module.TOTALSEG_V2[c] for i, c in pairs.items() if c is not None}
    assert named == {"spleen": "spleen", "right kidney": "kidney_right", "left kidney": "kidney_left",
                     "gallbladder": "gallbladder", "esophagus": "esophagus", "liver": "liver", "stomach": "stomach",
                     "aorta": "aorta", "inferior vena cava": "inferior_vena_cava",
                     "portal and splenic veins": "portal_vein_and_splenic_vein", "pancreas": "pancreas",
                     "right adrenal gland": "adrenal_gland_right", "left adrenal gland": "adrenal_gland_left"}
    assert len(module.TOTALSEG_V2) == 117 and pairs[10] == 64 and pairs[8] == 52  # v2 ids, not v1's
