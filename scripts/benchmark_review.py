#!/usr/bin/env python3
"""What the review list (``SegmentOptions.review``) adds to a segmentation's time.

Segments each volume with the bundled model three ways, alternating, ``--repeats`` times each (the large volume
``--synthetic-repeats`` times): plain, with
``uncertainty`` (the entropy map), and with ``review`` (entropy map + the ranked regions and confidences).
Prints one JSON document with the median wall times, the review step alone (``info["seconds"]["review"]``)
and the ratios ``review / plain`` and ``review / uncertainty``. Volumes:

- ``hippocampus``: the bundled sample ``Resources/Samples/hippocampus_001_T1w.nii.gz`` (35 x 51 x 35).
- ``synthetic``: 256 x 256 x 128 (x, y, z) made of copies of that sample tiled side by side (so the network
  finds many hippocampi and the review many boundaries), 1 mm voxels.

    .venv/bin/python scripts/benchmark_review.py
    .venv/bin/python scripts/benchmark_review.py --repeats 20 --synthetic-repeats 3 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MedSegExtension"))

from medseg.catalog import resources_dir
from medseg.geometry import Geometry
from medseg.inference import Segmenter, SegmentOptions
from medseg.io import read_image

MODES = {"plain": SegmentOptions(), "uncertainty": SegmentOptions(uncertainty=True),
         "review": SegmentOptions(review=True)}


def volumes() -> dict[str, tuple[np.ndarray, Geometry]]:
    image, geometry = read_image(resources_dir() / "Samples" / "hippocampus_001_T1w.nii.gz")
    shape = (128, 256, 256)
    reps = [-(-n // s) for n, s in zip(shape, image.shape, strict=True)]
    tiled = np.tile(image, reps)[: shape[0], : shape[1], : shape[2]].copy()
    return {"hippocampus": (image, geometry), "synthetic_256x256x128": (tiled, Geometry())}


def measure(segmenter: Segmenter, image: np.ndarray, geometry: Geometry, repeats: int) -> dict:
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    review_step, regions = [], 0
    for _ in range(repeats):
        for mode, options in MODES.items():
            t = time.perf_counter()
            result = segmenter.segment(image, geometry, options)
            times[mode].append(time.perf_counter() - t)
            if result.review is not None:
                review_step.append(result.info["seconds"]["review"])
                regions = len(result.review.regions)
    median = {mode: statistics.median(v) for mode, v in times.items()}
    return {"shape_kji": list(image.shape), "median_seconds": {k: round(v, 4) for k, v in median.items()},
            "review_step_seconds": round(statistics.median(review_step), 4), "regions": regions,
            "ratio_review_vs_plain": round(median["review"] / median["plain"], 4),
            "ratio_review_vs_uncertainty": round(median["review"] / median["uncertainty"], 4),
            "review_step_vs_plain": round(statistics.median(review_step) / median["plain"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hippocampus-unet3d")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each mode on the hippocampus case")
    parser.add_argument("--synthetic-repeats", type=int, default=1,
                        help="runs of each mode on the 256 x 256 x 128 volume (minutes each on a small CPU)")
    args = parser.parse_args()
    segmenter = Segmenter(args.model, device=args.device)
    cases = volumes()
    segmenter.segment(*cases["hippocampus"], SegmentOptions())  # warm-up
    out = {"model": args.model, "device": args.device}
    for name, (image, geometry) in cases.items():
        repeats = args.repeats if name == "hippocampus" else args.synthetic_repeats
        if repeats < 1:
            continue
        out[name] = {"repeats": repeats, **measure(segmenter, image, geometry, repeats)}
        print(name, json.dumps(out[name]), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
