"""Time the probability-guided editing functions on a 256x256x128 probability map (the issue's budget: 100 ms).

The map is a smooth blob (a Gaussian of distance, an organ of about 60 x 60 x 40 voxels) plus a weaker far blob,
as a calibrated network gives them; the seed is the near blob at 0.5. Prints the median of several calls, in ms.
With --bridge, also the whole bridge call (MedSegLib.guided_edit on a real slicer-core scene: read the overlay,
export the segments, compute, write the segment) on the same map.

    .venv/bin/python scripts/benchmark_guided_edit.py [--bridge]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MedSegExtension"))

from medseg.guided_edit import region_at, threshold_mask

SHAPE = (128, 256, 256)


def probability_map() -> np.ndarray:
    k, j, i = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    near = ((k - 64) / 20.0) ** 2 + ((j - 128) / 30.0) ** 2 + ((i - 100) / 30.0) ** 2
    far = ((k - 64) / 8.0) ** 2 + ((j - 128) / 10.0) ** 2 + ((i - 210) / 10.0) ** 2
    return np.maximum(np.exp(-near * 0.7), 0.6 * np.exp(-far * 0.7)).astype(np.float32)


def organ(probability: np.ndarray) -> np.ndarray:
    """The seed: the near blob at 0.5 (the far blob, peak 0.6, is left out: click-add takes it)."""
    return (probability >= 0.5) & (np.arange(SHAPE[2]) < 150)[None, None, :]


def timed(call, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bridge", action="store_true", help="also time the bridge calls (needs slicer-core)")
    args = parser.parse_args()
    probability = probability_map()
    seed = organ(probability)
    other = np.zeros(SHAPE, dtype=bool)
    other[:, :, 150:160] = True  # another segment between the two blobs
    print(f"map {SHAPE[::-1]} (x, y, z), seed {int(seed.sum())} voxels; median of 7 calls")
    for threshold in (0.1, 0.3, 0.5, 0.7, 0.9):
        ms = timed(lambda t=threshold: threshold_mask(probability, t, seed_mask=seed, other_labels=other))
        size = int(threshold_mask(probability, threshold, seed_mask=seed, other_labels=other).sum())
        print(f"slider threshold {threshold:.1f}: {ms:6.1f} ms ({size} voxels)")
    ms = timed(lambda: threshold_mask(probability, 0.001, seed_mask=seed))
    size = int(threshold_mask(probability, 0.001, seed_mask=seed).sum())
    print(f"slider threshold 0.001, no other segment (most of the volume): {ms:6.1f} ms ({size} voxels)")
    ms = timed(lambda: region_at(probability, (64, 128, 210), threshold=0.3, mask=seed, other_labels=other))
    print(f"click-add far blob:   {ms:6.1f} ms")
    ms = timed(lambda: region_at(probability, (64, 128, 100), threshold=0.5, mask=seed, mode="remove"))
    print(f"click-remove blob:    {ms:6.1f} ms")
    if args.bridge:
        bridge(probability)


def bridge(probability: np.ndarray) -> None:
    """The same moves through the bridge, on a result built by hand (segment = the blob at 0.5, one overlay)."""
    from medseg.card import Label
    from medseg.geometry import Geometry
    from MedSegLib.guided_edit import add_region_at, apply_threshold, remove_region_at
    from MedSegLib.headless import application_scene, register_converter_rules
    from MedSegLib.segmentation import OVERLAY_KIND_ATTRIBUTE, OVERLAY_ROLE, build_segments, set_segments
    from MedSegLib.volumes import volume_from_array, world_ijk_to_ras

    register_converter_rules()
    with application_scene() as scene:
        volume = volume_from_array(scene, np.zeros(SHAPE, np.float32), Geometry((1.0, 1.0, 1.0)), "volume")
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
        labels = organ(probability).astype(np.uint8)
        set_segments(segmentation, build_segments(labels, [Label(1, "organ", (200, 80, 80))], volume), volume)
        overlay = volume_from_array(scene, probability, volume, "probability organ")
        overlay.SetAttribute(OVERLAY_KIND_ATTRIBUTE, "probability:organ")
        segmentation.AddNodeReferenceID(OVERLAY_ROLE, overlay.GetID())
        for threshold in (0.3, 0.5, 0.7, 0.9, 0.5):
            ms = timed(lambda t=threshold: apply_threshold(scene, segmentation, "Segment_1", t), repeats=3)
            print(f"bridge slider threshold {threshold:.1f}: {ms:6.1f} ms")
        point = list((world_ijk_to_ras(volume) @ np.array([210.0, 128.0, 64.0, 1.0]))[:3])  # the far blob
        start = time.perf_counter()
        add_region_at(scene, segmentation, "Segment_1", point, 0.3)
        print(f"bridge click-add:     {(time.perf_counter() - start) * 1000:6.1f} ms")
        start = time.perf_counter()
        remove_region_at(scene, segmentation, "Segment_1", point)
        print(f"bridge click-remove:  {(time.perf_counter() - start) * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
