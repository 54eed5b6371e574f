"""The network registry: one architecture per module, built by name.

>>> from medseg.models import build_model
>>> net = build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.25)
"""

from __future__ import annotations

from typing import Any

from .attention_unet import AttentionUNet
from .base import SegmentationNetwork
from .plain_conv_unet import PlainConvUNet
from .residual_encoder_unet import ResidualEncoderUNet
from .unet import UNet
from .unetpp import UNetPlusPlus
from .vnet import VNet

__all__ = ["ARCHITECTURES", "SegmentationNetwork", "architecture_names", "build_model"]

ARCHITECTURES: dict[str, type[SegmentationNetwork]] = {
    "unet": UNet,
    "unetpp": UNetPlusPlus,
    "vnet": VNet,
    "attention_unet": AttentionUNet,
    "plain_conv_unet": PlainConvUNet,  # nnU-Net's, for imported nnU-Net models (medseg import-nnunet)
    "residual_encoder_unet": ResidualEncoderUNet,
}


def architecture_names() -> list[str]:
    return list(ARCHITECTURES)


def build_model(name: str, **kwargs: Any) -> SegmentationNetwork:
    """Build the architecture registered as `name` with its constructor arguments.

    Raises:
        KeyError: unknown name; the message lists the valid names.
        TypeError / ValueError: arguments the architecture does not take or accept.
    """
    try:
        cls = ARCHITECTURES[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; valid names: {', '.join(ARCHITECTURES)}") from None
    return cls(**kwargs)
