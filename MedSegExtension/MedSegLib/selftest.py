# -*- i18n: disabled -*-  (developers read the self-test's messages; Slicer's string extraction skips this file)
"""The checks of MedSeg's in-Slicer self-test (``MedSegTest``), without Qt, so that pytest runs them on slicer-core too.

:func:`self_test_model` picks the bundled hippocampus model (or any bundled single-channel model) and otherwise writes
a tiny random-weight U-Net with the engine; :func:`check_run` segments a volume node through the bridge, exactly as
the Segment button does, and checks the scene against the engine alone on the same voxels: segment names from the
card, voxel-exact labels, voxel counts in the table, the overlays and the slice views, and that a second run reuses
the loaded model and replaces the result. Every failed check raises ``AssertionError`` with what differed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from .run import ApplyOptions, ModelCache, SegmentationRun
from .segmentation import labelmap_from_segmentation
from .tables import table_rows
from .volumes import array_from_volume

__all__ = ["SAMPLE", "check_run", "sample_path", "self_test_model", "skip_reason", "tiny_checkpoint"]

SAMPLE = "hippocampus_001_T1w.nii.gz"
PREFERRED_MODEL = "hippocampus-unet3d"


def skip_reason(testing: bool, missing: list) -> str | None:
    """Why the self-test skips, or None to run it: in testing mode (``slicer.app.testingEnabled()``, as CTest runs
    it) nobody can answer the install question, so missing requirements (``dependencies.missing_requirements()``)
    skip the test instead of installing PyTorch; run interactively, the panel offers to install them."""
    if not testing or not missing:
        return None
    names = ", ".join(getattr(r, "title", str(r)) for r in missing)
    return (f"{names} not installed: the self-test installs nothing in testing mode; install them from the MedSeg "
            f"panel (Install) and run the test again")


def sample_path() -> Path:
    """The bundled sample volume (MSD hippocampus case 001, T1-weighted MRI)."""
    from medseg.catalog import resources_dir

    return resources_dir() / "Samples" / SAMPLE


def tiny_checkpoint(path: str | os.PathLike[str], calibration: np.ndarray | None = None) -> Path:
    """A random-weight 3D U-Net with a hippocampus card (1 MR channel, 3 labels), for when no model is bundled.

    With `calibration` (an image), its 1x1 head is set so that about 80 % of that image is background and 10 % each
    label, in blobs that follow one feature map (a random network otherwise gives one class everywhere).
    """
    import torch

    from medseg.card import ModelCard
    from medseg.checkpoint import save_checkpoint
    from medseg.models import build_model

    torch.manual_seed(0)
    model = build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.0625, depth=3).eval()
    if calibration is not None:
        calibrate_head(model, np.asarray(calibration, dtype=np.float32))
    card = ModelCard.from_dict({
        "name": "selftest-tiny-unet", "summary": "Random weights: MedSeg's self-test network, not a real model",
        "architecture": "unet", "architecture_args": model.config,
        "inputs": [{"name": "T1w", "modality": "MR", "normalization": {"kind": "zscore", "percentiles": [0.5, 99.5]}}],
        "labels": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                   {"id": 1, "name": "anterior hippocampus", "color": [220, 180, 60]},
                   {"id": 2, "name": "posterior hippocampus", "color": [60, 140, 220]}],
        "spacing": [1.0, 1.0, 1.0], "patch_size": [32, 32, 32],
        "training": {"dataset": "none (random weights)", "license": "CC0"}})
    return save_checkpoint(Path(path), model, card)


def calibrate_head(model, image: np.ndarray) -> None:
    """Set a random-weight network's linear head so that, on `image`, about 80 % of the voxels are background and
    10 % each labels 1 and 2, in blobs that follow one feature map (a random network's classes are otherwise so
    alike that one of them wins everywhere). Every input channel sees `image`."""
    import torch

    lo, hi = np.percentile(image, [0.5, 99.5])
    z = np.clip(image, lo, hi)
    z = ((z - z.mean()) / (z.std() or 1.0)).astype(np.float32)
    crop = tuple(slice(0, s - s % model.size_divisor) for s in z.shape)
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(z[crop]))[None, None].repeat(1, model.in_channels, 1, 1, 1)
        features = model.forward_features(x)[0]
        k = int(features.flatten(1).std(1).argmax())
        q80, q90 = np.quantile(features[k].flatten().numpy(), [0.8, 0.9])
        head = model.linear_head()
        head.weight.zero_()
        head.bias.zero_()
        head.weight[1, k], head.weight[2, k] = 1.0, 2.0  # logits 0, f - q80, 2 f - q80 - q90
        head.bias[1], head.bias[2] = -q80, -(q80 + q90)


def self_test_model(folder: str | os.PathLike[str], calibration: np.ndarray | None = None) -> tuple[str, bool]:
    """(model name or checkpoint path, bundled?): the bundled hippocampus model if there is one, else any bundled
    single-channel 3D model, else a tiny random checkpoint (see :func:`tiny_checkpoint`) written into `folder`."""
    from medseg.catalog import bundled_models

    single = [e for e in bundled_models() if len(e.card.inputs) == 1 and e.card.spatial_dims == 3]
    for entry in sorted(single, key=lambda e: e.name != PREFERRED_MODEL):
        return entry.name, True
    return str(tiny_checkpoint(Path(folder) / "selftest-tiny-unet.safetensors", calibration)), False


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def check_run(scene, volume_node, model: str, device: str = "cpu", cache: ModelCache | None = None,
              bundled: bool = False) -> dict[str, Any]:
    """Segment `volume_node` with `model` through the bridge and check the scene against the engine alone.

    Args:
        bundled: a trained model (its foreground segments must not be empty on the hippocampus sample).

    Returns:
        What was checked: segment names, voxel counts, overlay kinds, node counts, seconds.
    """
    from medseg.inference import SegmentOptions

    cache = cache if cache is not None else ModelCache()
    run = SegmentationRun(scene, cache)
    card = cache.get(model, device).card
    cam = card.foreground_labels[-1].name
    options = SegmentOptions(uncertainty=True, activation_classes=(cam,))
    started = time.perf_counter()
    applied = run.run(volume_node, model, options, device=device, apply_options=ApplyOptions(replace=True))
    seconds = time.perf_counter() - started

    image, geometry = array_from_volume(volume_node)
    reference = cache.get(model, device).segment(image, geometry, options)  # the engine alone, same voxels
    segmentation = scene.GetNodeByID(applied.segmentation_id)
    names = [segmentation.GetSegmentation().GetNthSegment(n).GetName()
             for n in range(segmentation.GetSegmentation().GetNumberOfSegments())]
    expected = [label.name for label in card.foreground_labels]
    _check(names == expected, f"segment names {names} differ from the model card's {expected}")
    ids = [segmentation.GetSegmentation().GetNthSegmentID(n) for n in range(len(names))]
    labels = labelmap_from_segmentation(segmentation, volume_node, ids, [label.id for label in card.foreground_labels])
    _check(np.array_equal(labels, reference.labels), "the segmentation differs from the engine's labels voxel by voxel")

    rows = table_rows(scene.GetNodeByID(applied.table_id))
    counts = [int(np.count_nonzero(reference.labels == label.id)) for label in card.foreground_labels]
    _check([r["name"] for r in rows] == expected, f"table rows {[r['name'] for r in rows]} differ from {expected}")
    _check([r["voxel_count"] for r in rows] == counts, f"table voxel counts {[r['voxel_count'] for r in rows]} differ "
                                                       f"from the engine's {counts}")
    voxel_ml = geometry.voxel_volume_ml
    _check(all(abs(r["volume_ml"] - c * voxel_ml) <= 1e-9 * max(1.0, c * voxel_ml) for r, c in zip(rows, counts,
                                                                                                      strict=True)),
           "table volumes are not voxel count x voxel volume")
    if bundled:
        _check(all(c > 0 for c in counts), f"the bundled model found an empty structure on the sample: {counts}")

    _check_overlays(scene, applied, reference, cam, volume_node)
    nodes = scene.GetNumberOfNodes()
    loads = cache.loads
    again = run.run(volume_node, model, options, device=device, apply_options=ApplyOptions(replace=True))
    _check(cache.loads == loads, "the second run loaded the model from disk again")
    _check(again.replaced and again.segmentation_id == applied.segmentation_id, "the second run did not replace the "
                                                                                "first result")
    _check(scene.GetNumberOfNodes() == nodes, f"the second run changed the node count ({nodes} -> "
                                              f"{scene.GetNumberOfNodes()})")
    return {"model": card.name, "segments": names, "voxel_counts": counts, "overlays": sorted(applied.overlay_ids),
            "seconds": round(seconds, 3), "timings": dict(run.timings)}


def _check_overlays(scene, applied, reference, cam: str, volume_node) -> None:
    kinds = {f"activation:{cam}": reference.activations[cam], "uncertainty": reference.entropy}
    _check(set(applied.overlay_ids) == set(kinds), f"overlays {sorted(applied.overlay_ids)}, expected {sorted(kinds)}")
    for kind, expected in kinds.items():
        node = scene.GetNodeByID(applied.overlay_ids[kind])
        values = slicer.util.arrayFromVolume(node)
        _check(values.shape == expected.shape and np.array_equal(values, expected),
               f"overlay {kind} differs from the engine's map")
        _check(float(values.min()) >= 0.0 and float(values.max()) <= 1.0, f"overlay {kind} leaves [0, 1]")
    shown = applied.overlay_ids[f"activation:{cam}"]
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(n, "vtkMRMLSliceCompositeNode")
        _check(composite.GetForegroundVolumeID() == shown and composite.GetBackgroundVolumeID() == volume_node.GetID(),
               f"slice view {composite.GetLayoutName()} does not show the Grad-CAM over the input")
