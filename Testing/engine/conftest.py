from __future__ import annotations

import pytest
import torch
from card_support import card_dict

from medseg.card import ModelCard
from medseg.models import build_model


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.0625, depth=3).eval()


@pytest.fixture
def tiny_card(tiny_model) -> ModelCard:
    return ModelCard.from_dict(card_dict(tiny_model))
