"""Explanations of a segmentation: Grad-CAM activation maps and the entropy of the predicted probabilities.

Grad-CAM for segmentation (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017; Vinogradova, Dibrov, Myers, "Towards Interpretable Semantic
Segmentation via Gradient-Weighted Class Activation Mapping", AAAI 2020, arXiv:2002.11434): for a class
``c`` and a set ``M`` of voxels, the score is the sum of the class's logits over ``M``,
``y_c = sum_{v in M} logits[c, v]``; with ``A_k`` the feature maps of a chosen layer,

    alpha_k = mean over space of d y_c / d A_k
    cam     = ReLU(sum_k alpha_k A_k), up-sampled (bi/trilinear) to the input's grid.

:func:`grad_cam_window` computes the map of one window (batch of one), already padded to the network's
size divisor; the sliding-window inference calls it per window and stitches the windows. The map is raw
(its scale depends on the window), so normalise after stitching with :func:`normalize_map`.

:func:`entropy` gives the voxel-wise uncertainty of the soft-max probabilities, normalised to [0, 1].
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models.attention_unet import AttentionUNet
from .models.base import SegmentationNetwork
from .models.ensemble import Ensemble
from .models.plain_conv_unet import PlainConvUNet
from .models.residual_encoder_unet import ResidualEncoderUNet
from .models.unet import UNet
from .models.unetpp import UNetPlusPlus
from .models.vnet import VNet

__all__ = ["default_cam_layer", "entropy", "grad_cam_window", "normalize_map"]

MapT = TypeVar("MapT", np.ndarray, Tensor)

# The last full-resolution decoder block before each architecture's 1x1 head (see default_cam_layer).
_DEFAULT_LAYERS: dict[type[nn.Module], Callable[[Any], str]] = {
    UNet: lambda m: f"decoders.{len(m.decoders) - 1}",
    UNetPlusPlus: lambda m: f"nodes.x0_{m.prune_level}",
    VNet: lambda m: f"up_stages.{len(m.up_stages) - 1}",
    AttentionUNet: lambda m: f"decoder.{len(m.decoder) - 1}.conv",
    PlainConvUNet: lambda m: f"decoder.stages.{len(m.decoder.stages) - 1}",
    ResidualEncoderUNet: lambda m: f"decoder.stages.{len(m.decoder.stages) - 1}",
    # several folds: the first member's layer (the map explains that member's share of the mean logits)
    Ensemble: lambda m: f"members.0.{default_cam_layer(m.members[0])}",
}


def default_cam_layer(model: nn.Module) -> str:
    """Name (as in ``model.named_modules()``) of the layer whose activations Grad-CAM uses by default.

    The last decoder block before the 1x1 head: it is at full resolution and, being one linear layer away
    from the logits, class-discriminative (Vinogradova et al. 2020 use the last decoder layers too).
    Per architecture:

    * ``unet``: ``decoders.{depth - 2}`` (``decoders.3`` at depth 5), the last double convolution.
    * ``unetpp``: ``nodes.x0_{L}`` with ``L`` the current prune level, the node ``X(0, L)`` that feeds
      the head :meth:`~medseg.models.unetpp.UNetPlusPlus.forward` uses (``nodes.x0_4`` unpruned). In accurate
      mode the output also averages heads 1..L-1, which do not pass through ``X(0, L)``; the map then
      explains head ``L``'s share of the score.
    * ``vnet``: ``up_stages.3``, the last residual decoder stage (after its PReLU).
    * ``attention_unet``: ``decoder.3.conv``, the double convolution of the finest decoder level (the level
      module itself returns a tuple with the attention coefficients).
    * ``plain_conv_unet``, ``residual_encoder_unet`` (nnU-Net's): ``decoder.stages.{n - 2}``, the last decoder stage;
      an :class:`~medseg.models.ensemble.Ensemble` of folds: that layer of its first member.

    Any other module name can be given to :func:`grad_cam_window`, e.g. the bottleneck (``encoders.4``,
    ``nodes.x4_0``, ``down_stages.3``, ``encoder.4``) for a coarser, more semantic map.

    Raises:
        ValueError: `model` is not one of the registered architectures (pass ``layer`` explicitly then).
    """
    for cls, name in _DEFAULT_LAYERS.items():
        if isinstance(model, cls):
            return name(model)
    known = ", ".join(cls.__name__ for cls in _DEFAULT_LAYERS)
    raise ValueError(f"no default Grad-CAM layer for {type(model).__name__} (known: {known}); pass layer=")


def grad_cam_window(
    model: SegmentationNetwork,
    x: Tensor,
    class_index: int,
    layer: str | None = None,
    region: Tensor | None = None,
) -> Tensor:
    """Raw Grad-CAM map of class `class_index` for one window `x`.

    Args:
        model: a network following :class:`~medseg.models.base.SegmentationNetwork` (eager, not scripted).
            It is evaluated in eval mode (running batch-norm statistics, no dropout) and every module's
            train/eval flag is restored afterwards; parameters keep their ``requires_grad`` and no ``.grad``
            is accumulated on them.
        x: the window ``(1, in_channels, *spatial)``, ``spatial`` = ``(H, W)`` or ``(D, H, W)``, each size a
            multiple of ``model.size_divisor`` (pad with :func:`medseg.models.padding.pad_to_multiple`).
        class_index: the class explained, ``0 <= class_index < num_classes``.
        layer: module name in ``model.named_modules()``; default :func:`default_cam_layer`. A module whose
            output is a tuple is explained through its first element; it must run exactly once per forward.
        region: voxels ``(*spatial)`` whose logits make the score, boolean (or non-negative weights). Default:
            the voxels whose arg-max is `class_index` (``logit > 0`` for a one-channel sigmoid network); if
            the class is predicted nowhere in the window, all voxels, so that the map shows what speaks for
            the class where it was not found.

    Returns:
        The map ``(*spatial)``, float32, non-negative and not normalised, on `x`'s device.

    Note:
        At the default layer the head is a 1x1 convolution, so the gradient is the head's weights and the map
        is exactly ``ReLU(logits[c] - bias[c]) * |M| / N`` (``N`` voxels, ``|M|`` in the region). A network
        whose class-``c`` logit separates the class but stays below the head's bias (common when undertrained,
        or when the evidence is carried by the other classes' logits) gives an all-zero map there.

    Raises:
        ValueError: bad `x`, `class_index`, `layer` or `region`; a layer that does not run, runs more than
            once, or does not reach the output (e.g. a UNet++ node beyond the current prune level).
    """
    _check_window(model, x, class_index)
    name = default_cam_layer(model) if layer is None else layer
    module = _find_module(model, name)
    with torch.inference_mode(False), _eval_mode(model):
        x = x.clone() if x.is_inference() else x
        act, logits = _forward_capturing(model, module, name, x)
        with torch.enable_grad():
            score = _class_score(logits, class_index, region)
        grad = _activation_gradient(score, act, name)
    return _combine(act.detach(), grad, tuple(x.shape[2:]))


def normalize_map(cam: MapT) -> MapT:
    """Scale a non-negative map to [0, 1] by its maximum.

    Args:
        cam: a map of any shape, numpy array or tensor (e.g. a stitched Grad-CAM volume ``(D, H, W)``).
            Negative values (none in a Grad-CAM map) are clipped to 0.

    Returns:
        The same kind and shape, floating point; a map without a positive value is all zeros.
    """
    if isinstance(cam, np.ndarray):
        values = np.clip(np.asarray(cam, dtype=np.result_type(cam.dtype, np.float32)), 0, None)
        peak = values.max(initial=0.0)
        return values / peak if peak > 0 else np.zeros_like(values)
    values = (cam if cam.is_floating_point() else cam.float()).clamp(min=0)
    peak = values.max() if values.numel() else values.new_zeros(())
    return values / peak if peak > 0 else torch.zeros_like(values)


def entropy(probabilities: Tensor) -> Tensor:
    """Voxel-wise Shannon entropy of class probabilities, normalised to [0, 1].

    ``H = -sum_c p_c ln p_c`` (nats, with ``0 ln 0 = 0``) divided by ``ln C``, the entropy of the uniform
    distribution over the ``C`` classes: 0 for a certain (one-hot) voxel, 1 for a uniform one, and values
    comparable between models with different numbers of classes.

    Args:
        probabilities: ``(C, *spatial)``, summing to 1 over the classes (soft-max output). ``C == 1`` is read
            as a sigmoid output ``p`` of the binary distribution ``(1 - p, p)``.

    Returns:
        ``(*spatial)``, floating point (at least float32).

    Raises:
        ValueError: fewer than two dimensions.
    """
    if probabilities.ndim < 2:
        raise ValueError(f"probabilities must be (C, *spatial), got shape {tuple(probabilities.shape)}")
    p = probabilities.to(torch.promote_types(probabilities.dtype, torch.float32)).clamp(0, 1)
    if p.shape[0] == 1:
        p = torch.cat([1 - p, p])
    nats = -torch.special.xlogy(p, p).sum(dim=0)
    return (nats / math.log(p.shape[0])).clamp(0, 1)


def _check_window(model: SegmentationNetwork, x: Tensor, class_index: int) -> None:
    """ValueError unless `x` is one padded window ``(1, C, *spatial)`` and `class_index` a class of `model`."""
    if x.ndim != model.spatial_dims + 2 or x.shape[0] != 1 or x.shape[1] != model.in_channels:
        expected = ", ".join(["1", str(model.in_channels)] + ["S"] * model.spatial_dims)
        raise ValueError(f"x must be one window ({expected}), got shape {tuple(x.shape)}")
    divisor = model.size_divisor
    if any(s % divisor for s in x.shape[2:]):
        raise ValueError(
            f"window size {tuple(x.shape[2:])} is not a multiple of {divisor}; pad it with "
            "medseg.models.padding.pad_to_multiple(x, model.size_divisor) first"
        )
    if isinstance(class_index, bool) or not isinstance(class_index, int):
        raise ValueError(f"class_index must be an integer, got {class_index!r}")
    if not 0 <= class_index < model.num_classes:
        raise ValueError(f"class_index must be in 0..{model.num_classes - 1}, got {class_index}")


def _find_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name`; ValueError listing the valid names otherwise."""
    modules = dict(model.named_modules())
    modules.pop("", None)
    if name not in modules:
        raise ValueError(f"unknown layer {name!r}; valid names: {', '.join(modules)}")
    return modules[name]


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put `model` in eval mode and give every module its own train/eval flag back afterwards."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _forward_capturing(model: nn.Module, module: nn.Module, name: str, x: Tensor) -> tuple[Tensor, Tensor]:
    """Run `model` on `x`, returning the activations ``(1, K, *s)`` of `module` and the logits.

    The activations are replaced by a detached leaf that requires grad, and autograd is switched on from
    there: only the part of the network after the layer records a graph (whatever the parameters'
    ``requires_grad``), which keeps the memory of a 3D window close to that of inference. The hook passes
    on a copy, so in-place operations after the layer (``ReLU(inplace=True)``) leave the activations intact.
    """
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> object:
        first = output[0] if isinstance(output, tuple) and output else output
        if not isinstance(first, Tensor) or not first.is_floating_point():
            raise ValueError(f"layer {name!r} does not output a floating-point tensor")
        torch.set_grad_enabled(True)  # until the no_grad block below exits
        captured.append(first.detach().requires_grad_(True))
        copy = captured[-1].clone()
        return (copy, *output[1:]) if isinstance(output, tuple) else copy

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ValueError(
            f"layer {name!r} ran {len(captured)} times in the forward pass; choose a layer that runs once "
            "(the default layer does)"
        )
    act = captured[0]
    if act.ndim != x.ndim:
        raise ValueError(f"layer {name!r} outputs shape {tuple(act.shape)}, not (1, K, *spatial)")
    return act, logits


def _class_score(logits: Tensor, class_index: int, region: Tensor | None) -> Tensor:
    """Sum of the logits ``(1, C, *spatial)`` of `class_index` over the region (see grad_cam_window)."""
    maps = logits[0, class_index]
    if region is None:
        weights = _predicted_region(logits, class_index)
    else:
        if tuple(region.shape) != tuple(maps.shape):
            raise ValueError(f"region must have the window's shape {tuple(maps.shape)}, got {tuple(region.shape)}")
        weights = region.detach().to(device=maps.device, dtype=maps.dtype)
        if not bool((weights != 0).any()):
            raise ValueError("region is empty; pass None to use the voxels predicted as the class")
    return (maps * weights).sum()


def _predicted_region(logits: Tensor, class_index: int) -> Tensor:
    """Voxels ``(*spatial)`` predicted as `class_index`, or all voxels where there are none."""
    scores = logits.detach()[0]
    predicted = scores[0] > 0 if scores.shape[0] == 1 else scores.argmax(dim=0) == class_index
    if not bool(predicted.any()):
        predicted = torch.ones_like(predicted)
    return predicted.to(logits.dtype)


def _activation_gradient(score: Tensor, act: Tensor, name: str) -> Tensor:
    """``d score / d act`` ``(1, K, *s)``; ValueError when the layer does not reach the output."""
    unreached = ValueError(f"layer {name!r} does not reach the output used by forward (e.g. a pruned UNet++ node)")
    if not score.requires_grad:
        raise unreached
    (grad,) = torch.autograd.grad(score, act, allow_unused=True)
    if grad is None:
        raise unreached
    return grad


def _combine(act: Tensor, grad: Tensor, size: tuple[int, ...]) -> Tensor:
    """``ReLU(sum_k alpha_k A_k)`` from activations and gradients ``(1, K, *s)``, up-sampled to `size`."""
    act, grad = act.float(), grad.float()
    alpha = grad.mean(dim=tuple(range(2, grad.ndim)), keepdim=True)
    cam = F.relu((alpha * act).sum(dim=1, keepdim=True))
    if tuple(cam.shape[2:]) != size:
        mode = "bilinear" if len(size) == 2 else "trilinear"
        cam = F.interpolate(cam, size=size, mode=mode, align_corners=False)
    return cam[0, 0]
