"""A network whose right answer is known voxel by voxel (engine tests of inference and post-processing)."""

from __future__ import annotations

import torch

from medseg.models.base import SegmentationNetwork


class Threshold(SegmentationNetwork):
    """Class 1 where the (normalised) input is positive: a network whose right answer is known voxel by voxel."""

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, num_classes: int = 2):
        super().__init__(spatial_dims, in_channels, num_classes)
        self.scale = torch.nn.Parameter(torch.tensor(50.0))

    def forward(self, x):
        s = x[:, :1] * self.scale
        return torch.cat([-s, s], 1)
