"""Calibration of a model's outputs: a temperature for its probabilities and a conformal volume interval.

Both are fitted on the model's validation cases by ``scripts/calibrate.py`` and stored in the card's optional
``calibration`` object::

    "calibration": {
        "temperature": 1.4, "fitted_on": "...", "band_mm": 3.0,
        "ece_before": 0.034, "ece_after": 0.012, "brier_before": ..., "brier_after": ...,
        "volume_interval": {"level": 0.9, "method": "split-conformal relative volume error",
                            "per_label": {"anterior": {"q": 0.12, "n": 42, "coverage_loo": 0.9,
                                                       "mean_width_ml": 0.4}}}}

- **Temperature** T: inference divides the blended logits by T before the soft-max, so probabilities,
  entropy, soft volumes and the TTA variance are the calibrated ones; the arg-max (the labels) does not
  change for T > 0. On probabilities already soft-maxed, :func:`temper` is the same map
  (``softmax(z / T) == p ** (1/T) / sum(p ** (1/T))``).
- **Volume interval**: split-conformal over a normalised volume error of the validation cases,
  ``s = |V_ref - V| / scale``, with scale ``V`` (RELATIVE), 1 mL (ABSOLUTE) or ``|V_soft - V| + 0.01 V``
  (SOFT_GAP; the soft volume with the card's temperature). ``q`` is the ``ceil((n + 1) level)``-th smallest
  score, and the interval of a new prediction is ``V -+ q scale`` (clipped at 0); RELATIVE gives
  ``[V (1 - q), V (1 + q)]``. Under exchangeability of the validation and new cases it contains the
  reference volume with probability at least ``level``. V is the post-processed hard volume.

The measures (ECE, Brier, NLL) work on ``(N, K)`` arrays of voxel probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ECE_BINS", "TEMPERATURE_RANGE", "VolumeIntervalCalibration", "brier_score", "calibration_problems",
           "conformal_quantile", "expected_calibration_error", "fit_temperature", "loo_coverage",
           "negative_log_likelihood", "relative_interval", "temper", "temperature_of", "volume_interval_of"]

TEMPERATURE_RANGE = (0.05, 20.0)
ECE_BINS = 15  # equal-width bins over the top-class confidence
RELATIVE = "split-conformal relative volume error"
ABSOLUTE = "split-conformal absolute volume error"
SOFT_GAP = "split-conformal volume error over the soft-hard volume gap"
METHODS = (RELATIVE, ABSOLUTE, SOFT_GAP)
GAP_FLOOR = 0.01  # SOFT_GAP's scale is |V_soft - V| + 1 % of V, never 0 for a non-empty prediction
_MAX_Q = 100.0  # a relative error quantile above this is no interval


@dataclass(frozen=True)
class VolumeIntervalCalibration:
    """The card's conformal volume interval: coverage level, method and per-label-id quantile ``q``."""

    level: float
    method: str
    q: Mapping[int, float]

    @property
    def needs_soft_volume(self) -> bool:
        return self.method == SOFT_GAP

    def interval(self, label_id: int, volume_ml: float, soft_ml: float | None = None) -> tuple[float, float] | None:
        """The interval for a predicted volume of label `label_id` (and its soft volume, for SOFT_GAP), or None when
        the label was not calibrated or its soft volume is missing."""
        if label_id not in self.q or (self.needs_soft_volume and soft_ml is None):
            return None
        half = self.q[label_id] * interval_scale(self.method, volume_ml, soft_ml)
        return max(0.0, volume_ml - half), volume_ml + half


def interval_scale(method: str, volume_ml: float, soft_ml: float | None = None) -> float:
    """What the nonconformity score divides the volume error by (the interval's half-width is q times it)."""
    if method == RELATIVE:
        return volume_ml
    if method == ABSOLUTE:
        return 1.0
    return abs(float(soft_ml) - volume_ml) + GAP_FLOOR * volume_ml


def relative_interval(volume_ml: float, q: float) -> tuple[float, float]:
    """``[V (1 - q), V (1 + q)]``, the low end clipped at 0."""
    return max(0.0, volume_ml * (1.0 - q)), volume_ml * (1.0 + q)


# -- the card field -----------------------------------------------------------------------------------------
def _num(value: Any, low: float, high: float) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            and low <= value <= high)


def calibration_problems(cal: Any, label_names: Sequence[str]) -> list[tuple[str, str]]:
    """(path, problem) for each bad part of a card's ``calibration`` object (empty: valid)."""
    if not isinstance(cal, dict):
        return [("calibration", f"expected an object, got {type(cal).__name__}")]
    out = []
    if "temperature" in cal and not _num(cal["temperature"], *TEMPERATURE_RANGE):
        out.append(("calibration.temperature",
                    f"expected a finite number in [{TEMPERATURE_RANGE[0]:g}, {TEMPERATURE_RANGE[1]:g}], "
                    f"got {cal['temperature']!r:.80}"))
    for key in ("ece_before", "ece_after", "brier_before", "brier_after"):
        if key in cal and cal[key] is not None and not _num(cal[key], 0.0, 2.0):
            out.append((f"calibration.{key}", f"expected a finite number in [0, 2], got {cal[key]!r:.80}"))
    if "band_mm" in cal and not _num(cal["band_mm"], 0.0, 1000.0):
        out.append(("calibration.band_mm", f"expected a finite number in [0, 1000], got {cal['band_mm']!r:.80}"))
    if "volume_interval" in cal:
        out += _interval_problems(cal["volume_interval"], label_names)
    return out


def _interval_problems(vi: Any, label_names: Sequence[str]) -> list[tuple[str, str]]:
    where = "calibration.volume_interval"
    if not isinstance(vi, dict):
        return [(where, f"expected an object, got {type(vi).__name__}")]
    out = []
    if not _num(vi.get("level"), 0.5, 0.999):
        out.append((f"{where}.level", f"expected a coverage level in [0.5, 0.999], got {vi.get('level')!r:.80}"))
    if vi.get("method") not in METHODS:
        out.append((f"{where}.method", f"expected one of {list(METHODS)}, got {vi.get('method')!r:.80}"))
    per_label = vi.get("per_label")
    if not isinstance(per_label, dict) or not per_label:
        return [*out, (f"{where}.per_label", "expected an object {label name: {q, n, ...}} with at least one label")]
    for name, entry in per_label.items():
        at = f"{where}.per_label.{name}"
        if name not in label_names:
            out.append((at, f"no such foreground label; the card's labels are {list(label_names)}"))
        elif not isinstance(entry, dict) or not _num(entry.get("q"), 0.0, _MAX_Q):
            out.append((f"{at}.q", f"expected a finite number in [0, {_MAX_Q:g}]"))
        elif "n" in entry and not (type(entry["n"]) is int and entry["n"] >= 1):
            out.append((f"{at}.n", f"expected a positive integer, got {entry['n']!r:.80}"))
    return out


def temperature_of(card: Any) -> float:
    """The card's fitted temperature, 1.0 when it has none."""
    cal = getattr(card, "calibration", None) or {}
    return float(cal.get("temperature", 1.0))


def volume_interval_of(card: Any) -> VolumeIntervalCalibration | None:
    """The card's conformal volume interval (label names mapped to ids), or None when it has none."""
    vi = (getattr(card, "calibration", None) or {}).get("volume_interval")
    if not vi:
        return None
    ids = {label.name: label.id for label in card.labels}
    q = {ids[name]: float(entry["q"]) for name, entry in vi["per_label"].items() if name in ids}
    return VolumeIntervalCalibration(float(vi["level"]), str(vi["method"]), q)


# -- temperature ----------------------------------------------------------------------------------------------
def temper(probabilities: np.ndarray, temperature: float, axis: int = 0) -> np.ndarray:
    """``softmax(log p / T)`` along `axis`: the probabilities the logits divided by T would give (float32)."""
    if temperature == 1.0:
        return probabilities
    logp = np.log(np.clip(probabilities, 1e-30, None, dtype=np.float32)) / np.float32(temperature)
    logp -= logp.max(axis=axis, keepdims=True)
    np.exp(logp, out=logp)
    logp /= logp.sum(axis=axis, keepdims=True)
    return logp


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def negative_log_likelihood(log_probs: np.ndarray, target: np.ndarray, temperature: float = 1.0) -> float:
    """Mean NLL of `target` (N,) under ``softmax(log_probs / T)`` (`log_probs` (N, K): logits or log p)."""
    lp = _log_softmax(log_probs / temperature)
    return float(-lp[np.arange(len(target)), target].mean(dtype=np.float64))


def fit_temperature(log_probs: np.ndarray, target: np.ndarray, tol: float = 1e-4) -> float:
    """The T in TEMPERATURE_RANGE that minimises the NLL: golden-section search on log T (the NLL is convex in
    1/T, so unimodal in log T)."""
    a, b = math.log(TEMPERATURE_RANGE[0]), math.log(TEMPERATURE_RANGE[1])
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = (negative_log_likelihood(log_probs, target, math.exp(x)) for x in (c, d))
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = negative_log_likelihood(log_probs, target, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = negative_log_likelihood(log_probs, target, math.exp(d))
    return math.exp((a + b) / 2)


def expected_calibration_error(probs: np.ndarray, target: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over `bins` equal-width bins of the top-class confidence: sum over bins of |accuracy - confidence|
    weighted by the fraction of voxels in the bin."""
    conf = probs.max(1)
    correct = probs.argmax(1) == target
    which = np.minimum((conf * bins).astype(np.int64), bins - 1)
    acc = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    conf_sum = np.bincount(which, weights=conf.astype(np.float64), minlength=bins)
    return float(np.abs(acc - conf_sum).sum() / max(len(target), 1))


def brier_score(probs: np.ndarray, target: np.ndarray) -> float:
    """Multi-class Brier score: mean over voxels of sum over classes of (p_k - [k == target])^2."""
    sq = (probs.astype(np.float64) ** 2).sum(1)
    sq -= 2 * probs[np.arange(len(target)), target]
    return float((sq + 1).mean())


# -- conformal volume interval --------------------------------------------------------------------------------
def conformal_quantile(scores: Sequence[float], level: float) -> float:
    """Split-conformal quantile: the ``ceil((n + 1) level)``-th smallest score (inf when that exceeds n)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    rank = math.ceil((len(s) + 1) * level)
    return float(s[rank - 1]) if rank <= len(s) else math.inf


def loo_coverage(scores: Sequence[float], level: float) -> float:
    """Leave-one-out coverage: the fraction of cases whose score is within the quantile of the others."""
    s = np.asarray(scores, dtype=np.float64)
    hits = [s[i] <= conformal_quantile(np.delete(s, i), level) for i in range(len(s))]
    return float(np.mean(hits)) if hits else math.nan
