"""Sliding-window (overlap-tile) inference with Gaussian importance weighting and bounded memory.

Windows overlap by ``overlap`` of their size (positions as MONAI's ``dense_patch_slices``: a fixed
interval, the last window flush with the border) and are blended with a Gaussian importance map
(sigma = ``sigma_scale`` x window size, as nnU-Net and MONAI). A volume smaller than the window is padded
with mirrored borders (the U-Net paper's overlap-tile strategy); ``border_margin`` mirrors that many
extra voxels beyond every border so that border voxels also see context, as in the paper.

Memory stays bounded for many classes and large volumes: windows are visited in order along the "ring
axis" (the axis with the most window positions) and the class sums live in a ring buffer one window long
along that axis. As soon as no remaining window can touch a slab, the slab is finalised (normalised,
arg-max, kept probabilities, uncertainty) into the outputs and its buffer rows are reused. The full
``(classes, Z, Y, X)`` probability volume never exists unless it is asked for.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CancelToken",
    "Cancelled",
    "ModelOutputError",
    "StitchOutputs",
    "WindowOptions",
    "gaussian_importance",
    "nnunet_gaussian",
    "nnunet_window_starts",
    "sliding_window",
    "window_starts",
]

LAYOUTS = ("medseg", "nnunet")
_CHUNK = 8192  # voxels finalised at a time: their logits stay in the CPU cache

Predictor = Callable[[Tensor], Tensor]
"""(B, C, *window) -> (B, P, F, *window): P passes (test-time flips) of F channels to blend (class logits, or
the features before a linear head)."""
Progress = Callable[[float, str], None]


class Cancelled(Exception):
    """Raised inside the inference when its cancel token is set; nothing is returned or written."""


class ModelOutputError(ValueError):
    """The network produced NaN or infinite values: a problem of the model (its weights or the precision it ran
    at), not of the input. Raised before any output exists; :class:`~medseg.inference.Segmenter` adds the model's
    name and checkpoint to the message.

    Attributes:
        nan: NaN values counted in the first slab that had any.
        inf: infinite values counted there.
    """

    def __init__(self, message: str, nan: int = 0, inf: int = 0):
        super().__init__(message)
        self.nan, self.inf = nan, inf


class CancelToken:
    """Set from another thread (the Slicer GUI's Cancel button); checked between windows."""

    def __init__(self) -> None:
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def check(self) -> None:
        if self._cancelled:
            raise Cancelled("segmentation cancelled by the user; nothing was changed")


@dataclass(frozen=True)
class WindowOptions:
    """How windows are laid out and blended.

    Attributes:
        window: window size per spatial axis, array order (a 1 on an axis runs a 2D network slice-wise).
        overlap: fraction of the window shared by neighbours, in [0, 1).
        sigma_scale: Gaussian sigma as a fraction of the window size; 0 gives uniform (constant) blending.
        batch_size: windows per forward pass.
        border_margin: voxels mirrored beyond each border before tiling (0: only pad to the window size).
        keep: class indices whose probabilities are returned (all: ``tuple(range(K))``).
        entropy: return the normalised entropy of the mean probabilities.
        variance: return the variance over passes of the predicted class's probability (needs P > 1).
        accumulate_dtype: dtype of the blended sums (float32, or float16 to halve the buffer).
        softmax: the blended channels are logits (labels and probabilities come out); False: raw maps,
            averaged and returned as ``probabilities[k]`` (Grad-CAM).
        temperature: the logits are divided by it before the soft-max (calibration, ``medseg.calibration``);
            probabilities, entropy and variance change, the arg-max does not.
        class_sums: return each class's probability summed over the volume (``StitchOutputs.class_sums``).
        layout: ``medseg`` (MONAI's window positions, mirrored borders, Gaussian floored at 1e-3) or ``nnunet``
            (nnU-Net v2's predictor: positions spread evenly with a step of at most ``(1 - overlap)`` x window, a
            volume smaller than the window zero-padded centred, nnU-Net's Gaussian (``nnunet_gaussian``);
            ``border_margin`` unused), for models imported from nnU-Net (``medseg.nnunet``).
    """

    window: tuple[int, ...]
    overlap: float = 0.5
    sigma_scale: float = 0.125
    batch_size: int = 1
    border_margin: int = 0
    keep: tuple[int, ...] = ()
    entropy: bool = False
    variance: bool = False
    accumulate_dtype: torch.dtype = torch.float32
    softmax: bool = True
    temperature: float = 1.0
    class_sums: bool = False
    layout: str = "medseg"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if any(w < 1 for w in self.window):
            raise ValueError(f"window sizes must be positive, got {self.window}")


@dataclass
class StitchOutputs:
    """Outputs on the input grid: arg-max labels, kept probabilities, uncertainty, per-pass voxel counts."""

    labels: np.ndarray
    probabilities: dict[int, np.ndarray] = field(default_factory=dict)
    entropy: np.ndarray | None = None
    variance: np.ndarray | None = None
    pass_counts: np.ndarray | None = None  # (P, K) voxels per class in each pass's own arg-max
    class_sums: np.ndarray | None = None  # (K,) each class's probability summed over the voxels (float64)
    windows: int = 0


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start indices along one axis (MONAI's dense_patch_slices rule: fixed interval, last one flush)."""
    if size <= window:
        return [0]
    interval = max(1, int(window * (1 - overlap)))
    count = math.ceil((size - window) / interval) + 1
    return [min(i * interval, size - window) for i in range(count)]


def gaussian_importance(window: Sequence[int], sigma_scale: float, device: torch.device | str = "cpu") -> Tensor:
    """Separable Gaussian centred on the window, max 1, floored at 1e-3 (as MONAI) so that every voxel counts."""
    if sigma_scale <= 0:
        return torch.ones(tuple(window), device=device)
    weight = torch.ones((), device=device)
    for axis, size in enumerate(window):
        x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
        g = torch.exp(-(x**2) / (2 * (sigma_scale * size) ** 2)) if size > 1 else torch.ones(1, device=device)
        shape = [1] * len(window)
        shape[axis] = size
        weight = weight * g.reshape(shape)
    return (weight / weight.max()).float().clamp_min(1e-3)


def nnunet_window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start indices along one axis as nnU-Net v2 (``compute_steps_for_sliding_window``, step = 1 - overlap):
    the fewest windows whose step is at most ``window * (1 - overlap)``, spread evenly from 0 to the far border."""
    if size <= window:
        return [0]
    count = math.ceil((size - window) / (window * (1 - overlap))) + 1
    step = (size - window) / (count - 1)
    return [int(np.round(step * i)) for i in range(count)]


def nnunet_gaussian(window: Sequence[int], sigma_scale: float = 0.125, device: torch.device | str = "cpu") -> Tensor:
    """nnU-Net v2's importance map (``compute_gaussian``): a Gaussian (sigma = ``sigma_scale`` x window, cut at 4
    sigma) centred on voxel ``size // 2``, scaled to a maximum of 10, stored in float16 with zeros (underflow)
    replaced by the smallest non-zero value; returned as float32."""
    weight = torch.ones((), dtype=torch.float64)
    for axis, size in enumerate(window):
        sigma = sigma_scale * size
        x = torch.arange(size, dtype=torch.float64) - size // 2
        g = torch.exp(-0.5 * (x / sigma) ** 2) if sigma > 0 else (x == 0).double()
        g[x.abs() > int(4.0 * sigma + 0.5)] = 0
        shape = [1] * len(window)
        shape[axis] = size
        weight = weight * g.reshape(shape)
    weight = (weight / weight.max() * 10).half()
    zero = weight == 0
    if zero.any():
        weight[zero] = weight[~zero].min()
    return weight.float().to(device)


def _pad_centred(volume: Tensor, window: Sequence[int]) -> tuple[Tensor, list[tuple[int, int]]]:
    """nnU-Net's padding: zeros up to the window size, half before (rounded down) and the rest after."""
    pads, box = [], []
    for size, w in zip(volume.shape[1:], window, strict=True):
        extra = max(0, w - size)
        pads.append((extra // 2, extra - extra // 2))
        box.append((extra // 2, extra // 2 + size))
    if not any(b or a for b, a in pads):
        return volume, box
    flat = [p for before_after in reversed(pads) for p in before_after]
    return F.pad(volume, flat, mode="constant", value=0.0), box


def _pad(volume: Tensor, window: Sequence[int], margin: int) -> tuple[Tensor, list[tuple[int, int]]]:
    """Mirror-pad (C, *spatial) by `margin` on each side and up to the window size; return the crop box."""
    pads, box = [], []
    for size, w in zip(volume.shape[1:], window, strict=True):
        extra = max(0, w - (size + 2 * margin))
        before, after = margin, margin + extra
        pads.append((before, after))
        box.append((before, before + size))
    if not any(b or a for b, a in pads):
        return volume, box
    flat = [p for before_after in reversed(pads) for p in before_after]
    small = any(b >= s or a >= s for (b, a), s in zip(pads, volume.shape[1:], strict=True))
    mode = "replicate" if small else "reflect"
    return F.pad(volume[None], flat, mode=mode)[0], box


class _Ring:
    """Class sums and weights for the window-long band of rows along `axis` that windows can still touch."""

    def __init__(self, passes: int, classes: int, shape: Sequence[int], length: int, axis: int,
                 dtype: torch.dtype, device: torch.device):
        band = list(shape)
        band[axis] = length
        self.sums = torch.zeros((passes, classes, *band), dtype=dtype, device=device)
        self.weights = torch.zeros(band, dtype=torch.float32, device=device)
        self.axis, self.length, self.base = axis, length, 0

    def _segments(self, row: int, n: int) -> list[tuple[int, int, int]]:
        """(offset in the piece, ring row, length) pieces of rows [row, row + n), split where the ring wraps."""
        pieces, offset = [], 0
        while offset < n:
            ring_row = (row + offset) % self.length
            count = min(n - offset, self.length - ring_row)
            pieces.append((offset, ring_row, count))
            offset += count
        return pieces

    def _index(self, start: Sequence[int], window: Sequence[int], ring_row: int, count: int) -> tuple[slice, ...]:
        idx = [slice(s, s + w) for s, w in zip(start, window, strict=True)]
        idx[self.axis] = slice(ring_row, ring_row + count)
        return tuple(idx)

    def add(self, start: Sequence[int], values: Tensor, importance: Tensor) -> None:
        """Add one window's (P, F, *window) channels, weighted by the importance map (one fused pass)."""
        window = importance.shape
        values = values.to(self.sums.dtype)
        weight = importance.to(self.sums.dtype)
        for offset, ring_row, count in self._segments(start[self.axis], window[self.axis]):
            ring_idx = self._index(start, window, ring_row, count)
            win_idx = [slice(None)] * len(window)
            win_idx[self.axis] = slice(offset, offset + count)
            self.sums[(slice(None), slice(None), *ring_idx)].addcmul_(
                values[(slice(None), slice(None), *win_idx)], weight[tuple(win_idx)])
            self.weights[ring_idx] += importance[tuple(win_idx)]

    def pop(self, end: int, rows: int) -> Iterator[tuple[int, Tensor, Tensor]]:
        """Hand out rows [base, end) (all windows touching them are done) in chunks of at most `rows` rows.

        Yields (first row, sums (P, F, *chunk), weights (*chunk)), views into the ring where the chunk does not
        wrap; once the consumer is done with a chunk its ring rows are zeroed for reuse.
        """
        while self.base < end:
            first, count = self.base, min(rows, end - self.base)
            pieces = []
            for _, ring_row, n in self._segments(first, count):
                idx = [slice(None)] * self.weights.dim()
                idx[self.axis] = slice(ring_row, ring_row + n)
                pieces.append(tuple(idx))
            sums = [self.sums[(slice(None), slice(None), *idx)] for idx in pieces]
            weights = [self.weights[idx] for idx in pieces]
            yield (first, sums[0] if len(sums) == 1 else torch.cat(sums, dim=2 + self.axis),
                   weights[0] if len(weights) == 1 else torch.cat(weights, dim=self.axis))
            for idx in pieces:
                self.sums[(slice(None), slice(None), *idx)] = 0
                self.weights[idx] = 0
            self.base = first + count


class _Finaliser:
    """Turns finished slabs of blended channels into the outputs on the unpadded grid.

    With ``softmax`` the blended channels are logits (or features that `head` maps to logits): the passes'
    logits are averaged (as nnU-Net), soft-maxed, and arg-maxed; otherwise they are raw maps (Grad-CAM),
    averaged over passes and returned as ``probabilities[k]``.
    """

    def __init__(self, shape: Sequence[int], box: Sequence[tuple[int, int]], axis: int, passes: int, classes: int,
                 options: WindowOptions, head: Callable[[Tensor], Tensor] | None):
        self.box, self.axis, self.options, self.head, self.classes = box, axis, options, head, classes
        self.out = StitchOutputs(np.zeros(shape, dtype=np.uint8 if classes <= 256 else np.uint16))
        self.out.probabilities = {k: np.zeros(shape, dtype=np.float32) for k in options.keep}
        if options.entropy:
            self.out.entropy = np.zeros(shape, dtype=np.float32)
        if options.variance and passes > 1:
            self.out.variance = np.zeros(shape, dtype=np.float32)
        if passes > 1 and options.softmax:
            self.out.pass_counts = np.zeros((passes, classes), dtype=np.int64)
        if options.class_sums and options.softmax:
            self.out.class_sums = np.zeros(classes, dtype=np.float64)
        self._sums: Tensor | int = 0  # class sums on the device, read once per slab
        self._nan: Tensor | int = 0  # counted on the device, read once per slab (no synchronisation per chunk)
        self._inf: Tensor | int = 0

    def __call__(self, first: int, sums: Tensor, weights: Tensor) -> None:
        lo, hi = self.box[self.axis]
        a, b = max(first, lo), min(first + weights.shape[self.axis], hi)
        if a >= b:
            return
        crop = [slice(s, e) for s, e in self.box]
        crop[self.axis] = slice(a - first, b - first)
        crop = tuple(crop)
        w = weights[crop]
        # voxels x channels: the class reductions (arg-max, soft-max) run over contiguous memory
        channels = (sums[(slice(None), slice(None), *crop)].float() / w).flatten(2).transpose(1, 2).contiguous()
        flat = self._empty(channels.shape[1], channels.device)
        for i in range(0, channels.shape[1], _CHUNK):  # chunks of voxels whose K logits stay in cache
            self._chunk(channels[:, i: i + _CHUNK], slice(i, i + _CHUNK), flat)
        self._check_finite()
        if self.out.class_sums is not None:
            self.out.class_sums += torch.as_tensor(self._sums).cpu().numpy()
            self._sums = 0
        dest = [slice(None)] * w.dim()
        dest[self.axis] = slice(a - lo, b - lo)
        dest = tuple(dest)
        for name, values in flat.items():
            target = self.out.probabilities[name] if isinstance(name, int) else getattr(self.out, name)
            target[dest] = values.reshape(w.shape).cpu().numpy()

    def _check_finite(self) -> None:
        nan, inf = int(self._nan), int(self._inf)
        if nan or inf:
            what = "logits" if self.options.softmax else "maps"
            raise ModelOutputError(f"the network produced {nan} NaN and {inf} infinite {what} in one slab of windows",
                                   nan, inf)

    def _empty(self, n: int, device: torch.device) -> dict[str | int, Tensor]:
        flat: dict[str | int, Tensor] = {k: torch.empty(n, device=device) for k in self.out.probabilities}
        if self.options.softmax:
            flat["labels"] = torch.empty(n, dtype=torch.long, device=device)
        for name in ("entropy", "variance"):
            if getattr(self.out, name) is not None:
                flat[name] = torch.empty(n, device=device)
        return flat

    def _chunk(self, channels: Tensor, at: slice, flat: dict[str | int, Tensor]) -> None:
        """Outputs of a chunk of voxels from its blended channels `(P, n, F)`."""
        logits = channels if self.head is None else self.head(channels)  # (P, n, K)
        if self.options.softmax and self.options.temperature != 1.0:
            logits = logits / self.options.temperature
        mean = logits[0] if logits.shape[0] == 1 else logits.mean(0)  # (n, K)
        self._nan = self._nan + torch.isnan(mean).sum()  # a NaN or inf in any pass reaches the mean
        self._inf = self._inf + torch.isinf(mean).sum()
        if not self.options.softmax:
            for k in self.out.probabilities:
                flat[k][at] = mean[:, k]
            return
        labels = mean.argmax(1)
        flat["labels"][at] = labels
        if self.out.probabilities or self.out.entropy is not None or self.out.class_sums is not None:
            probs = mean.softmax(1)
            if self.out.class_sums is not None:
                self._sums = self._sums + probs.sum(0)  # float32 per slab (MPS has no float64), float64 across
            for k in self.out.probabilities:
                flat[k][at] = probs[:, k]
            if self.out.entropy is not None:
                flat["entropy"][at] = -torch.special.xlogy(probs, probs).sum(1) / math.log(max(self.classes, 2))
        if self.out.pass_counts is not None:
            for p in range(logits.shape[0]):
                counts = torch.bincount(logits[p].argmax(1), minlength=self.classes)
                self.out.pass_counts[p] += counts.cpu().numpy()
        if self.out.variance is not None:
            chosen = logits.softmax(2).gather(2, labels[None, :, None].expand(logits.shape[0], -1, 1))[..., 0]
            flat["variance"][at] = chosen.var(0, unbiased=False)


def _window_grid(shape: Sequence[int], window: Sequence[int], overlap: float,
                 layout: str = "medseg") -> tuple[list[tuple[int, ...]], int]:
    """All window starts, sorted along the ring axis (the axis with the most positions)."""
    rule = nnunet_window_starts if layout == "nnunet" else window_starts
    starts = [rule(s, w, overlap) for s, w in zip(shape, window, strict=True)]
    axis = max(range(len(shape)), key=lambda a: (len(starts[a]), shape[a]))
    order = [axis] + [a for a in range(len(shape)) if a != axis]
    grid = []
    for combo in itertools.product(*(starts[a] for a in order)):
        start = [0] * len(shape)
        for a, s in zip(order, combo, strict=True):
            start[a] = s
        grid.append(tuple(start))
    return grid, axis


def sliding_window(volume: Tensor, predict: Predictor, channels: int, options: WindowOptions, passes: int = 1,
                   progress: Progress | None = None, cancel: CancelToken | None = None,
                   device: torch.device | str | None = None, head: Callable[[Tensor], Tensor] | None = None,
                   classes: int | None = None) -> StitchOutputs:
    """Run `predict` over overlapping windows of `volume` and blend the results.

    Args:
        volume: `(C, *spatial)` image on any device (windows are moved to `device`).
        predict: maps a batch `(B, C, *window)` to `(B, passes, channels, *window)`: class logits, or the
            features before a linear 1x1 `head` (blending commutes with a linear map, so blending F features
            and applying the head once per voxel gives the same logits with F/K of the memory traffic).
        channels: F, the channels `predict` returns.
        options: window layout, blending and which outputs to keep.
        passes: P, the number of predictions per window (test-time flips); their mean is the result.
        progress: called with (fraction done, message) after every batch.
        cancel: checked before every batch; raises :class:`Cancelled`.
        device: where windows go and the ring buffer lives (default: the volume's device).
        head: maps blended features `(P, N, F)` (N voxels) to logits `(P, N, K)`; None when `predict` gives
            logits.
        classes: K (default F).

    Returns:
        The outputs on the grid of `volume` (numpy, CPU), and the number of windows evaluated.
    """
    device = torch.device(device) if device is not None else volume.device
    if len(options.window) != volume.dim() - 1:
        raise ValueError(f"window {options.window} has {len(options.window)} axes, the volume {volume.dim() - 1}")
    window = options.window
    if options.layout == "nnunet":
        padded, box = _pad_centred(volume, window)
        importance = nnunet_gaussian(window, options.sigma_scale, device) if options.sigma_scale > 0 else \
            torch.ones(tuple(window), device=device)
    else:
        padded, box = _pad(volume, window, options.border_margin)
        importance = gaussian_importance(window, options.sigma_scale, device)
    grid, axis = _window_grid(padded.shape[1:], window, options.overlap, options.layout)
    batches = [grid[i: i + options.batch_size] for i in range(0, len(grid), options.batch_size)]
    spread = max(b[-1][axis] - b[0][axis] for b in batches)  # a batch may span several rows of windows
    ring = _Ring(passes, channels, padded.shape[1:], window[axis] + spread, axis, options.accumulate_dtype, device)
    classes = classes or channels
    finalise = _Finaliser(volume.shape[1:], box, axis, passes, classes, options, head)
    plane = int(np.prod(padded.shape[1:])) // padded.shape[1 + axis]
    rows = max(1, (64 << 20) // (4 * passes * max(channels, classes) * plane))  # ~64 MB temporaries per slab
    done = 0
    for batch in batches:
        if cancel is not None:
            cancel.check()
        x = torch.stack([padded[(slice(None), *(slice(s, s + w) for s, w in zip(start, window, strict=True)))]
                         for start in batch]).to(device, non_blocking=True)
        probs = predict(x)
        for b, start in enumerate(batch):
            ring.add(start, probs[b], importance)
        done += len(batch)
        next_row = grid[done][axis] if done < len(grid) else padded.shape[1 + axis]
        for slab in ring.pop(next_row, rows):
            finalise(*slab)
        if progress is not None:
            progress(done / len(grid), f"window {done}/{len(grid)}")
    finalise.out.windows = len(grid)
    return finalise.out
