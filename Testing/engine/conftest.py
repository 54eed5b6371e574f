from __future__ import annotations

import pytest
import torch
from card_support import card_dict

from medseg.card import ModelCard
from medseg.checkpoint import save_checkpoint
from medseg.models import build_model


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.0625, depth=3).eval()


@pytest.fixture
def tiny_card(tiny_model) -> ModelCard:
    return ModelCard.from_dict(card_dict(tiny_model))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """The tiny network above saved as a checkpoint (patch 32x48x32), for command-line tests."""
    torch.manual_seed(0)
    model = build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.0625, depth=3)
    d = card_dict(model)
    d["patch_size"] = [32, 48, 32]
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors", model, ModelCard.from_dict(d))
