#!/usr/bin/env python3
"""Does a speed option change the segmentation? Dice on real validation cases, each option against fp32.

    .venv/bin/python scripts/benchmark_precision.py --model runs/hippocampus-unet3d/best.safetensors \\
        --data ../shared/data/hippocampus --split runs/hippocampus-unet3d/split.json

Prints JSON: per setting, the mean Dice per label against the expert labels, the largest per-case change
of Dice against fp32, the voxels whose label differs from fp32, and the time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from medseg.inference import Segmenter, SegmentOptions
from medseg.io import read_image
from medseg.postprocess import PostprocessOptions

SETTINGS = {
    "fp32": SegmentOptions(precision="fp32", measure=False, postprocess=PostprocessOptions()),
    "bf16": SegmentOptions(precision="bf16", measure=False, postprocess=PostprocessOptions()),
    "fp32-overlap0.25": SegmentOptions(precision="fp32", overlap=0.25, measure=False,
                                       postprocess=PostprocessOptions()),
}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, type=Path, help="Decathlon folder with imagesTr/ and labelsTr/")
    p.add_argument("--split", required=True, type=Path, help="split.json of the training run (its validation list)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    cases = json.loads(args.split.read_text())["validation"]
    seg = Segmenter(args.model, device=args.device)
    ids = [label.id for label in seg.card.foreground_labels]
    scores = {name: {i: [] for i in ids} for name in SETTINGS}
    changed = {name: 0 for name in SETTINGS}
    seconds = {name: 0.0 for name in SETTINGS}
    voxels = 0
    for case in cases:
        image, geometry = read_image(args.data / "imagesTr" / f"{case}.nii.gz")
        truth, _ = read_image(args.data / "labelsTr" / f"{case}.nii.gz")
        labels = {}
        for name, options in SETTINGS.items():
            t = time.perf_counter()
            labels[name] = seg.segment(image, geometry, options).labels
            seconds[name] += time.perf_counter() - t
            changed[name] += int((labels[name] != labels["fp32"]).sum())
            for i in ids:
                scores[name][i].append(dice(labels[name] == i, truth == i))
        voxels += image.size
    names = {label.id: label.name for label in seg.card.labels}
    report = {"model": args.model, "cases": len(cases), "device": args.device, "settings": {}}
    for name in SETTINGS:
        report["settings"][name] = {
            "mean_dice": {names[i]: round(float(np.mean(scores[name][i])), 4) for i in ids},
            "max_case_dice_change_vs_fp32": round(max(
                abs(a - b) for i in ids for a, b in zip(scores[name][i], scores["fp32"][i], strict=True)), 5),
            "voxels_changed_vs_fp32": changed[name], "voxels_changed_fraction": round(changed[name] / voxels, 6),
            "seconds": round(seconds[name], 2)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
