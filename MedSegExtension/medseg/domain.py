"""What a model's training inputs looked like, and a warning when an input looks nothing like them.

A card may carry ``input_domain`` (written by ``medseg train``, or by :func:`describe_inputs` for an existing
model), measured on the training cases as they were read from disk, before any normalisation::

    "input_domain": {
      "cases": 208,                                    # training cases it was measured on
      "extent_mm": [[lo, hi], [lo, hi], [lo, hi]],     # bounding-box size along L, P, S (mm), min/max over cases
      "spacing_mm": [[lo, hi], [lo, hi], [lo, hi]],    # voxel spacing along L, P, S (mm), min/max over cases
      "channels": [{"name": "T1w",                     # one per input channel, in the card's order
                    "p01": [lo, hi],                   # each case's 1st intensity percentile: min/max over cases
                    "p99": [lo, hi]}]                  # each case's 99th intensity percentile: min/max over cases
    }

Sizes and spacings are taken along the patient axes (L, P, S), not the voxel axes, so that the same anatomy
stored in another voxel order compares equal. :func:`domain_warnings` compares an input with it:

- size: more than :data:`SIZE_FACTOR` times larger or smaller than every training case along some patient axis;
- spacing: more than :data:`SPACING_FACTOR` times coarser than every training case along some patient axis, or
  (only for a card without ``spacing``, run at the input's own spacing) that many times finer. A card with a
  ``spacing`` resamples every input to it, so a finer input (0.7 mm CT for a 3 mm model) loses nothing;
- intensities of channels whose raw values the network sees on an absolute scale (``ct`` and ``none``
  normalisation: HU or fixed units), compared after the card's own clipping (a ``ct`` window: air at -1000 HU
  is normal CT even when the window starts at -125): a 1st or 99th percentile more than
  :data:`INTENSITY_MARGIN` of the training range outside that range; and, when every training case had a
  clearly negative 1st percentile (air or fat in HU), an input without one (below -:data:`NEGATIVE_FRACTION`
  of its own 1-99 % range): an MR image, or a CT stored without its rescale (0..4095 for HU + 1024);
- intensities of channels normalised per image (``zscore``, ``minmax``: MR in arbitrary scanner units, where
  the scale says nothing): only the sign. When every training case was non-negative (MR magnitude images), an
  input whose 1st percentile is clearly negative (below -:data:`NEGATIVE_FRACTION` of its own 1-99 % range,
  e.g. a CT in HU with air at -1000) is flagged.

Warnings do not stop a run: they go to the log (stderr on the command line), the JSON report and the panel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .geometry import Geometry

if TYPE_CHECKING:
    from .card import ModelCard

__all__ = ["INTENSITY_MARGIN", "NEGATIVE_FRACTION", "SIZE_FACTOR", "SPACING_FACTOR", "describe_inputs",
           "domain_warnings", "input_domain_problems", "patient_extent"]

SIZE_FACTOR = 2.0
SPACING_FACTOR = 2.0
INTENSITY_MARGIN = 0.5  # fraction of the training range (lowest p01 .. highest p99) allowed outside it
NEGATIVE_FRACTION = 0.05
_AXES = "LPS"
_ABSOLUTE_SCALE = ("ct", "none")
_SAMPLE_VOXELS = 1 << 20  # percentiles of larger volumes are taken on a regular sub-grid of about this many voxels


def patient_extent(shape_kji: Sequence[int], geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """``(extent, spacing)`` along L, P, S in mm: the grid's bounding-box size and voxel size on each axis."""
    absolute = np.abs(np.asarray(geometry.direction, dtype=float))
    size_xyz = np.asarray(shape_kji[::-1], dtype=float) * np.asarray(geometry.spacing)
    spacing = absolute @ np.asarray(geometry.spacing)
    return absolute @ size_xyz, spacing


def _case_arrays(case: Any) -> tuple[list[np.ndarray], Geometry]:
    """One case as ``([channel arrays], geometry)`` from ``(array, geometry)`` or path(s) (one per channel)."""
    if isinstance(case, tuple) and len(case) == 2 and isinstance(case[1], Geometry):
        array = np.asarray(case[0])
        return (list(array) if array.ndim == 4 else [array]), case[1]
    from .io import read_channels  # here, not at the top: io imports card, which imports this module

    paths = [case] if isinstance(case, str | os.PathLike) else list(case)
    array, geometry = read_channels(paths)
    return list(array), geometry


def describe_inputs(cases: Sequence[Any], channel_names: Sequence[str]) -> dict[str, Any]:
    """Measure a card's ``input_domain`` on training cases.

    Args:
        cases: one entry per case: an image path, a list of paths (one per channel), or ``(array, geometry)``
            with ``array`` ``(Z, Y, X)`` or ``(C, Z, Y, X)`` as read from disk (before normalisation).
        channel_names: the card's input channel names, in order.

    Returns:
        The ``input_domain`` dict described in this module's docstring (plain JSON types).

    Raises:
        ValueError: no cases, or a case whose channel count differs from ``channel_names``.
    """
    if not cases:
        raise ValueError("describe_inputs needs at least one training case")
    extents, spacings, lows, highs = [], [], [], []
    for n, case in enumerate(cases):
        arrays, geometry = _case_arrays(case)
        if len(arrays) != len(channel_names):
            raise ValueError(f"training case {n} has {len(arrays)} channel(s), the card lists {len(channel_names)} "
                             f"({', '.join(channel_names)}); give one image per channel")
        extent, spacing = patient_extent(arrays[0].shape, geometry)
        extents.append(extent)
        spacings.append(spacing)
        percentiles = [_percentiles(a) for a in arrays]
        lows.append([p[0] for p in percentiles])
        highs.append([p[1] for p in percentiles])
    lows_a, highs_a = np.asarray(lows), np.asarray(highs)
    return {
        "cases": len(cases),
        "extent_mm": _ranges(np.asarray(extents)),
        "spacing_mm": _ranges(np.asarray(spacings)),
        "channels": [{"name": name, "p01": _range(lows_a[:, c]), "p99": _range(highs_a[:, c])}
                     for c, name in enumerate(channel_names)],
    }


def _percentiles(array: np.ndarray) -> tuple[float, float]:
    """1st and 99th percentile of a 3D array, on every ``s``-th voxel along each axis when it has more than
    :data:`_SAMPLE_VOXELS` (a CT of 150 M voxels in a fraction of a second and no float64 copy)."""
    array = np.asarray(array)
    step = max(1, math.ceil((array.size / _SAMPLE_VOXELS) ** (1 / 3)))
    sample = array[::step, ::step, ::step] if array.ndim == 3 else array
    low, high = np.percentile(sample, (1, 99))
    return float(low), float(high)


def _range(values: np.ndarray) -> list[float]:
    return [_round(float(np.min(values))), _round(float(np.max(values)))]


def _ranges(values: np.ndarray) -> list[list[float]]:
    return [_range(values[:, axis]) for axis in range(values.shape[1])]


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def domain_warnings(card: ModelCard, channels: np.ndarray, geometry: Geometry) -> list[str]:
    """Plain-language warnings for an input unlike the card's training inputs (empty without ``input_domain``).

    Args:
        card: the model's card.
        channels: ``(C, Z, Y, X)`` raw intensities of what will be segmented (after an ROI crop).
        geometry: their grid.

    Returns:
        One message per difference, naming the input's value, the training range and what to check.
    """
    domain = getattr(card, "input_domain", None)
    if not domain:
        return []
    channels = np.asarray(channels)
    extent, spacing = patient_extent(channels.shape[1:], geometry)
    out = []
    finer_too = getattr(card, "spacing", None) is None  # a card with a spacing resamples finer inputs to it
    for what, values, ranges, factor, smaller in (("size", extent, domain["extent_mm"], SIZE_FACTOR, True),
                                                  ("voxel spacing", spacing, domain["spacing_mm"], SPACING_FACTOR,
                                                   finer_too)):
        message = _scale_warning(card, what, values, ranges, factor, domain["cases"], smaller)
        if message:
            out.append(message)
    for channel, described, array in zip(card.inputs, domain["channels"], channels, strict=True):
        message = _intensity_warning(card, channel, described, array)
        if message:
            out.append(message)
    return out


def _scale_warning(card: ModelCard, what: str, values: np.ndarray, ranges: list, factor: float,
                   cases: int, smaller: bool = True) -> str | None:
    """A message when ``values`` (one per patient axis) are ``factor`` times above the training ranges, or below
    them when ``smaller``; None otherwise."""
    ratios = []
    for axis, (value, (low, high)) in enumerate(zip(values, ranges, strict=True)):
        if value > factor * high:
            ratios.append(f"{value:.4g} mm along {_AXES[axis]} ({value / high:.3g}x the largest, {high:.4g} mm)")
        elif smaller and value * factor < low:
            ratios.append(f"{value:.4g} mm along {_AXES[axis]} ({low / value:.3g}x below the smallest, {low:.4g} mm)")
    if not ratios:
        return None
    trained = " x ".join(f"{lo:.4g}" if lo == hi else f"{lo:.4g}-{hi:.4g}" for lo, hi in ranges)
    hint = ("crop the input to the region the model was trained on (--roi, or a markups ROI in Slicer)"
            if what == "size" else "check that the series has the resolution the model was trained on")
    return (f"the input's {what} is far outside what model {card.name!r} was trained on: {'; '.join(ratios)} "
            f"(its {cases} training cases: {trained} mm along L x P x S); the result may be unreliable: {hint}, "
            f"and that this is the intended model")


def _intensity_warning(card: ModelCard, channel, described: dict, array: np.ndarray) -> str | None:
    norm = channel.normalization
    clip = norm.window if norm.kind == "ct" else None  # compare what the network sees: values inside the window
    low, high = _clipped(_percentiles(array), clip)
    p01, p99 = _clipped(described["p01"], clip), _clipped(described["p99"], clip)
    (low_min, low_max), (_, high_max) = p01, p99
    clipped = f" clipped to the card's window {_fmt(clip)} HU" if clip else ""
    trained = f"training cases' 1st percentiles {_fmt(p01)}, 99th percentiles {_fmt(p99)}{clipped}"
    where = f"input channel {channel.name!r} ({channel.modality})"
    if norm.kind in _ABSOLUTE_SCALE:
        margin = INTENSITY_MARGIN * max(high_max - low_min, 1e-6)
        if low < low_min - margin or high > high_max + margin:
            return (f"{where} has intensities far outside what model {card.name!r} was trained on: 1st percentile "
                    f"{low:.4g}, 99th percentile {high:.4g}{clipped} ({trained}); check the modality and units (CT "
                    f"in HU) and that this is the intended model")
        if _clearly_negative(low_max, high_max, low_min) and not _clearly_negative(low, high, low):
            return (f"{where} has no negative intensities: 1st percentile {low:.4g}{clipped}, but every training "
                    f"case of model {card.name!r} had one well below 0 ({trained}, as air and fat in a CT in HU); "
                    f"check that the image is a {channel.modality} in the units the model expects (not an MR, not "
                    f"a CT stored without its rescale to HU, e.g. 0..4095) and that this is the intended model")
        return None
    if low_min >= 0 and low < -NEGATIVE_FRACTION * max(high - low, 1e-6):
        hu = " (air at -1000 as in a CT in HU)" if low <= -500 else ""
        return (f"{where} has negative intensities{hu}: 1st percentile {low:.4g}, but every training case of model "
                f"{card.name!r} was non-negative ({trained}); check that the image is the kind of {channel.modality} "
                f"image the model expects")
    return None


def _clipped(pair: Sequence[float], window: Sequence[float] | None) -> tuple[float, float]:
    """``pair`` clipped to ``window`` (unchanged without one)."""
    if window is None:
        return float(pair[0]), float(pair[1])
    return tuple(float(min(max(v, window[0]), window[1])) for v in pair)  # type: ignore[return-value]


def _clearly_negative(p01: float, p99: float, lowest: float) -> bool:
    """Whether a 1st percentile ``p01`` is below 0 by more than :data:`NEGATIVE_FRACTION` of ``p99 - lowest``."""
    return p01 < -NEGATIVE_FRACTION * max(p99 - lowest, 1e-6)


def _fmt(pair: Sequence[float]) -> str:
    return f"{pair[0]:.4g} to {pair[1]:.4g}"


def input_domain_problems(domain: Any, channel_names: Sequence[str]) -> list[tuple[str, str]]:
    """``(field, problem)`` for each bad part of a card's ``input_domain`` (see the module docstring)."""
    if not isinstance(domain, dict):
        return [("input_domain", f"expected an object with cases, extent_mm, spacing_mm, channels, got {domain!r}")]
    problems = []
    cases = domain.get("cases")
    if isinstance(cases, bool) or not isinstance(cases, int) or cases < 1:
        problems.append(("input_domain.cases", f"expected a positive integer, got {cases!r}"))
    for key in ("extent_mm", "spacing_mm"):
        value = domain.get(key)
        if not (isinstance(value, list) and len(value) == 3 and all(_pair(v, positive=True) for v in value)):
            problems.append((f"input_domain.{key}", f"expected 3 [low, high] pairs of positive mm (L, P, S) with "
                                                    f"low <= high, got {value!r}"))
    described = domain.get("channels")
    if not (isinstance(described, list) and len(described) == len(channel_names)):
        problems.append(("input_domain.channels", f"expected {len(channel_names)} entries (one per input channel), "
                                                  f"got {described!r}"))
        return problems
    for n, entry in enumerate(described):
        where = f"input_domain.channels[{n}]"
        if not isinstance(entry, dict):
            problems.append((where, f"expected an object with name, p01, p99, got {entry!r}"))
            continue
        if entry.get("name") != channel_names[n]:
            problems.append((f"{where}.name", f"expected {channel_names[n]!r} (inputs[{n}].name), got "
                                              f"{entry.get('name')!r}"))
        for key in ("p01", "p99"):
            if not _pair(entry.get(key)):
                problems.append((f"{where}.{key}", f"expected [low, high] finite numbers with low <= high, got "
                                                   f"{entry.get(key)!r}"))
    return problems


def _pair(value: Any, positive: bool = False) -> bool:
    if not (isinstance(value, list | tuple) and len(value) == 2):
        return False
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return False
    return value[0] <= value[1] and (not positive or value[0] > 0)
