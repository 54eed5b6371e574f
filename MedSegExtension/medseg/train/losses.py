"""Training losses: soft Dice (V-Net), cross-entropy + Dice, U-Net's boundary-weighted cross-entropy, and
deep supervision over several heads.

Every loss takes logits ``(B, K, Z, Y, X)`` (soft-max applied here), integer targets ``(B, Z, Y, X)`` and an
optional voxel weight map ``(B, Z, Y, X)`` (used by ``boundary_ce`` only).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import LOSSES

__all__ = [
    "LossFn",
    "boundary_weight_map",
    "boundary_weighted_ce",
    "ce_dice_loss",
    "deep_supervision_weights",
    "make_loss",
    "soft_dice_loss",
    "supervised_loss",
]

LossFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def _one_hot(target: Tensor, num_classes: int) -> Tensor:
    return F.one_hot(target.long(), num_classes).movedim(-1, 1).to(torch.float32)


def soft_dice_loss(logits: Tensor, target: Tensor, squared: bool = True, smooth: float = 1e-5) -> Tensor:
    """``1 - mean`` over the foreground classes of the soft Dice of the whole batch.

    V-Net (Milletari et al. 2016): ``D = 2 sum(p g) / (sum(p^2) + sum(g^2))`` with ``p`` the soft-max
    probabilities and ``g`` the one-hot targets; ``squared=False`` gives the ``sum(p) + sum(g)`` form
    (nnU-Net). A perfect, confident prediction gives about 0.
    """
    probs = torch.softmax(logits.float(), dim=1)
    onehot = _one_hot(target, logits.shape[1])
    dims = (0, *range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)
    denom = (probs**2).sum(dims) + onehot.sum(dims) if squared else probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    return 1 - (dice[1:] if dice.numel() > 1 else dice).mean()


def ce_dice_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy plus soft Dice (``sum(p) + sum(g)`` form), equally weighted (UNet++, nnU-Net)."""
    return F.cross_entropy(logits.float(), target.long()) + soft_dice_loss(logits, target, squared=False)


def boundary_weighted_ce(logits: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """U-Net's weighted cross-entropy ``mean_x w(x) * -log p_{l(x)}(x)``, ``w`` from :func:`boundary_weight_map`."""
    ce = F.cross_entropy(logits.float(), target.long(), reduction="none")
    return (ce * weight).mean()


def _class_weights(label: np.ndarray, num_classes: int) -> np.ndarray:
    """``w_c`` per class: inverse square-root frequency, scaled so that its voxel mean is 1."""
    counts = np.bincount(label.reshape(-1), minlength=num_classes).astype(np.float64)
    w = np.zeros(num_classes)
    present = counts > 0
    w[present] = (counts[present] / counts.sum()) ** -0.5
    return w / (w[label].mean())


def _objects(label: np.ndarray, max_objects: int) -> list[np.ndarray]:
    """Boolean masks of the connected components of every foreground class (largest first per class)."""
    objects = []
    for c in np.unique(label):
        if c == 0:
            continue
        cc = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.GetImageFromArray((label == c).astype(np.uint8))))
        comp = sitk.GetArrayFromImage(cc)
        objects += [comp == k for k in range(1, min(int(comp.max()), max_objects) + 1)]
    return objects


def boundary_weight_map(label: np.ndarray, num_classes: int, w0: float = 10.0, sigma: float = 5.0,
                        max_objects: int = 20) -> np.ndarray:
    """U-Net's weight map ``w(x) = w_c(x) + w0 exp(-(d1(x) + d2(x))^2 / (2 sigma^2))`` (Ronneberger 2015).

    Objects are the connected components of each foreground class; ``d1``/``d2`` are the distances (voxels,
    SimpleITK's SignedMaurerDistanceMap, 0 inside) to the nearest and second-nearest object. The second term
    peaks (about ``w0``) in the narrow gaps between separate objects and along the faces where objects of
    different classes touch, where a network most easily merges them. ``w_c`` balances class frequencies.

    Args:
        label: ``(Z, Y, X)`` integer label map.
        num_classes: number of classes (background included).
        w0, sigma: the paper's 10 and 5 px.
        max_objects: the largest components per class that count as objects (bounds the run time).

    Returns:
        float32 ``(Z, Y, X)``.
    """
    w_c = _class_weights(label, num_classes)[label]
    d1 = np.full(label.shape, np.inf)
    d2 = np.full(label.shape, np.inf)
    for mask in _objects(label, max_objects):
        dist = sitk.SignedMaurerDistanceMap(sitk.GetImageFromArray(mask.astype(np.uint8)), insideIsPositive=False,
                                            squaredDistance=False, useImageSpacing=False)
        d = np.maximum(sitk.GetArrayFromImage(dist), 0.0)
        d2 = np.minimum(d2, np.maximum(d1, d))
        d1 = np.minimum(d1, d)
    border = np.where(np.isfinite(d2), w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2)), 0.0)
    return (w_c + border).astype(np.float32)


def deep_supervision_weights(n: int) -> list[float]:
    """Weights of heads 1..n (finest/last head last): halving per coarser head, summing to 1 (nnU-Net)."""
    raw = [0.5 ** (n - 1 - i) for i in range(n)]
    return [r / sum(raw) for r in raw]


def make_loss(name: str) -> LossFn:
    """The loss called ``name`` (``dice``, ``ce_dice``, ``boundary_ce``) as ``fn(logits, target, weight)``."""
    if name == "dice":
        return lambda logits, target, weight=None: soft_dice_loss(logits, target)
    if name == "ce_dice":
        return lambda logits, target, weight=None: ce_dice_loss(logits, target)
    if name == "boundary_ce":
        def fn(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
            if weight is None:
                raise ValueError("the boundary_ce loss needs the boundary weight map of each patch")
            return boundary_weighted_ce(logits, target, weight)
        return fn
    raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")


def supervised_loss(loss: LossFn, outputs: Tensor | list[Tensor], target: Tensor, weight: Tensor | None) -> Tensor:
    """`loss` of one output, or the deep-supervision sum over several heads' outputs (last = finest)."""
    if isinstance(outputs, Tensor):
        return loss(outputs, target, weight)
    weights = deep_supervision_weights(len(outputs))
    return sum(w * loss(out, target, weight) for w, out in zip(weights, outputs, strict=True))
