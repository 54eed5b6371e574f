#!/usr/bin/env python3
"""Click-to-result through the Slicer bridge against the engine alone, on the real Slicer core (slicer-core).

    .venv/bin/python scripts/benchmark_bridge.py

Two cases, each measured after one warm-up run: the bundled hippocampus model on the bundled sample, and a
256x256x128 volume with a 3D U-Net of random weights (16-256 channels, ROI 96^3, overlap 0.5). "bridge" is
what the Segment button does (read the volume node, compute, put segmentation, overlays and table into a
real vtkMRMLScene); "engine" is Segmenter.segment on the same arrays. Prints JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from medseg.catalog import resources_dir
from medseg.inference import SegmentOptions
from medseg.io import read_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark_inference

from MedSegLib.headless import application_scene
from MedSegLib.run import ModelCache, SegmentationRun
from MedSegLib.volumes import volume_from_array


def _case(name, array, geometry, model, options, cache) -> dict:
    with application_scene() as scene:
        return _timed(scene, name, array, geometry, model, options, cache)


def _timed(scene, name, array, geometry, model, options, cache) -> dict:
    volume = volume_from_array(scene, array, geometry, name)
    run = SegmentationRun(scene, cache)
    run.run(volume, model, options, device="cpu")  # warm-up (loads the model into the cache)
    t = time.perf_counter()
    run.run(volume, model, options, device="cpu")
    bridge = time.perf_counter() - t
    segmenter = cache.get(model, "cpu")
    t = time.perf_counter()
    segmenter.segment(array, geometry, options)
    engine = time.perf_counter() - t
    return {"case": name, "shape_kji": list(array.shape), "bridge_seconds": round(bridge, 3),
            "engine_seconds": round(engine, 3), "bridge_steps": {k: round(v, 3) for k, v in run.timings.items()},
            "overhead_seconds": round(bridge - engine, 3)}


def main() -> None:
    options = SegmentOptions(uncertainty=True)
    rows = []
    image, geometry = read_image(resources_dir() / "Samples" / "hippocampus_001_T1w.nii.gz")
    rows.append(_case("hippocampus_001", image, geometry, "hippocampus-unet3d", options, ModelCache()))
    segmenter = benchmark_inference._segmenter(2, "cpu")
    cache = ModelCache(loader=lambda path, device: segmenter)
    big = np.random.default_rng(0).normal(size=(128, 256, 256)).astype(np.float32)
    rows.append(_case("random 256x256x128", big, geometry, Path(__file__), options, cache))
    print(json.dumps({"options": "uncertainty map, default precision, CPU", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
