#!/usr/bin/env python
"""Measure cheap inference-time levers of the bundled hippocampus models on their validation split.

For each of the validation cases of `Resources/Models/hippocampus-unet3d.split.json` (the two hippocampus models
share it), the calibrated class probabilities of each model, with and without mirroring test-time augmentation,
and the average of the two models' probabilities (an ensemble), are scored with the Dice of each label against
the reference. Prints a Markdown table; ``--out`` also writes it.

    .venv/bin/python scripts/hippocampus_levers.py [--cases N] [--no-tta] [--out scripts/results/hippocampus_levers.md]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MedSegExtension"))

from medseg.inference import Segmenter, SegmentOptions  # noqa: E402
from medseg.io import read_image  # noqa: E402
from medseg.postprocess import PostprocessOptions  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "hippocampus"
MODELS = ("hippocampus-unet3d", "hippocampus-unetpp")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=0, help="only the first N validation cases (0: all)")
    p.add_argument("--no-tta", action="store_true", help="skip the test-time augmentation variants (9x the time)")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} is missing: this measurement needs ../shared/data/hippocampus")
    split = json.loads((ROOT / "Resources/Models/hippocampus-unet3d.split.json").read_text())
    cases = split["validation"][: args.cases or None]
    segmenters = {m: Segmenter(m, device="cpu") for m in MODELS}
    variants: dict[str, list[list[float]]] = {}
    seconds: dict[str, float] = {}
    for case in cases:
        image, geometry = read_image(DATA / "imagesTr" / f"{case}.nii.gz")
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "labelsTr" / f"{case}.nii.gz")))
        probs = {}
        for m, seg in segmenters.items():
            for tta in (False,) if args.no_tta else (False, True):
                t = time.perf_counter()
                r = seg.segment(image, geometry, SegmentOptions(tta=tta, probabilities=True, measure=False,
                                                                postprocess=PostprocessOptions()))
                seconds[f"{m}{' +TTA' if tta else ''}"] = seconds.get(f"{m}{' +TTA' if tta else ''}", 0.0) + \
                    time.perf_counter() - t
                probs[(m, tta)] = r.probabilities
        for tta in (False,) if args.no_tta else (False, True):
            probs[("ensemble", tta)] = (probs[(MODELS[0], tta)] + probs[(MODELS[1], tta)]) / 2
        for (m, tta), pr in probs.items():
            lab = pr.argmax(0)
            variants.setdefault(f"{m}{' +TTA' if tta else ''}", []).append(
                [dice(lab == k, ref == k) for k in (1, 2)])
    lines = [f"Validation cases: {len(cases)} (split of Resources/Models/hippocampus-unet3d.split.json), CPU, "
             "argmax of the calibrated probabilities, no post-processing.", "",
             "| variant | Dice anterior | Dice posterior | mean | wall s, all cases (ensemble: sum of both) |",
             "|---|---|---|---|---|"]
    for name, rows in variants.items():
        a = np.mean(rows, axis=0)
        s = seconds.get(name)
        if s is None:
            parts = [v for k, v in seconds.items() if k.endswith("+TTA") == name.endswith("+TTA")]
            s = sum(parts)
        lines.append(f"| {name} | {a[0]:.4f} | {a[1]:.4f} | {a.mean():.4f} | {s:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
