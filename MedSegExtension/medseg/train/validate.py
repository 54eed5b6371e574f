"""Validation on whole volumes, predicted as inference predicts them: Gaussian-blended windows of the training
patch (:func:`medseg.inference.inference_window`), so the scores that pick the best epoch are the scores users get."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..inference import inference_window
from ..models import SegmentationNetwork
from ..sliding_window import WindowOptions, sliding_window
from .data import Case

__all__ = ["dice_iou", "predict_volume", "validate"]


@torch.no_grad()
def predict_volume(model: SegmentationNetwork, image: Tensor, device: torch.device,
                   patch: tuple[int, ...]) -> Tensor:
    """Label map ``(Z, Y, X)`` of a whole image ``(C, Z, Y, X)``: windows of `patch` (overlap 0.5) blended."""

    def predict(x: Tensor) -> Tensor:
        with torch.autocast("cuda", enabled=device.type == "cuda"):
            return model(x).float()[:, None]

    options = WindowOptions(inference_window(image.shape[1:], patch, model.size_divisor), overlap=0.5)
    out = sliding_window(image, predict, model.num_classes, options, device=device)
    return torch.from_numpy(out.labels.astype(np.int64))


def dice_iou(pred: Tensor, target: Tensor, label: int) -> tuple[float, float]:
    """Dice and IoU of one label; NaN when it is absent from both (left out of the means)."""
    p, t = pred == label, target == label
    inter, union = int((p & t).sum()), int((p | t).sum())
    if union == 0:
        return float("nan"), float("nan")
    return 2 * inter / (int(p.sum()) + int(t.sum())), inter / union


def validate(model: SegmentationNetwork, cases: list[Case], labels: dict[int, str], device: torch.device,
             patch: tuple[int, ...]) -> dict[str, dict[str, float] | float]:
    """Mean Dice and IoU per foreground label over `cases` (windows of `patch`), and their means over the labels.

    Returns:
        ``{"dice": {name: v}, "iou": {name: v}, "mean_dice": v, "mean_iou": v}``.
    """
    was_training = model.training
    model.eval()
    scores = {c: [] for c in labels if c != 0}
    for case in cases:
        pred = predict_volume(model, case.image, device, patch)
        for c in scores:
            scores[c].append(dice_iou(pred, case.label.long(), c))
    model.train(was_training)
    dice = {labels[c]: float(np.nanmean([s[0] for s in v])) for c, v in scores.items()}
    iou = {labels[c]: float(np.nanmean([s[1] for s in v])) for c, v in scores.items()}
    return {"dice": dice, "iou": iou, "mean_dice": float(np.mean(list(dice.values()))),
            "mean_iou": float(np.mean(list(iou.values())))}
