"""Training: Decathlon-layout data, patch sampling with augmentation, losses, the loop, ``medseg train``.

>>> from medseg.train import TrainConfig, train
>>> result = train(TrainConfig(data="../shared/data/hippocampus", out="runs/hippo", name="hippocampus-unet3d"))

Wire the command line with :func:`add_train_parser` (registers ``train``, ``func=cmd_train``).
"""

from .augment import PatchSampler
from .cli import add_train_parser, cmd_train
from .config import AugmentConfig, TrainConfig
from .data import read_dataset
from .loop import Progress, TrainResult, learning_rate, train
from .losses import boundary_weight_map, ce_dice_loss, make_loss, soft_dice_loss

__all__ = [
    "AugmentConfig",
    "PatchSampler",
    "Progress",
    "TrainConfig",
    "TrainResult",
    "add_train_parser",
    "boundary_weight_map",
    "ce_dice_loss",
    "cmd_train",
    "learning_rate",
    "make_loss",
    "read_dataset",
    "soft_dice_loss",
    "train",
]
