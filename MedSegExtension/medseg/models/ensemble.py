"""Several weight sets of one network whose logits are averaged (nnU-Net's fold ensembles).

Not an architecture of the registry: a checkpoint whose card lists ``ensemble`` names builds one network per
name from the same ``architecture_args`` and stores its weights as ``members.<i>.<name>``
(``medseg.checkpoint``). The mean of the members' logits is what nnU-Net's predictor computes for several folds,
and, blended by the sliding window (a linear operation), equals its mean of the folds' blended logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .base import SegmentationNetwork

__all__ = ["Ensemble"]


class Ensemble(SegmentationNetwork):
    """The members' mean logits; every member has the same configuration."""

    def __init__(self, members: Sequence[SegmentationNetwork]):
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        first = members[0]
        if any(m.config != first.config for m in members):
            raise ValueError("ensemble members must share one configuration")
        super().__init__(first.spatial_dims, first.in_channels, first.num_classes)
        self._config = first.config
        self.members = nn.ModuleList(members)
        self.size_divisor = first.size_divisor
        if hasattr(first, "size_divisors"):
            self.size_divisors = first.size_divisors

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)
