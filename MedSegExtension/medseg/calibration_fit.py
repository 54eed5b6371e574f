"""Fitting a model's calibration on labelled cases: the card's temperature and conformal volume interval.

Used by ``scripts/calibrate.py`` (a bundled model on its validation split) and ``medseg finetune`` (the fine-tuned
network on its parent's validation split); the measures and the card field are :mod:`medseg.calibration`'s.

Each case is segmented by the engine (:class:`medseg.inference.Segmenter`, default options, the card's calibration
ignored: T = 1), exactly as ``medseg segment`` would: with the card's default post-processing
(``ModelCard.postprocess``), which the fit records as ``postprocessing`` in its result and in the card's object.

- Temperature: the voxels within ``band_mm`` of a reference or predicted boundary of any foreground label
  (|SimpleITK signed Maurer distance| <= band, in mm) are pooled; T minimises their NLL
  (:func:`medseg.calibration.fit_temperature`, at most :data:`FIT_VOXELS` voxels, a seeded sample). ECE (15
  equal-width bins) and the multi-class Brier score are measured in that band before and after, on the same cases
  (in-sample) and 2-fold cross-fitted (T fitted on one half of the cases, measured on the other, both ways, pooled).
- Volume interval: split-conformal at ``level`` over the cases' volume errors, three nonconformity scores compared
  by leave-one-out coverage and mean width: ``relative`` |V_ref - V| / V, ``absolute`` |V_ref - V| (mL),
  ``soft_gap`` |V_ref - V| / (|V_soft - V| + 0.01 V), the soft volume at the fitted temperature as inference
  computes it (a second pass over the cases). V is the post-processed hard volume that ``medseg segment`` reports.
  The card gets the variant with the smallest leave-one-out mean width relative to the volume (summed over labels)
  among those whose leave-one-out coverage is at least the level for every label. A label whose quantile is not
  finite (fewer than :func:`min_cases`: 9 at 90 %) gets no interval; with none left the card has
  no ``volume_interval`` and :func:`card_calibration` says why in ``notes``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from .calibration import (
    _MAX_Q,
    ABSOLUTE,
    ECE_BINS,
    RELATIVE,
    SOFT_GAP,
    brier_score,
    conformal_quantile,
    expected_calibration_error,
    fit_temperature,
    interval_scale,
    loo_coverage,
    temper,
)
from .geometry import Geometry

__all__ = ["FIT_VOXELS", "VARIANTS", "LabelledCase", "band_mask", "card_calibration", "choose_variant",
           "collect_cases", "fit_calibration", "interval_report", "min_cases", "soft_gap_scales", "temperature_report"]

FIT_VOXELS = 2_000_000  # band voxels used to fit T (a seeded sample when there are more)
VARIANTS = {"relative": RELATIVE, "absolute": ABSOLUTE, "soft_gap": SOFT_GAP}


@dataclass(frozen=True)
class LabelledCase:
    """A case to calibrate on: `read()` returns ``(channels, geometry, reference label map)`` in the input's own
    space (channels as :meth:`medseg.inference.Segmenter.segment` takes them), read when needed."""

    name: str
    read: Callable[[], tuple[np.ndarray, Geometry, np.ndarray]]


def band_mask(reference: np.ndarray, predicted: np.ndarray, spacing, labels, band_mm: float) -> np.ndarray:
    """Voxels within `band_mm` of the boundary of any foreground label of `reference` or `predicted`."""
    band = np.zeros(reference.shape, dtype=bool)
    for label_map in (reference, predicted):
        for lid in labels:
            mask = label_map == lid
            if not mask.any():
                continue
            img = sitk.GetImageFromArray(mask.astype(np.uint8))
            img.SetSpacing(tuple(float(s) for s in spacing))
            dist = sitk.SignedMaurerDistanceMap(img, insideIsPositive=False, squaredDistance=False,
                                                useImageSpacing=True)
            band |= np.abs(sitk.GetArrayViewFromImage(dist)) <= band_mm
    return band


def collect_cases(segmenter, cases: Sequence[LabelledCase], band_mm: float,
                  report: Callable[[str], None] = lambda line: None) -> list[dict]:
    """Per case: band voxels' log-probabilities and targets, and per label the hard and reference volume."""
    from .inference import SegmentOptions

    ids = [label.id for label in segmenter.card.foreground_labels]
    out = []
    for i, case in enumerate(cases):
        t = time.perf_counter()
        image, geometry, truth = case.read()
        truth = np.asarray(truth).astype(np.int64)
        res = segmenter.segment(image, geometry, SegmentOptions(probabilities=True))
        band = band_mask(truth, res.labels, geometry.spacing, ids, band_mm)
        probs = res.probabilities[:, band].T  # (N, K)
        volumes = {m.label_id: {"hard": m.volume_ml,
                                "ref": float((truth == m.label_id).sum()) * geometry.voxel_volume_ml}
                   for m in res.measurements}
        out.append({"case": case.name, "log_probs": np.log(np.clip(probs, 1e-30, None)).astype(np.float32),
                    "target": truth[band], "volumes": volumes, "voxel_ml": geometry.voxel_volume_ml})
        report(f"  [{i + 1}/{len(cases)}] {case.name}: {band.sum()} band voxels, {time.perf_counter() - t:.1f} s")
    return out


def _pool(cases: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([c["log_probs"] for c in cases]), np.concatenate([c["target"] for c in cases])


def _fit(cases: list[dict], seed: int = 0) -> float:
    logp, target = _pool(cases)
    if len(target) > FIT_VOXELS:
        pick = np.random.default_rng(seed).choice(len(target), FIT_VOXELS, replace=False)
        logp, target = logp[pick], target[pick]
    return fit_temperature(logp, target)


def _measures(cases: list[dict], temperature: float) -> dict:
    logp, target = _pool(cases)
    probs = temper(np.exp(logp), temperature, axis=1)
    return {"ece": expected_calibration_error(probs, target), "brier": brier_score(probs, target),
            "voxels": len(target)}


def temperature_report(cases: list[dict]) -> dict:
    """T fitted on all cases with in-sample measures, and 2-fold cross-fitted measures (None with one case)."""
    t_all = _fit(cases)
    before, after = _measures(cases, 1.0), _measures(cases, t_all)
    return {"temperature": t_all, "in_sample": {"before": before, "after": after},
            "cross_fitted": _cross_fitted(cases) if len(cases) >= 2 else None, "lowest_ece_over_t": _lowest_ece(cases)}


def _cross_fitted(cases: list[dict]) -> dict:
    order = np.random.default_rng(0).permutation(len(cases))
    halves = [[cases[i] for i in order[: len(cases) // 2]], [cases[i] for i in order[len(cases) // 2:]]]
    folds, tempered = [], []
    for fit_on, measure_on in ((0, 1), (1, 0)):
        t = _fit(halves[fit_on])
        folds.append({"temperature": t, "fit_cases": len(halves[fit_on]), "measure_cases": len(halves[measure_on]),
                      "before": _measures(halves[measure_on], 1.0), "after": _measures(halves[measure_on], t)})
        logp, target = _pool(halves[measure_on])
        tempered.append((temper(np.exp(logp), t, axis=1), target))
    probs, target = np.concatenate([p for p, _ in tempered]), np.concatenate([t for _, t in tempered])
    return {"ece_after": expected_calibration_error(probs, target), "brier_after": brier_score(probs, target),
            "folds": folds}


def _lowest_ece(cases: list[dict]) -> dict:
    """The lowest in-sample ECE any single temperature reaches (a grid of 41 T from 0.5 to 4, log-spaced): what
    the NLL fit could at best have given on this measure."""
    logp, target = _pool(cases)
    p = np.exp(logp)
    grid = np.geomspace(0.5, 4.0, 41)
    eces = [expected_calibration_error(temper(p, float(t), axis=1), target) for t in grid]
    best = int(np.argmin(eces))
    return {"ece": eces[best], "temperature": float(grid[best])}


def _scores(v: dict, variant: str) -> tuple[float, float]:
    """(score, scale): the nonconformity score of one case and the scale its interval half-width is q times."""
    err = abs(v["ref"] - v["hard"])
    scale = v["soft_scale"] if variant == "soft_gap" else interval_scale(VARIANTS[variant], v["hard"])
    return (err / scale if scale > 0 else (0.0 if err == 0 else math.inf)), scale


def interval_report(cases: list[dict], labels: dict[int, str], level: float) -> dict:
    """Per variant and label: q on all cases, leave-one-out coverage and LOO mean width, in-sample mean width."""
    out = {}
    for variant in VARIANTS:
        per_label = {}
        for lid, name in labels.items():
            vols = [c["volumes"][lid] for c in cases]
            scores, scales = zip(*(_scores(v, variant) for v in vols), strict=True)
            q = conformal_quantile(scores, level)
            loo_widths = []
            for i, v in enumerate(vols):
                qi = conformal_quantile(np.delete(np.asarray(scores), i), level)
                loo_widths.append(_width(v["hard"], qi * scales[i]))
            per_label[name] = {"q": q, "n": len(scores), "coverage_loo": loo_coverage(scores, level),
                               "mean_width_ml": float(np.mean([_width(v["hard"], q * s)
                                                               for v, s in zip(vols, scales, strict=True)])),
                               "mean_width_loo_ml": float(np.mean(loo_widths)),
                               "mean_volume_ml": float(np.mean([v["hard"] for v in vols]))}
        out[variant] = per_label
    return out


def _width(volume: float, half: float) -> float:
    return volume + half - max(0.0, volume - half)


def soft_gap_scales(segmenter, data: list[dict], cases: Sequence[LabelledCase]) -> None:
    """Each case's soft-gap scale |V_soft - V| + 0.01 V as inference computes it (the soft volume at the card's
    temperature, summed on the network's grid): read back from the engine's own interval with q = 1 (the
    segmenter's card has a soft-gap interval with q 1 for every label), so the calibration and inference agree."""
    for c, case in zip(data, cases, strict=True):
        image, geometry, _ = case.read()
        for m in segmenter.segment(image, geometry).measurements:
            c["volumes"][m.label_id]["soft_scale"] = m.volume_interval_ml[1] - m.volume_ml


def choose_variant(intervals: dict, level: float) -> str:
    """The covering variant with the smallest leave-one-out width relative to the volume, summed over labels."""
    def relative_width(variant: str) -> float:
        total = sum(x["mean_width_loo_ml"] / x["mean_volume_ml"] if x["mean_volume_ml"] > 0 else math.inf
                    for x in intervals[variant].values())
        return total if math.isfinite(total) else math.inf

    covering = [v for v, per in intervals.items() if all(x["coverage_loo"] >= level for x in per.values())]
    return min(covering or list(intervals), key=relative_width)


def min_cases(level: float) -> int:
    """The fewest cases whose split-conformal quantile at `level` is finite: ``ceil((n + 1) level) <= n``."""
    n = 1
    while math.ceil((n + 1) * level) > n:
        n += 1
    return n


def card_calibration(temp: dict, intervals: dict, variant: str, level: float, band_mm: float,
                     fitted_on: str, postprocessing: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card's ``calibration`` object; labels without a finite quantile get no interval (said in ``notes``);
    `postprocessing` (the steps the fitted volumes had, ``PostprocessOptions.to_dict()``) is recorded as given."""
    chosen = intervals[variant]
    per_label = {name: {"q": round(v["q"], 5), "n": v["n"], "coverage_loo": round(v["coverage_loo"], 4),
                        "mean_width_ml": round(v["mean_width_ml"], 4)}
                 for name, v in chosen.items() if math.isfinite(v["q"]) and v["q"] <= _MAX_Q
                 and math.isfinite(v["mean_width_ml"])}
    out: dict[str, Any] = {
        "temperature": round(temp["temperature"], 4), "fitted_on": fitted_on, "band_mm": band_mm,
        "ece_bins": ECE_BINS,
        "ece_before": round(temp["in_sample"]["before"]["ece"], 5),
        "ece_after": round(temp["in_sample"]["after"]["ece"], 5),
        "brier_before": round(temp["in_sample"]["before"]["brier"], 5),
        "brier_after": round(temp["in_sample"]["after"]["brier"], 5),
    }
    if temp["cross_fitted"] is not None:
        out["ece_after_cross_fitted"] = round(temp["cross_fitted"]["ece_after"], 5)
    if postprocessing is not None:
        out["postprocessing"] = postprocessing
    if per_label:
        out["volume_interval"] = {"level": level, "method": VARIANTS[variant], "per_label": per_label}
    missing = [name for name in chosen if name not in per_label]
    if missing:
        n = max(v["n"] for v in chosen.values())
        out["notes"] = (f"no {level:g} volume interval for {', '.join(missing)}: {n} validation case(s) cannot "
                        f"give a finite split-conformal quantile (at least {min_cases(level)} needed)")
    return out


def fit_calibration(loaded, cases: Sequence[LabelledCase], *, fitted_on: str, band_mm: float = 3.0,
                    level: float = 0.9, device: str = "cpu", threads: int | None = None,
                    compare_temperature: float | None = None,
                    report: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Fit the temperature and the volume interval of `loaded` (a :class:`medseg.checkpoint.LoadedModel`) on
    `cases`.

    Args:
        compare_temperature: also measure ECE and Brier in-sample at this temperature (``medseg finetune``: the
            parent's, to show what keeping it would have given), as ``temperature.in_sample.compared``.

    Returns:
        ``{"temperature": ..., "volume_interval": {variant: per label}, "chosen_interval": variant, "seconds": s,
        "postprocessing": the card's default the cases were segmented with, "card_calibration": the card's
        calibration object}``.
    """
    from .inference import Segmenter
    from .postprocess import card_default

    if not cases:
        raise ValueError("calibration needs at least one labelled validation case")
    t = time.perf_counter()
    plain = dataclasses.replace(loaded, card=dataclasses.replace(loaded.card, calibration=None))  # T = 1
    segmenter = Segmenter(plain, device=device, threads=threads)
    data = collect_cases(segmenter, cases, band_mm, report)
    labels = {label.id: label.name for label in loaded.card.foreground_labels}
    temp = temperature_report(data)
    if compare_temperature is not None:
        temp["in_sample"]["compared"] = {"temperature": compare_temperature,
                                         **_measures(data, compare_temperature)}
    unit = {"level": level, "method": SOFT_GAP, "per_label": {name: {"q": 1.0} for name in labels.values()}}
    tempered = dataclasses.replace(loaded.card, calibration={"temperature": temp["temperature"],
                                                             "volume_interval": unit})
    soft_gap_scales(Segmenter(dataclasses.replace(loaded, card=tempered), device=device), data, cases)
    intervals = interval_report(data, labels, level)
    variant = choose_variant(intervals, level)
    steps = card_default(loaded.card).to_dict()
    return {"temperature": temp, "volume_interval": intervals, "chosen_interval": variant,
            "device": str(segmenter.device), "seconds": round(time.perf_counter() - t, 1),
            "postprocessing": {**steps, "source": "card"},
            "card_calibration": card_calibration(temp, intervals, variant, level, band_mm, fitted_on, steps)}
