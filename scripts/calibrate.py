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

The fit itself is the engine's (``medseg.calibration_fit``, shared with ``medseg finetune``, which refits a
fine-tuned network on its parent's validation split). The JSON written to ``--out`` holds the measures and
``card_calibration``, the object to store with
``scripts/update_card.py CHECKPOINT --set calibration='<card_calibration>'``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from medseg.calibration import ECE_BINS
from medseg.calibration_fit import LabelledCase, fit_calibration
from medseg.catalog import resolve_checkpoint
from medseg.checkpoint import load_checkpoint
from medseg.io import read_image


def _case(images: Path, labels: Path, name: str) -> LabelledCase:
    def read():
        image, geometry = read_image(images / f"{name}.nii.gz")
        truth, _ = read_image(labels / f"{name}.nii.gz")
        return image, geometry, truth

    return LabelledCase(name, read)


def calibrate(args: argparse.Namespace) -> dict:
    """The fit (``medseg.calibration_fit.fit_calibration``) on the split's validation cases, with the run's facts."""
    path = resolve_checkpoint(args.model)
    loaded = load_checkpoint(path)
    split = json.loads(Path(args.split).read_text())
    cases = split["validation"][: args.limit] if args.limit else split["validation"]
    print(f"{loaded.card.name}: {len(cases)} validation cases of {args.split}", flush=True)
    fitted_on = f"{len(cases)} validation cases of {Path(args.split).name} ({datetime.date.today()})"
    fit = fit_calibration(loaded, [_case(Path(args.images), Path(args.labels), c) for c in cases],
                          fitted_on=fitted_on, band_mm=args.band_mm, level=args.level, device=args.device,
                          threads=args.threads, report=lambda line: print(line, flush=True))
    return {"model": loaded.card.name, "checkpoint": str(path), "split": str(args.split), "cases": cases,
            "band_mm": args.band_mm, "ece_bins": ECE_BINS, "level": args.level, **fit}


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
