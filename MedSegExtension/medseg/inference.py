"""The in-memory inference API behind the Slicer "Segment" button, ``medseg segment`` and the benchmarks.

>>> segmenter = Segmenter("hippocampus-unet3d", device="auto")     # loads once; reuse for many volumes
>>> result = segmenter.segment(image, geometry, SegmentOptions(tta=True, uncertainty=True))
>>> result.labels.shape == image.shape, result.measurements[0].volume_ml

Steps: check the channels against the card -> crop to the ROI (the input's own index space) -> permute and
flip into the card's voxel orientation (no interpolation) -> normalise -> resample to the model's spacing
-> sliding-window inference (Gaussian-blended, optional mirroring TTA, 2D networks slice by slice) -> back
to the input grid (probabilities resampled, then arg-max: class by class with a running maximum unless the
maps were asked for, so a CT never holds one full-grid map per class; the permutation and flips undone) -> paste the
ROI back -> post-process -> Grad-CAM -> measure. Every output is on the input's exact grid.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .calibration import temper, temperature_of, volume_interval_of
from .card import UNRELIABLE_DICE, ModelCard
from .catalog import resolve_checkpoint
from .checkpoint import LoadedModel, load_checkpoint
from .device import FallbackRunner, autocast, resolve_device, resolve_precision
from .domain import domain_warnings
from .geometry import Geometry
from .io import check_not_constant, check_volume
from .measure import LabelMeasurement, measure_labels
from .orientation import Reorientation, orientation_code, reorientation
from .postprocess import PostprocessOptions, card_default, postprocess
from .preprocess import crop_nonzero, crop_roi, normalize, paste_roi, resample, target_shape
from .review import Review, ReviewOptions, review_result
from .sliding_window import CancelToken, ModelOutputError, Progress, StitchOutputs, WindowOptions, sliding_window
from .text import printable

__all__ = ["ModelOutputError", "SegmentOptions", "SegmentationResult", "Segmenter", "inference_window"]

log = logging.getLogger(__name__)
_SPACING_TOLERANCE = 0.01  # resample only when the spacing differs from the model's by more than 1 %
_RING_FP16_BYTES = 1 << 30  # class sums above this size accumulate in float16
_WARNED_NO_ORIENTATION: set[str] = set()  # models whose card has no orientation, warned about once


@dataclass(frozen=True)
class SegmentOptions:
    """Per-run options (the model and device belong to the :class:`Segmenter`).

    Attributes:
        overlap: window overlap in [0, 1); 0.5 as nnU-Net, 0.25 is faster.
        tta: mirroring test-time augmentation over every flip combination (8 passes in 3D, 4 in 2D).
        batch_size: windows per forward (None: 1 on the CPU, 4 on a GPU; halved on out-of-memory).
        precision: auto (fp16 autocast on CUDA, bf16 on CPUs with native bfloat16, else fp32), fp32, bf16,
            fp16.
        probabilities: return every class's probability map.
        uncertainty: return the normalised entropy map (and the TTA variance map with ``tta``).
        activation_classes: label names or ids to explain with Grad-CAM.
        activation_layer: module name for Grad-CAM (None: ``explain.default_cam_layer``).
        roi: (i0, i1, j0, j1, k0, k1) half-open index box in the input's own index space (cropped before the
            reorientation to the card's orientation); results are pasted back into the full grid.
        postprocess: connected-component clean-up per label; None (the default): the model card's default
            (``ModelCard.postprocess``; none for a card without one). ``PostprocessOptions()`` turns it off.
            ``SegmentationResult.postprocessing["source"]`` says which applied: ``"card"`` or ``"options"``.
        measure: compute per-label measurements.
        prune_level, accurate: UNet++ only; level 1-4 and head averaging.
        sigma_scale, border_margin: window blending and mirrored border (see ``sliding_window``).
        resample: run at the model card's spacing (when it differs from the input's by over 1 %).
        review: rank the regions a reader should check and score each segment's confidence
            (``SegmentationResult.review``, ``report()["review"]``; see ``medseg.review``). It needs the normalised
            entropy, so it computes that map (and keeps it in ``SegmentationResult.entropy``) even without
            ``uncertainty``. Off by default, like ``uncertainty``: a caller asks for what it shows.
        review_options: threshold, band margin and limits of the review (``medseg.review.ReviewOptions``).
    """

    overlap: float = 0.5
    tta: bool = False
    batch_size: int | None = None
    precision: str = "auto"
    probabilities: bool = False
    uncertainty: bool = False
    activation_classes: tuple[str | int, ...] = ()
    activation_layer: str | None = None
    roi: tuple[int, int, int, int, int, int] | None = None
    postprocess: PostprocessOptions | None = None
    measure: bool = True
    prune_level: int | None = None
    accurate: bool = False
    sigma_scale: float = 0.125
    border_margin: int = 0
    resample: bool = True
    review: bool = False
    review_options: ReviewOptions = field(default_factory=ReviewOptions)


@dataclass
class SegmentationResult:
    """Everything one run produced, on the input's grid (arrays indexed [k, j, i])."""

    labels: np.ndarray
    geometry: Geometry
    card: ModelCard
    probabilities: np.ndarray | None = None  # (K, Z, Y, X) float32
    entropy: np.ndarray | None = None  # (Z, Y, X) in [0, 1]
    tta_variance: np.ndarray | None = None  # (Z, Y, X): variance over flips of the chosen class's probability
    activations: dict[str, np.ndarray] = field(default_factory=dict)  # label name -> Grad-CAM in [0, 1]
    measurements: list[LabelMeasurement] = field(default_factory=list)
    postprocessing: dict[str, Any] = field(default_factory=dict)  # medseg.postprocess's record + "source"
    info: dict[str, Any] = field(default_factory=dict)  # device, precision, windows, seconds, options
    warnings: list[str] = field(default_factory=list)  # input unlike the training data (medseg.domain), for the user
    review: Review | None = None  # regions to check and segment confidence (SegmentOptions.review)

    def report(self) -> dict[str, Any]:
        """JSON-ready summary: model, geometry, measurements, post-processing, run information."""
        return {
            "model": {"name": self.card.name, "architecture": self.card.architecture,
                      "engine_version": self.card.engine_version},
            "geometry": {"shape_kji": list(self.labels.shape), "spacing_mm": list(self.geometry.spacing),
                         "origin_lps_mm": list(self.geometry.origin),
                         "direction": [list(r) for r in self.geometry.direction]},
            "coordinates": "centroids and boxes in LPS (ITK/DICOM) and RAS (Slicer) millimetres",
            "labels": [m.to_dict() for m in self.measurements],
            "postprocessing": self.postprocessing,
            "run": self.info,
            "warnings": list(self.warnings),
            **({} if self.review is None else {"review": self.review.to_dict()}),
        }


@dataclass
class _Run:
    """One segment() call's state between its steps."""

    image: np.ndarray  # (C, Z, Y, X) as given
    options: SegmentOptions
    precision: str
    box: list[tuple[int, int]] | None  # the ROI in array order
    x: torch.Tensor  # normalised, cropped, reoriented, on the network's grid
    crop_shape: tuple[int, ...]  # the cropped input grid in the card's orientation
    cam_labels: list
    cancel: CancelToken | None
    orient: Reorientation  # cropped input grid -> the card's orientation
    seconds: dict[str, float] = field(default_factory=dict)


def _apply_head(head: torch.nn.Module, device: torch.device):
    """A 1x1 convolution head as a matrix product: blended features `(P, N, F)` -> logits `(P, N, K)`."""
    weight = head.weight.detach().reshape(head.out_channels, head.in_channels).t().float().to(device)
    bias = torch.zeros(head.out_channels, device=device) if head.bias is None else head.bias.detach().float()

    def apply(features: torch.Tensor) -> torch.Tensor:
        return torch.addmm(bias.to(device), features.reshape(-1, features.shape[-1]), weight).reshape(
            *features.shape[:-1], -1)

    return apply


def _reliability_warnings(card: ModelCard) -> list[str]:
    """One warning naming the labels the card's own validation found unreliable (``ModelCard.unreliable_labels``),
    so that a volume table never shows their volumes without it; none for a card without such labels."""
    weak = card.unreliable_labels()
    if not weak:
        return []
    names = ", ".join(f"{printable(name)} {dice:.3f}" for name, dice in weak)
    return [f"model '{printable(card.name)}' segments {len(weak)} of its {len(card.foreground_labels)} labels "
            f"unreliably (validation Dice below {UNRELIABLE_DICE:g}: {names}): do not use their outlines or volumes "
            "without checking and correcting them"]


def _flip_sets(spatial_dims: int, tta: bool, mirror_axes: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """Flip axes of a `(B, C, *spatial)` tensor for each pass: () alone, or every combination (nnU-Net) of the
    spatial axes, or of `mirror_axes` (spatial axes counted from 0, a card's ``inference.mirror_axes``)."""
    axes = tuple(2 + a for a in (range(spatial_dims) if mirror_axes is None else sorted(mirror_axes)))
    if not tta:
        return [()]
    return [combo for r in range(len(axes) + 1) for combo in itertools.combinations(axes, r)]


def _resampled_argmax(probabilities: torch.Tensor, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
    """``resample(probabilities, shape).argmax(0)`` class by class: the same labels (the first class wins a tie,
    as in ``argmax``) holding two float maps of ``shape`` instead of one per class."""
    if tuple(probabilities.shape[1:]) == tuple(shape):
        return probabilities.argmax(0).numpy().astype(dtype)
    best = resample(probabilities[:1], shape)[0]
    labels = np.zeros(best.shape, dtype=dtype)
    for k in range(1, probabilities.shape[0]):
        candidate = resample(probabilities[k: k + 1], shape)[0]
        labels[(candidate > best).numpy()] = k
        torch.maximum(best, candidate, out=best)
        del candidate
    return labels


def inference_window(shape: Sequence[int], patch: Sequence[int], size_divisor: int) -> tuple[int, ...]:
    """The sliding window for a volume of `shape`: the training patch, each axis shrunk to the volume's size
    (rounded up to the network's size divisor) where the volume is smaller; a 1 in `patch` (2D) stays 1.

    Never larger than the patch: a network with instance norm trained on patches smaller than the volume
    predicts much worse on a whole larger volume (measured: UNet++ on hippocampus Dice 0.65 / 0.78 whole
    vs 0.83 / 0.84 in patch-sized windows), so inference and training validation both use this window.
    """
    return tuple(p if p == 1 else min(p, -(-s // size_divisor) * size_divisor)
                 for s, p in zip(shape, patch, strict=True))


class Segmenter:
    """A loaded model on its device, ready to segment many volumes (Slicer keeps one per model).

    Args:
        model: bundled model name, checkpoint path, or an already loaded :class:`LoadedModel`.
        device: auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps.
        threads: CPU threads for torch (None: torch's default, one per physical core).
    """

    def __init__(self, model: str | os.PathLike[str] | LoadedModel, device: str = "auto",
                 threads: int | None = None):
        self.device = resolve_device(device)
        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        loaded = model if isinstance(model, LoadedModel) else load_checkpoint(resolve_checkpoint(model))
        self.card, self.path = loaded.card, loaded.path
        self.model = loaded.model.to(self.device).eval()
        patch = self.card.patch_size
        divisors = getattr(self.model, "size_divisors", None) or (self.model.size_divisor,) * len(patch)
        if any(p % d for p, d in zip(patch, divisors, strict=True)):
            raise ValueError(f"model {self.card.name!r}: patch_size {list(patch)} must be multiples of "
                             f"{list(divisors)} for {self.card.architecture}; fix the card")
        self.run_as: dict[str, Any] = dict(self.card.inference or {})  # the card's inference block, see ModelCard

    # -- inputs ---------------------------------------------------------------------------------------------
    def _channels(self, channels: np.ndarray | Sequence[np.ndarray], geometry: Geometry) -> np.ndarray:
        if isinstance(channels, np.ndarray):
            arrays = list(channels) if channels.ndim == 4 else [channels]
        else:
            arrays = list(channels)
        names = [c.name for c in self.card.inputs]
        if len(arrays) != len(names):
            raise ValueError(f"model {self.card.name!r} expects {len(names)} input channel(s) ({', '.join(names)}) "
                             f"but {len(arrays)} were given; give one volume per channel in that order")
        for array, name in zip(arrays, names, strict=True):
            check_volume(np.asarray(array), geometry, f"input channel {name!r}")
            check_not_constant(np.asarray(array), f"input channel {name!r}")
        shapes = {np.asarray(a).shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"input channels {', '.join(names)} have different shapes {sorted(shapes)}; resample "
                             f"them onto one grid (the first channel's)")
        return np.stack([np.asarray(a, dtype=np.float32) for a in arrays])

    def _set_unetpp(self, options: SegmentOptions) -> None:
        if hasattr(self.model, "set_inference"):
            self.model.set_inference(prune_level=options.prune_level or 4, accurate=options.accurate)
        elif options.prune_level is not None or options.accurate:
            raise ValueError(f"prune_level and accurate mode are UNet++ options; model {self.card.name!r} is "
                             f"{self.card.architecture}")

    # -- the network on windows -----------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor, device: torch.device, precision: str, flips: list[tuple[int, ...]],
                 two_d: bool, features: bool) -> torch.Tensor:
        """`(B, C, *window)` -> `(B, passes, channels, *window)`: logits, or the features before the head."""
        if two_d:
            x = x[:, :, 0]
        if device.type == "cpu" and precision == "fp16":
            precision = "fp32"
        net = self.model.forward_features if features else self.model
        outs = []
        with torch.no_grad(), autocast(device, precision):
            for axes in flips:
                y = net(x.flip(axes) if axes else x).float()
                outs.append(y.flip(axes) if axes else y)
        y = torch.stack(outs, 1)
        return y[:, :, :, None] if two_d else y

    def _head(self, options: SegmentOptions) -> tuple[torch.nn.Module | None, int]:
        """The linear head to apply after blending when that blends fewer channels, and the channels blended."""
        head = self.model.linear_head()
        classes = len(self.card.labels)
        if head is None or head.in_channels >= classes:
            return None, classes
        return head, head.in_channels

    def _runner(self, fn, batch_size: int | None, ring_device: torch.device) -> FallbackRunner:
        batch = batch_size or (4 if self.device.type == "cuda" else 1)

        def to_cpu() -> None:
            self.model.to("cpu")

        runner = FallbackRunner(lambda x, dev: fn(x, dev).to(ring_device), self.device, batch, to_cpu)
        return runner

    def _window_options(self, x: torch.Tensor, options: SegmentOptions, keep: tuple[int, ...], passes: int,
                        batch: int, channels: int, softmax: bool) -> tuple[WindowOptions, torch.device]:
        total = passes * channels * int(np.prod(x.shape[1:])) * 4
        ring_device = self.device if self.device.type == "cuda" and total < (2 << 30) else torch.device("cpu")
        return WindowOptions(self._window(x.shape[1:]), options.overlap, options.sigma_scale, batch,
                             options.border_margin, keep,
                             entropy=options.uncertainty or options.review, variance=options.uncertainty and passes > 1,
                             accumulate_dtype=torch.float16 if total > _RING_FP16_BYTES else torch.float32,
                             softmax=softmax, temperature=temperature_of(self.card),
                             class_sums=softmax and self._interval_needs_soft(),
                             layout=self.run_as.get("windows", "medseg")), ring_device

    def _interval_needs_soft(self) -> bool:
        interval = volume_interval_of(self.card)
        return interval is not None and interval.needs_soft_volume

    def _window(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Window size (network axis order) for a volume of `shape` (see :func:`inference_window`)."""
        patch = (1, *self.card.patch_size) if self.card.spatial_dims == 2 else tuple(self.card.patch_size)
        if self.run_as.get("windows") == "nnunet":  # always the whole patch, the volume zero-padded to it
            return patch
        return inference_window(shape, patch, self.model.size_divisor)

    def _axes_order(self) -> list[int]:
        """Array axes in network order: 2D networks take slices along ``card.slice_axis`` (moved first)."""
        if self.card.spatial_dims == 3:
            return [0, 1, 2]
        a = self.card.slice_axis
        return [a] + [i for i in range(3) if i != a]

    def _stitch(self, x: torch.Tensor, options: SegmentOptions, keep: tuple[int, ...], fn, passes: int,
                channels: int, progress: Progress | None, cancel: CancelToken | None, head=None,
                softmax: bool = True) -> StitchOutputs:
        """Sliding window over `x` `(C, Z, Y, X)` in array order; outputs come back in array order."""
        order = self._axes_order()
        xt = x.permute(0, *(1 + a for a in order))
        batch = options.batch_size or (4 if self.device.type == "cuda" else 1)
        if self.card.spatial_dims == 2:
            batch = options.batch_size or 16
        win, ring_device = self._window_options(xt, options, keep, passes, batch, channels, softmax)
        runner = self._runner(fn, batch, ring_device)
        classes = len(self.card.labels) if softmax else channels
        head_fn = None if head is None else _apply_head(head, ring_device)
        try:
            out = sliding_window(xt, runner, channels, win, passes, progress, cancel, ring_device, head_fn, classes)
        except ModelOutputError as exc:
            raise self._model_error(exc) from None
        back = list(np.argsort(order))
        out.labels = out.labels.transpose(back)
        out.probabilities = {k: v.transpose(back) for k, v in out.probabilities.items()}
        out.entropy = None if out.entropy is None else out.entropy.transpose(back)
        out.variance = None if out.variance is None else out.variance.transpose(back)
        return out

    def _model_error(self, exc: ModelOutputError) -> ModelOutputError:
        """The sliding window's non-finite-output error, naming this model and its checkpoint."""
        kinds = " and ".join(k for k, n in (("NaN", exc.nan), ("infinite", exc.inf)) if n) or "non-finite"
        return ModelOutputError(
            f"model {self.card.name!r} ({self.path}) produced {kinds} outputs ({exc}); this is a problem of the model, "
            f"not of the input: the checkpoint may be corrupt or run at a precision it does not support; try "
            f"--precision fp32 (Slicer: Precision fp32), or re-export or re-download the checkpoint", exc.nan, exc.inf)

    # -- the run ----------------------------------------------------------------------------------------------
    def segment(self, channels: np.ndarray | Sequence[np.ndarray], geometry: Geometry,
                options: SegmentOptions | None = None, progress: Progress | None = None,
                cancel: CancelToken | None = None) -> SegmentationResult:
        """Segment one volume.

        Args:
            channels: `(Z, Y, X)` for a one-channel model, else `(C, Z, Y, X)` or a list of `(Z, Y, X)` arrays in
                the card's channel order, indexed [k, j, i].
            geometry: the channels' common geometry.
            options: per-run options.
            progress: called with (fraction, message); the network pass is 0-0.9 of the work.
            cancel: a :class:`CancelToken`; when set, :class:`Cancelled` is raised and nothing is returned.

        Returns:
            A :class:`SegmentationResult` on the input's exact grid.
        """
        options = options or SegmentOptions()
        t = time.perf_counter()
        image = self._channels(channels, geometry)
        self._set_unetpp(options)
        cropped, roi_geometry, box = crop_roi(image, geometry, options.roi)
        if self.run_as.get("crop_nonzero"):
            cropped, roi_geometry, box = crop_nonzero(cropped, roi_geometry, box)
        warnings = domain_warnings(self.card, cropped, roi_geometry) + _reliability_warnings(self.card)
        for message in warnings:
            log.warning("%s", message)
        orient = self._orientation(roi_geometry, cropped.shape[1:])
        oriented = orient.apply(cropped)
        x = torch.from_numpy(normalize(oriented, [c.normalization for c in self.card.inputs],
                                       self.run_as.get("mask_normalization")))
        run = _Run(image, options, resolve_precision(options.precision, self.device), box,
                   resample(x, self._net_shape(oriented.shape[1:], orient.geometry, options)),
                   tuple(oriented.shape[1:]), [self.card.label(c) for c in options.activation_classes], cancel, orient)
        run.seconds["preprocess"] = time.perf_counter() - t
        result = self._predict(run, progress)
        for key in ("labels", "probabilities", "entropy", "variance"):
            if result[key] is not None:
                result[key] = orient.invert(result[key])
        run.seconds["inference"] = time.perf_counter() - t - run.seconds["preprocess"]
        res = SegmentationResult(paste_roi(result["labels"], image.shape[1:], box), geometry, self.card,
                                 warnings=warnings)
        self._finish(res, result, run)
        if progress is not None:
            progress(1.0, "done")
        return res

    def _orientation(self, geometry: Geometry, shape: Sequence[int]) -> Reorientation:
        """From the (cropped) input grid to the card's voxel orientation; for a card without one, no change."""
        target = self.card.orientation
        transpose = self.run_as.get("transpose")
        if transpose is not None:  # the stored voxel order, its axes permuted (nnU-Net's transpose_forward)
            code = orientation_code(geometry.direction)
            return reorientation(geometry, shape, "".join(code[2 - t] for t in reversed(transpose)))
        if target is None:
            if self.card.name not in _WARNED_NO_ORIENTATION:
                _WARNED_NO_ORIENTATION.add(self.card.name)
                log.warning("model %r: its card does not record the voxel orientation it was trained in, so volumes "
                            "are fed as stored and one stored in another voxel order may be segmented badly; set "
                            "the card's 'orientation' (scripts/update_card.py)", self.card.name)
            target = orientation_code(geometry.direction)
        return reorientation(geometry, shape, target)

    def _net_shape(self, shape: Sequence[int], geometry: Geometry, options: SegmentOptions) -> tuple[int, ...]:
        if not options.resample or self.card.spacing is None:
            return tuple(shape)
        ratio = np.asarray(geometry.spacing) / np.asarray(self.card.spacing)
        if np.all(np.abs(ratio - 1) <= _SPACING_TOLERANCE):
            return tuple(shape)
        spacing = list(self.card.spacing)
        if self.card.spatial_dims == 2:  # slices keep their own thickness
            spacing[2 - self.card.slice_axis] = geometry.spacing[2 - self.card.slice_axis]
        return target_shape(shape, geometry, spacing)

    def _predict(self, run: _Run, progress: Progress | None) -> dict[str, Any]:
        """Network pass over ``run.x`` (model grid), then back to the cropped input grid."""
        x, shape, options, precision, cancel = run.x, run.crop_shape, run.options, run.precision, run.cancel
        classes = len(self.card.labels)
        flips = _flip_sets(self.card.spatial_dims, options.tta, self.run_as.get("mirror_axes"))
        resampled = tuple(x.shape[1:]) != tuple(shape)
        keep = tuple(range(classes)) if (options.probabilities or resampled) else ()
        two_d = self.card.spatial_dims == 2

        head, channels = self._head(options)

        def fn(xb: torch.Tensor, device: torch.device) -> torch.Tensor:
            return self._forward(xb, device, precision, flips, two_d, features=head is not None)

        def scaled(fraction: float, message: str) -> None:
            if progress is not None:
                progress(0.9 * fraction, message)

        out = self._stitch(x, options, keep, fn, len(flips), channels, scaled, cancel, head)
        voxel_ml = float(np.prod(self.card.spacing)) / 1000 if resampled else None
        result: dict[str, Any] = {"windows": out.windows, "passes": len(flips), "pass_counts": out.pass_counts,
                                  "pass_voxel_ml": voxel_ml, "entropy": out.entropy, "variance": out.variance,
                                  "class_sums": out.class_sums}
        if not resampled:
            result["labels"] = out.labels
            result["probabilities"] = np.stack([out.probabilities[k] for k in keep]) if keep else None
            return result
        # the card's temperature undone before resampling and applied after it, so the labels are the arg-max of
        # the uncalibrated resampled probabilities whatever the temperature (tempering is monotone per voxel)
        temperature = temperature_of(self.card)
        untempered = torch.from_numpy(temper(np.stack([out.probabilities[k] for k in keep]), 1 / temperature))
        if options.probabilities:
            probs = resample(untempered, shape)
            result["labels"] = probs.argmax(0).numpy().astype(out.labels.dtype)
            result["probabilities"] = temper(probs.numpy(), temperature)
        else:  # never K maps on the input grid: a 512 x 512 x 300 CT and 14 classes would hold 4.4 GB of them
            result["labels"] = _resampled_argmax(untempered, shape, out.labels.dtype)
            result["probabilities"] = None
        for key in ("entropy", "variance"):
            if result[key] is not None:
                result[key] = resample(torch.from_numpy(result[key])[None], shape)[0].numpy()
        return result

    def _finish(self, res: SegmentationResult, result: dict[str, Any], run: _Run) -> None:
        """Paste back, post-process, explain and measure; fill the result's info."""
        image, box, options, seconds, cancel = run.image, run.box, run.options, run.seconds, run.cancel
        t = time.perf_counter()
        shape = image.shape[1:]
        if result["probabilities"] is not None:
            probs = result["probabilities"]
            res.probabilities = np.stack([paste_roi(p, shape, box, fill=1.0 if k == 0 else 0.0)
                                          for k, p in enumerate(probs)])
        res.entropy = None if result["entropy"] is None else paste_roi(result["entropy"], shape, box)
        res.tta_variance = None if result["variance"] is None else paste_roi(result["variance"], shape, box)
        ids = [label.id for label in self.card.foreground_labels]
        chosen = options.postprocess if options.postprocess is not None else card_default(self.card)
        res.labels, record = postprocess(res.labels, res.geometry, chosen, ids)
        res.postprocessing = {**record, "source": "card" if options.postprocess is None else "options"}
        seconds["postprocess"] = time.perf_counter() - t
        for label in run.cam_labels:
            if cancel is not None:
                cancel.check()
            cam = self._grad_cam(run.x, label.id, options, run.crop_shape, cancel)
            res.activations[label.name] = paste_roi(run.orient.invert(cam), shape, box)
        seconds["activation"] = time.perf_counter() - t - seconds["postprocess"]
        if options.measure:
            res.measurements = measure_labels(res.labels, res.geometry, self.card.labels, image=image[0],
                                              probabilities=res.probabilities,
                                              volume_passes_ml=self._pass_volumes(result, res.geometry),
                                              volume_interval=volume_interval_of(self.card),
                                              soft_volumes_ml=self._soft_volumes(result, res.geometry))
        seconds["measure"] = time.perf_counter() - t - seconds["postprocess"] - seconds["activation"]
        if options.review:
            t_review = time.perf_counter()
            res.review = review_result(res.labels, res.entropy, res.geometry, self.card.labels, options.review_options)
            seconds["review"] = time.perf_counter() - t_review
        res.info = {"device": str(self.device), "precision": run.precision, "windows": result["windows"],
                    "passes": result["passes"], "network_grid_kji": list(run.x.shape[1:]),
                    "seconds": {k: round(v, 3) for k, v in seconds.items()},
                    "checkpoint": str(self.path), "roi_ijk": list(options.roi) if options.roi else None,
                    "orientation": {"input": run.orient.source_code, "model": self.card.orientation,
                                    "reoriented": not run.orient.identity},
                    "overlap": options.overlap, "tta": options.tta}

    def _pass_volumes(self, result: dict[str, Any], geometry: Geometry) -> dict[int, list[float]] | None:
        counts = result["pass_counts"]
        if counts is None:
            return None
        voxel_ml = result["pass_voxel_ml"] or geometry.voxel_volume_ml
        return {label.id: [float(c) * voxel_ml for c in counts[:, label.id]] for label in self.card.foreground_labels}

    def _soft_volumes(self, result: dict[str, Any], geometry: Geometry) -> dict[int, float] | None:
        """Per label id, its probability summed over the network grid x that grid's voxel volume (mL)."""
        sums = result["class_sums"]
        if sums is None:
            return None
        voxel_ml = result["pass_voxel_ml"] or geometry.voxel_volume_ml
        return {label.id: float(sums[label.id]) * voxel_ml for label in self.card.foreground_labels}

    def _grad_cam(self, x: torch.Tensor, class_index: int, options: SegmentOptions, shape: Sequence[int],
                  cancel: CancelToken | None) -> np.ndarray:
        """Grad-CAM of one class, window by window, blended like the probabilities, on the cropped grid."""
        from .explain import grad_cam_window, normalize_map

        two_d = self.card.spatial_dims == 2

        def fn(xb: torch.Tensor, device: torch.device) -> torch.Tensor:
            maps = []
            for b in range(xb.shape[0]):
                xi = xb[b: b + 1, :, 0] if two_d else xb[b: b + 1]
                cam = grad_cam_window(self.model, xi, class_index, options.activation_layer)
                maps.append(cam[None] if two_d else cam)
            return torch.stack(maps)[:, None, None]

        cam_options = SegmentOptions(overlap=options.overlap, batch_size=options.batch_size,
                                     sigma_scale=options.sigma_scale, border_margin=options.border_margin)
        out = self._stitch(x, cam_options, (0,), fn, 1, 1, None, cancel, softmax=False)
        cam = out.probabilities[0]
        if tuple(cam.shape) != tuple(shape):
            cam = resample(torch.from_numpy(cam)[None], shape)[0].numpy()
        return normalize_map(cam)
