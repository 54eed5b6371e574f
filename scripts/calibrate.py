#!/usr/bin/env python3
"""Fit a model's calibration on its validation cases: a temperature and a conformal volume interval.

    .venv/bin/python scripts/calibrate.py --model hippocampus-unet3d --images ../shared/data/hippocampus/imagesTr \\
        --labels ../shared/data/hippocampus/labelsTr --split Resources/Models/hippocampus-unet3d.split.json \\
        [--band-mm 3] [--level 0.9] [--out scripts/results/calibration_hippocampus-unet3d.json]

Each validation case of the split is segmented (default options, the card's calibration ignored: T = 1).

Temperature: the voxels within ``--band-mm`` of a reference or predicted boundary of any foreground label
(|SimpleITK signed Maurer distance| <= band, in mm) are collected; T minimises their NLL (golden-section
search on log T, ``medseg.calibration.fit_temperature``). ECE (15 equal-width bins over the top-class
confidence) and the multi-class Brier score are measured in that band before and after, on the same cases
(in-sample) and 2-fold cross-fitted (T fitted on one half of the cases, measured on the other, both ways,
pooled).

Volume interval: split-conformal at ``--level`` over the validation cases' volume errors, three
nonconformity scores (``medseg.calibration``) compared by leave-one-out coverage and mean width:
``relative`` |V_ref - V| / V, ``absolute`` |V_ref - V| (mL), ``soft_gap`` |V_ref - V| / (|V_soft - V| +
0.01 V) with the soft volume at the fitted temperature as inference computes it (a second pass over the cases). V is the
post-processed hard volume that ``medseg segment`` reports. The card gets the variant with the smallest
leave-one-out mean width relative to the volume (summed over labels) among those whose leave-one-out
coverage is at least the level for every label.

The JSON written to ``--out`` holds the measures and ``card_calibration``, the object to store with
``scripts/update_card.py CHECKPOINT --set calibration='<card_calibration>'``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medseg.calibration import (
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
from medseg.catalog import resolve_checkpoint
from medseg.checkpoint import load_checkpoint
from medseg.inference import Segmenter, SegmentOptions
from medseg.io import read_image

_FIT_VOXELS = 2_000_000  # band voxels used to fit T (a seeded sample when there are more)
VARIANTS = {"relative": RELATIVE, "absolute": ABSOLUTE, "soft_gap": SOFT_GAP}


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


def run_cases(segmenter: Segmenter, cases: list[str], images: Path, labels: Path, band_mm: float) -> list[dict]:
    """Per case: band voxels' log-probabilities and targets, and per label the hard, soft and reference volume."""
    ids = [label.id for label in segmenter.card.foreground_labels]
    out = []
    for i, case in enumerate(cases):
        t = time.perf_counter()
        image, geometry = read_image(images / f"{case}.nii.gz")
        truth, _ = read_image(labels / f"{case}.nii.gz")
        truth = truth.astype(np.int64)
        res = segmenter.segment(image, geometry, SegmentOptions(probabilities=True))
        band = band_mask(truth, res.labels, geometry.spacing, ids, band_mm)
        probs = res.probabilities[:, band].T  # (N, K)
        volumes = {m.label_id: {"hard": m.volume_ml,
                                "ref": float((truth == m.label_id).sum()) * geometry.voxel_volume_ml}
                   for m in res.measurements}
        out.append({"case": case, "log_probs": np.log(np.clip(probs, 1e-30, None)).astype(np.float32),
                    "target": truth[band], "volumes": volumes, "voxel_ml": geometry.voxel_volume_ml})
        print(f"  [{i + 1}/{len(cases)}] {case}: {band.sum()} band voxels, {time.perf_counter() - t:.1f} s",
              flush=True)
    return out


def _pool(cases: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([c["log_probs"] for c in cases]), np.concatenate([c["target"] for c in cases])


def _fit(cases: list[dict], seed: int = 0) -> float:
    logp, target = _pool(cases)
    if len(target) > _FIT_VOXELS:
        pick = np.random.default_rng(seed).choice(len(target), _FIT_VOXELS, replace=False)
        logp, target = logp[pick], target[pick]
    return fit_temperature(logp, target)


def _measures(cases: list[dict], temperature: float) -> dict:
    logp, target = _pool(cases)
    probs = temper(np.exp(logp), temperature, axis=1)
    return {"ece": expected_calibration_error(probs, target), "brier": brier_score(probs, target),
            "voxels": len(target)}


def temperature_report(cases: list[dict]) -> dict:
    """T fitted on all cases with in-sample measures, and 2-fold cross-fitted measures."""
    t_all = _fit(cases)
    before, after = _measures(cases, 1.0), _measures(cases, t_all)
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
    cross = {"ece_after": expected_calibration_error(probs, target), "brier_after": brier_score(probs, target),
             "folds": folds}
    return {"temperature": t_all, "in_sample": {"before": before, "after": after}, "cross_fitted": cross,
            "lowest_ece_over_t": _lowest_ece(cases)}


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
                loo_widths.append(_width(v["hard"], qi * scales[i], variant))
            per_label[name] = {"q": q, "n": len(scores), "coverage_loo": loo_coverage(scores, level),
                               "mean_width_ml": float(np.mean([_width(v["hard"], q * s, variant)
                                                               for v, s in zip(vols, scales, strict=True)])),
                               "mean_width_loo_ml": float(np.mean(loo_widths)),
                               "mean_volume_ml": float(np.mean([v["hard"] for v in vols]))}
        out[variant] = per_label
    return out


def _width(volume: float, half: float, variant: str) -> float:
    return volume + half - max(0.0, volume - half)


def soft_gap_scales(segmenter: Segmenter, cases: list[dict], images: Path) -> None:
    """Each case's soft-gap scale |V_soft - V| + 0.01 V as inference computes it (the soft volume at the card's
    temperature, summed on the network's grid): read back from the engine's own interval with q = 1 (the
    segmenter's card has a soft-gap interval with q 1 for every label), so the calibration and inference agree."""
    for c in cases:
        image, geometry = read_image(images / f"{c['case']}.nii.gz")
        for m in segmenter.segment(image, geometry).measurements:
            c["volumes"][m.label_id]["soft_scale"] = m.volume_interval_ml[1] - m.volume_ml


def _choose(intervals: dict, level: float) -> str:
    """The covering variant with the smallest leave-one-out width relative to the volume, summed over labels."""
    covering = [v for v, per in intervals.items() if all(x["coverage_loo"] >= level for x in per.values())]
    return min(covering or list(intervals), key=lambda v: sum(x["mean_width_loo_ml"] / x["mean_volume_ml"]
                                                                for x in intervals[v].values()))


def calibrate(args: argparse.Namespace) -> dict:
    path = resolve_checkpoint(args.model)
    loaded = load_checkpoint(path)
    plain = dataclasses.replace(loaded, card=dataclasses.replace(loaded.card, calibration=None))  # T = 1
    segmenter = Segmenter(plain, device=args.device, threads=args.threads)
    split = json.loads(Path(args.split).read_text())
    cases = split["validation"][: args.limit] if args.limit else split["validation"]
    print(f"{loaded.card.name}: {len(cases)} validation cases of {args.split}", flush=True)
    t = time.perf_counter()
    data = run_cases(segmenter, cases, Path(args.images), Path(args.labels), args.band_mm)
    labels = {label.id: label.name for label in loaded.card.foreground_labels}
    temp = temperature_report(data)
    unit = {"level": args.level, "method": SOFT_GAP, "per_label": {name: {"q": 1.0} for name in labels.values()}}
    tempered = dataclasses.replace(loaded.card, calibration={"temperature": temp["temperature"],
                                                             "volume_interval": unit})
    segmenter = Segmenter(dataclasses.replace(loaded, card=tempered), device=args.device)
    soft_gap_scales(segmenter, data, Path(args.images))
    intervals = interval_report(data, labels, args.level)
    variant = _choose(intervals, args.level)
    chosen = intervals[variant]
    card_calibration = {
        "temperature": round(temp["temperature"], 4),
        "fitted_on": f"{len(cases)} validation cases of {Path(args.split).name} ({datetime.date.today()})",
        "band_mm": args.band_mm, "ece_bins": ECE_BINS,
        "ece_before": round(temp["in_sample"]["before"]["ece"], 5),
        "ece_after": round(temp["in_sample"]["after"]["ece"], 5),
        "ece_after_cross_fitted": round(temp["cross_fitted"]["ece_after"], 5),
        "brier_before": round(temp["in_sample"]["before"]["brier"], 5),
        "brier_after": round(temp["in_sample"]["after"]["brier"], 5),
        "volume_interval": {"level": args.level, "method": VARIANTS[variant], "per_label": {
            name: {"q": round(v["q"], 5), "n": v["n"], "coverage_loo": round(v["coverage_loo"], 4),
                   "mean_width_ml": round(v["mean_width_ml"], 4)} for name, v in chosen.items()}},
    }
    return {"model": loaded.card.name, "checkpoint": str(path), "split": str(args.split), "cases": cases,
            "band_mm": args.band_mm, "ece_bins": ECE_BINS, "level": args.level, "device": str(segmenter.device),
            "seconds": round(time.perf_counter() - t, 1), "temperature": temp, "volume_interval": intervals,
            "chosen_interval": variant, "card_calibration": card_calibration}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="bundled model name or checkpoint path")
    p.add_argument("--images", required=True, help="folder of <case>.nii.gz images")
    p.add_argument("--labels", required=True, help="folder of <case>.nii.gz reference label maps")
    p.add_argument("--split", required=True, help="the model's split JSON (its 'validation' cases are used)")
    p.add_argument("--band-mm", type=float, default=3.0, help="band around the boundaries for the voxel measures")
    p.add_argument("--level", type=float, default=0.9, help="coverage level of the volume interval")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--limit", type=int, default=0, help="only the first N validation cases (a quick check)")
    p.add_argument("--out", type=Path, help="JSON file for the results")
    args = p.parse_args(argv)
    result = calibrate(args)
    text = json.dumps(result, indent=1, default=float)
    if args.out:
        args.out.write_text(text + "\n")
        print(f"wrote {args.out}")
    cal = result["card_calibration"]
    temp = result["temperature"]
    print(f"T = {cal['temperature']}; ECE {cal['ece_before']:.4f} -> {cal['ece_after']:.4f} (cross-fitted "
          f"{temp['cross_fitted']['ece_after']:.4f}); Brier {cal['brier_before']:.4f} -> {cal['brier_after']:.4f}")
    for variant, per_label in result["volume_interval"].items():
        for name, v in per_label.items():
            print(f"  {variant:<9} {name:<12} q={v['q']:.4f} coverage_loo={v['coverage_loo']:.3f} "
                  f"width={v['mean_width_ml']:.3f} mL (LOO {v['mean_width_loo_ml']:.3f}) of {v['mean_volume_ml']:.3f}")
    print("card: --set calibration='" + json.dumps(cal) + "'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
