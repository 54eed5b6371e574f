"""Input-domain warnings of a CT model on real CT and MR files: raw HU outside the card's window and inputs finer
than the card's spacing are normal; an MR, or a CT stored without its rescale to HU, still warns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from card_support import card_dict

from medseg.card import ModelCard
from medseg.domain import domain_warnings
from medseg.geometry import Geometry
from medseg.inference import Segmenter
from medseg.io import read_image
from medseg.models import build_model

# the normalisation and input_domain of the abdominal CT card (runs/abdominal-ct-organs, 3 mm, BTCV), as measured
# by medseg train on its 18 training cases (BTCV as stored: already clipped to the window)
CT_NORMALIZATION = {"kind": "ct", "window": [-125.0, 275.0], "mean": 87.34, "std": 55.51}
CT_DOMAIN = {"cases": 18, "extent_mm": [[266.0, 437.5], [266.0, 437.5], [282.0, 660.0]],
             "spacing_mm": [[2.07812, 3.41797], [2.07812, 3.41797], [2.5, 5.0]],
             "channels": [{"name": "CT", "p01": [-125.0, -125.0], "p99": [217.0, 275.0]}]}
EXAMPLES = "examples/totalsegmentator"


def _ct_card_dict() -> dict:
    torch.manual_seed(0)
    model = build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.0625, depth=3)
    d = card_dict(model, channels=("CT",))
    d["inputs"][0] |= {"modality": "CT", "normalization": dict(CT_NORMALIZATION)}
    d.update(name="tiny-ct", spacing=[3.0, 3.0, 3.0], input_domain=CT_DOMAIN)
    return d


@pytest.fixture(scope="module")
def ct_card() -> ModelCard:
    return ModelCard.from_dict(_ct_card_dict())


@pytest.fixture(scope="module")
def example_ct(shared_data):
    return read_image(shared_data / EXAMPLES / "example_ct.nii.gz")


def test_raw_hu_ct_gets_no_warning(ct_card, example_ct):
    image, geometry = example_ct
    low, high = np.percentile(image[::4, ::4, ::4], (1, 99))
    assert low < -900 and high > 275  # raw HU: air and bone far outside the card's window [-125, 275]
    assert domain_warnings(ct_card, image[None], geometry) == []


def test_segmenter_reports_no_warning_on_the_example_ct(example_ct):
    torch.manual_seed(0)
    d = _ct_card_dict()
    model = build_model("unet", **d["architecture_args"]).eval()
    from medseg.checkpoint import LoadedModel

    d["spacing"] = [6.0, 6.0, 6.0]  # every other voxel of the 3 mm example at 6 mm: the same field of view, faster
    segmenter = Segmenter(LoadedModel(model, ModelCard.from_dict(d), "tiny-ct"), device="cpu")
    image, geometry = example_ct
    coarse = Geometry((6.0, 6.0, 6.0), geometry.origin, geometry.direction)
    assert segmenter.segment(image[::2, ::2, ::2], coarse).warnings == []


def test_mr_fed_to_the_ct_model_warns(ct_card, shared_data):
    image, geometry = read_image(shared_data / EXAMPLES / "example_mr_sm.nii.gz")
    (message,) = [m for m in domain_warnings(ct_card, image[None], geometry) if "intensities" in m]
    assert "input channel 'CT' (CT) has no negative intensities: 1st percentile -2 clipped to the card's window " \
           "-125 to 275 HU" in message
    assert "not an MR, not a CT stored without its rescale to HU" in message


def test_ct_stored_without_rescale_warns(ct_card, example_ct):
    image, geometry = example_ct
    unsigned = np.clip(image + 1024, 0, 4095)  # 0..4095: HU + 1024, as stored before the DICOM rescale
    (message,) = domain_warnings(ct_card, unsigned[None], geometry)
    assert "has no negative intensities: 1st percentile 12 clipped" in message  # air at 12 (HU -1012)


def test_fine_ct_is_resampled_not_flagged_but_thick_slices_are(ct_card, shared_data, example_ct):
    image, geometry = read_image(shared_data / "examples" / "spleen" / "spleen_2_ct.nii.gz")
    assert geometry.spacing[0] < 0.8  # 0.79 mm in-plane: 2.6x finer than the finest training case (2.08 mm)
    messages = domain_warnings(ct_card, image[None], geometry)
    assert not any("spacing" in m or "intensities" in m for m in messages)
    # a card without a spacing runs at the input's own spacing, where a much finer input still means something
    unresampled = ModelCard.from_dict(_ct_card_dict() | {"spacing": None})
    (spacing,) = [m for m in domain_warnings(unresampled, image[None], geometry) if "voxel spacing" in m]
    assert "0.7949 mm along L (2.61x below the smallest, 2.078 mm)" in spacing
    # slices much thicker than any training case are flagged whatever the card's spacing
    ct, ct_geometry = example_ct
    thick = Geometry((3.0, 3.0, 12.0), ct_geometry.origin, ct_geometry.direction)
    (message,) = domain_warnings(ct_card, ct[::4][None], thick)
    assert "voxel spacing is far outside" in message and "12 mm along S (2.4x the largest, 5 mm)" in message
