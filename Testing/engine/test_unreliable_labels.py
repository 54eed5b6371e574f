"""A label the model's own validation found unreliable (Dice < 0.5 in its card) gets a warning with every result, so
a volume table never shows its volume unmarked (an abdominal CT model that misses small organs)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from card_support import card_dict

from medseg.card import ModelCard
from medseg.checkpoint import LoadedModel
from medseg.geometry import Geometry
from medseg.inference import Segmenter
from medseg.models.base import SegmentationNetwork

GEOMETRY = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))
LABELS = [{"id": 0, "name": "background", "color": [0, 0, 0]}, {"id": 1, "name": "liver", "color": [255, 0, 0]},
          {"id": 2, "name": "pancreas", "color": [0, 255, 0]}]


class Constant(SegmentationNetwork):
    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, num_classes: int = 3):
        super().__init__(spatial_dims, in_channels, num_classes)
        self.bias = torch.nn.Parameter(torch.tensor([0.0, 1.0, 0.0]))

    def forward(self, x):
        return torch.zeros((x.shape[0], 3, *x.shape[2:])) + self.bias.view(1, 3, 1, 1, 1)


def _card(metrics: dict) -> tuple[Constant, ModelCard]:
    model = Constant()
    d = card_dict(model)
    d.update(architecture_args=model.config, patch_size=[8, 8, 8], spacing=None, labels=LABELS, metrics=metrics,
             name="abdomen\x1b[31m")
    d["inputs"][0]["normalization"] = {"kind": "none"}
    return model, ModelCard.from_dict(d)


@pytest.mark.parametrize(("metrics", "weak"), [
    ({"dice": {"liver": 0.9, "pancreas": 0.12}}, [("pancreas", 0.12)]),
    # the full-resolution evaluation wins over the training run's figures
    ({"dice": {"liver": 0.9, "pancreas": 0.9},
      "evaluation": {"labels": {"liver": {"dice": 0.45}, "pancreas": {"dice": 0.6}}}}, [("liver", 0.45)]),
    ({"dice": {"liver": 0.9, "pancreas": 0.5}}, []),  # 0.5 itself is not below
    ({}, []),  # nothing measured: nothing claimed
    ({"dice": {"liver": "0.1", "pancreas": True}}, []),  # not numbers: ignored, not trusted
    ({"dice": ["liver"]}, []),
])
def test_unreliable_labels_come_from_the_cards_validation(metrics, weak):
    assert _card(metrics)[1].unreliable_labels() == weak


def test_every_result_of_such_a_model_carries_the_warning():
    model, card = _card({"dice": {"liver": 0.93, "pancreas": 0.08}})
    result = Segmenter(LoadedModel(model, card, Path("abdomen")), device="cpu").segment(
        np.random.default_rng(0).normal(size=(1, 8, 8, 8)).astype(np.float32), GEOMETRY)
    weak = [w for w in result.warnings if "unreliably" in w]
    assert len(weak) == 1
    assert "1 of its 2 labels" in weak[0] and "pancreas 0.080" in weak[0] and "liver" not in weak[0]
    assert "\x1b" not in weak[0]  # the card's text is shown printable
    assert weak[0] in result.report()["warnings"]


def test_a_well_validated_model_gets_no_such_warning():
    model, card = _card({"dice": {"liver": 0.93, "pancreas": 0.81}})
    result = Segmenter(LoadedModel(model, card, Path("abdomen")), device="cpu").segment(
        np.random.default_rng(0).normal(size=(1, 8, 8, 8)).astype(np.float32), GEOMETRY)
    assert not [w for w in result.warnings if "unreliably" in w]
