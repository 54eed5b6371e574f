"""The contract every MedSeg network follows."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["SegmentationNetwork"]


class SegmentationNetwork(nn.Module):
    """Base class: a network mapping `(B, in_channels, *spatial)` to logits `(B, num_classes, *spatial)`.

    Subclasses call ``super().__init__(spatial_dims, in_channels, num_classes, **other_args)`` with every
    constructor argument, so that :attr:`config` rebuilds the same network (checkpoints store it).

    Attributes:
        spatial_dims: 2 or 3.
        in_channels: image channels (modalities) expected at the input.
        num_classes: output channels, background included.
        size_divisor: every spatial size of the input must be a multiple of this (inference pads with
            mirrored borders to reach it, see ``medseg.models.padding``).
    """

    size_divisor = 1
    __jit_unused_properties__ = ["config"]

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int, **args: Any):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self._config = {"spatial_dims": spatial_dims, "in_channels": in_channels, "num_classes": num_classes, **args}

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable) that rebuild this network."""
        return dict(self._config)

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def linear_head(self) -> nn.Module | None:
        """The final 1x1 convolution when ``forward(x) == head(forward_features(x))``, else None.

        Inference uses it to blend the few feature channels instead of many class logits (the head is
        linear, so blending commutes with it) and applies the head once per voxel at the end.
        """
        return None

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - only with a linear head
        raise NotImplementedError
