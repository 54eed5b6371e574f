"""The Segment button on the real Slicer core: results equal the engine's, cancel and errors change nothing,
a second run replaces or adds, the model is loaded once."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import slicer
import torch
import vtk
from bridge_support import add_volume, hippocampus_card, snapshot, synthetic_result

import MedSegLib.run as run_module
from medseg.inference import Segmenter, SegmentOptions
from medseg.sliding_window import Cancelled, CancelToken
from MedSegLib.run import ApplyOptions, ModelCache, RunInputs, SegmentationRun, apply, compute, read_inputs
from MedSegLib.segmentation import MODEL_ATTRIBUTE, find_result, labelmap_from_segmentation
from MedSegLib.tables import measurement_rows, table_rows

CAM = "posterior hippocampus"


@pytest.fixture
def volume(scene, hippocampus):
    return add_volume(scene, hippocampus[0], hippocampus[1], "hippocampus_001", study="MR brain")


@pytest.fixture(scope="module")
def engine_alone(checkpoint, hippocampus):
    """What `medseg` gives on its own for the same volume and options (the reference)."""
    options = SegmentOptions(uncertainty=True, activation_classes=(CAM,))
    return Segmenter(checkpoint, device="cpu").segment(hippocampus[0], hippocampus[1], options), options


def _labels(scene, result) -> np.ndarray:
    segmentation = scene.GetNodeByID(result.segmentation_id)
    volume = scene.GetNodeByID(segmentation.GetNodeReferenceID("MedSeg.SourceVolume"))
    return labelmap_from_segmentation(segmentation, volume, ["Segment_1", "Segment_2"], [1, 2])


def test_compute_in_a_thread_then_apply_equals_the_engine(scene, volume, checkpoint, engine_alone):
    reference, options = engine_alone
    cache = ModelCache()
    segmenter = cache.get(checkpoint, "cpu")
    inputs = read_inputs(volume, segmenter.card)  # main thread: voxels copied out of the node
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("result", compute(segmenter, inputs, options)))
    worker.start()
    worker.join()
    applied = apply(scene, inputs, out["result"])

    labels = _labels(scene, applied)
    assert np.array_equal(labels, reference.labels) and {1, 2} <= set(np.unique(labels))
    segmentation = scene.GetNodeByID(applied.segmentation_id)
    assert segmentation.GetName() == "hippocampus_001 tiny-hippocampus"
    assert segmentation.GetAttribute(MODEL_ATTRIBUTE) == "tiny-hippocampus"
    rows = table_rows(scene.GetNodeByID(applied.table_id))
    expected = measurement_rows(reference.measurements)
    assert [r["voxel_count"] for r in rows] == [r["voxel_count"] for r in expected]
    assert [r["volume_ml"] for r in rows] == pytest.approx([r["volume_ml"] for r in expected], rel=1e-12)

    assert set(applied.overlay_ids) == {f"activation:{CAM}", "uncertainty"}
    cam = scene.GetNodeByID(applied.overlay_ids[f"activation:{CAM}"])
    assert cam.GetName() == f"hippocampus_001 tiny-hippocampus Grad-CAM {CAM}"
    assert np.array_equal(slicer.util.arrayFromVolume(cam), reference.activations[CAM])
    uncertainty = scene.GetNodeByID(applied.overlay_ids["uncertainty"])
    assert np.array_equal(slicer.util.arrayFromVolume(uncertainty), reference.entropy)
    display = cam.GetDisplayNode()
    assert display.GetColorNode().GetName() == "PET-Heat"  # Inferno/ColdToHotRainbow come with the application
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax(), display.GetAutoWindowLevel()) == (0, 1, 0)
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(n, "vtkMRMLSliceCompositeNode")
        assert composite.GetForegroundVolumeID() == cam.GetID() and composite.GetForegroundOpacity() == 0.5
        assert composite.GetBackgroundVolumeID() == volume.GetID()

    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    ai_mask = segmentation.GetNodeReference("MedSeg.AiMask")  # the AI's labels, kept out of the user's way
    assert np.array_equal(slicer.util.arrayFromVolume(ai_mask), reference.labels) and ai_mask.GetHideFromEditors()
    assert ai_mask.GetID() in applied.added_ids and not sh.GetItemByDataNode(ai_mask)
    for node_id in set(applied.added_ids) - {ai_mask.GetID()}:
        item = sh.GetItemByDataNode(scene.GetNodeByID(node_id))
        assert sh.GetItemName(sh.GetItemParent(item)) == "MR brain"


def test_a_second_run_replaces_or_adds_and_the_model_loads_once(scene, volume, checkpoint):
    cache = ModelCache()
    run = SegmentationRun(scene, cache)
    first = run.run(volume, checkpoint, SegmentOptions(uncertainty=True, overlap=0.25), device="cpu")
    uncertainty_id = first.overlay_ids["uncertainty"]
    nodes = scene.GetNumberOfNodes()

    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "ROI")  # second run: cropped, no overlay
    m = volume.GetImageData().GetDimensions()
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(_ijk_to_ras(volume))
    roi.SetCenter(*(ijk_to_ras @ [m[0] / 2, m[1] / 2, m[2] / 2, 1])[:3])
    roi.SetSize(20, 20, 20)
    second = run.run(volume, checkpoint, SegmentOptions(overlap=0.25), device="cpu", roi_node=roi,
                     apply_options=ApplyOptions(replace=True))
    assert second.replaced and second.segmentation_id == first.segmentation_id
    assert second.table_id == first.table_id and second.added_ids == ()
    assert second.removed_ids == (uncertainty_id,) and scene.GetNodeByID(uncertainty_id) is None
    assert scene.GetNumberOfNodes() < nodes  # the stale overlay and its display node went
    composite = scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert composite.GetForegroundVolumeID() is None  # the views no longer show the removed overlay
    labels = _labels(scene, second)
    inside = np.zeros(labels.shape, bool)
    inside[tuple(slice(lo, hi) for lo, hi in np.reshape(read_inputs(volume, roi_node=roi).roi, (3, 2))[::-1])] = True
    assert labels[~inside].max() == 0 and labels[inside].max() > 0

    third = run.run(volume, checkpoint, SegmentOptions(overlap=0.25), device="cpu",
                    apply_options=ApplyOptions(replace=False))
    assert not third.replaced and third.segmentation_id != first.segmentation_id
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 2
    assert find_result(scene, volume, "tiny-hippocampus").GetID() == third.segmentation_id
    assert cache.loads == 1  # three runs, one load


def _ijk_to_ras(node):
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return m


@pytest.mark.parametrize("when", ["first window", "after the last window"])
def test_cancel_leaves_the_scene_as_it_was(scene, volume, hippocampus, checkpoint, when):
    array, geometry, labels = hippocampus
    inputs = RunInputs(array[None], geometry, volume.GetID(), volume.GetName(), (volume.GetID(),))
    apply(scene, inputs, synthetic_result(array, geometry, labels, hippocampus_card()))  # a result to replace
    token = CancelToken()
    calls = []

    def progress(fraction: float, message: str) -> None:  # the GUI's Cancel button, pressed during the run
        calls.append(fraction)
        if when == "first window" or fraction >= 1.0:
            token.cancel()

    before = snapshot(scene)
    with pytest.raises(Cancelled):
        SegmentationRun(scene, ModelCache()).run(volume, checkpoint, SegmentOptions(overlap=0.25), device="cpu",
                                                 progress=progress, cancel=token)
    assert snapshot(scene) == before
    assert (len(calls) == 1) == (when == "first window")


def _corrupt(path):
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"medseg" + bytes(64))
    return path


def _pickle(path):
    torch.save({"weight": torch.zeros(2)}, path)
    return path


@pytest.mark.parametrize("case", ["wrong channel count", "roi outside", "corrupt checkpoint", "pickle checkpoint",
                                  "no volume", "2D volume", "channels on different grids", "unknown Grad-CAM class",
                                  "out of memory"])
def test_errors_leave_the_scene_as_it_was(scene, volume, hippocampus, checkpoint, checkpoint_two_channels,
                                          tmp_path, case, monkeypatch):
    array, geometry, labels = hippocampus
    # a previous result of the same model on this volume: a failed run must not clear it
    inputs = RunInputs(array[None], geometry, volume.GetID(), volume.GetName(), (volume.GetID(),))
    apply(scene, inputs, synthetic_result(array, geometry, labels, hippocampus_card(), uncertainty=True))
    model, nodes, kwargs, options, error = checkpoint, volume, {}, SegmentOptions(overlap=0.25), ValueError
    if case == "wrong channel count":
        model, message = checkpoint_two_channels, r"needs 2 input volume\(s\): T1w \(MR\), T2w \(MR\); 1 was given"
    elif case == "roi outside":
        roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "far ROI")
        roi.SetCenter(500.0, 500.0, 500.0)
        roi.SetSize(10, 10, 10)
        kwargs, message = {"roi_node": roi}, r"'far ROI' is outside volume 'hippocampus_001'"
    elif case == "corrupt checkpoint":
        model, message = _corrupt(tmp_path / "broken.safetensors"), r"broken.safetensors is not a readable"
    elif case == "pickle checkpoint":
        model, message = _pickle(tmp_path / "model.pt"), r"model.pt is a PyTorch pickle file"
    elif case == "no volume":
        nodes, message = None, r"no input volume selected"
    elif case == "2D volume":
        nodes, message = add_volume(scene, array[5:6], geometry, "one slice"), r"'one slice' is a single slice"
    elif case == "channels on different grids":
        other = add_volume(scene, array[:, :40], geometry, "T2 cropped")
        model, nodes = checkpoint_two_channels, [volume, other]
        message = r"'hippocampus_001' \(T1w\) and 'T2 cropped'.*different voxel grids: size"
    elif case == "unknown Grad-CAM class":
        options, message = SegmentOptions(activation_classes=("amygdala",)), r"has no label 'amygdala'"
    else:
        def out_of_memory(*args, **kwargs):
            raise MemoryError("out of memory on the CPU even with one window per batch; crop the volume")

        monkeypatch.setattr(Segmenter, "segment", out_of_memory)
        error, message = MemoryError, "crop the volume"
    before = snapshot(scene)
    with pytest.raises(error, match=message):
        SegmentationRun(scene, ModelCache()).run(nodes, model, options, device="cpu", **kwargs)
    assert snapshot(scene) == before


def test_apply_failing_halfway_removes_what_it_added(scene, volume, hippocampus, monkeypatch):
    array, geometry, labels = hippocampus
    inputs = RunInputs(array[None], geometry, volume.GetID(), volume.GetName(), (volume.GetID(),))
    result = synthetic_result(array, geometry, labels, hippocampus_card(), uncertainty=True)
    before = snapshot(scene)

    def fail(*args, **kwargs):
        raise MemoryError("no memory for the overlay")

    monkeypatch.setattr("MedSegLib.run.volume_from_array", fail)
    with pytest.raises(MemoryError):
        apply(scene, inputs, result)
    assert snapshot(scene) == before

    monkeypatch.undo()
    first = apply(scene, inputs, result)
    changed = snapshot(scene)
    edited = result.labels.copy()
    edited[edited == 2] = 1
    result.labels = edited
    again = apply(scene, inputs, result)  # replaces in place: same node IDs, new content, which the snapshot sees
    assert again.segmentation_id == first.segmentation_id
    assert snapshot(scene)[first.segmentation_id] != changed[first.segmentation_id]

    scene.RemoveNode(volume)  # the user deleted the volume while it was being segmented
    before = snapshot(scene)
    with pytest.raises(ValueError, match="'hippocampus_001' was removed or changed while it was being segmented"):
        apply(scene, inputs, result)
    assert snapshot(scene) == before


def test_parent_transform_results_follow_the_volume(scene, spinal_cord, checkpoint):
    array, geometry, _, _ = spinal_cord
    node = add_volume(scene, array, geometry, "T2w")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "aligned")
    matrix = np.eye(4)
    matrix[:3, 3] = [4.0, -2.0, 30.0]
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    node.SetAndObserveTransformNodeID(transform.GetID())
    cache = ModelCache()
    inputs = read_inputs(node, cache.get(checkpoint, "cpu").card)
    assert np.allclose(inputs.geometry.ijk_to_ras(), matrix @ geometry.ijk_to_ras(), atol=1e-9)
    result = compute(cache.get(checkpoint, "cpu"), inputs, SegmentOptions(overlap=0.0, measure=False))
    applied = apply(scene, inputs, result, ApplyOptions(show_overlay=None))
    segmentation = scene.GetNodeByID(applied.segmentation_id)
    assert segmentation.GetTransformNodeID() == transform.GetID()
    assert np.array_equal(labelmap_from_segmentation(segmentation, node, ["Segment_1", "Segment_2"], [1, 2]),
                          result.labels)
    assert cache.loads == 1


def test_model_cache(tmp_path, checkpoint):
    loaded = []
    cache = ModelCache(max_models=1, loader=lambda path, device: loaded.append((path.name, device)) or object())
    a = cache.get(checkpoint, "cpu")
    assert cache.get(checkpoint, "cpu") is a and cache.loads == 1
    cache.get(checkpoint, "auto")  # another device: another model (and the first one goes: max_models=1)
    assert cache.get(checkpoint, "cpu") is not a and cache.loads == 3
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(checkpoint.read_bytes())
    b = cache.get(copy, "cpu")
    os.utime(copy, ns=(1, 1))  # replaced on disk (another modification time): loaded again
    assert cache.get(copy, "cpu") is not b
    with pytest.raises(ValueError, match="unknown model 'no-such-model'"):
        cache.get("no-such-model")
    with pytest.raises(FileNotFoundError):
        cache.get(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("step", ["set_segments", "store_ai_mask", "fill_table", "update_volume_from_array",
                                  "volume_from_array", "style_overlay", "place_in_hierarchy", "show_overlay"])
def test_apply_failing_while_replacing_leaves_the_earlier_result_as_it_was(scene, volume, hippocampus, step,
                                                                         monkeypatch):
    array, geometry, labels = hippocampus
    inputs = RunInputs(array[None], geometry, volume.GetID(), volume.GetName(), (volume.GetID(),))
    card = hippocampus_card()
    apply(scene, inputs, synthetic_result(array, geometry, labels, card, uncertainty=True))
    before, before_times = snapshot(scene, times=False), snapshot(scene)
    edited = labels.copy()
    edited[edited == 2] = 1  # another result: one segment empty, other volumes, a probability overlay more
    second = synthetic_result(array, geometry, edited, card, uncertainty=True)
    second.entropy = second.entropy[::-1].copy()
    second.probabilities = np.stack([(edited == lab.id).astype(np.float32) for lab in card.labels])
    real = getattr(run_module, step)

    def fail_after(*args, **kwargs):  # the step did its work, then something failed
        real(*args, **kwargs)
        raise MemoryError(f"failed after {step}")

    monkeypatch.setattr(run_module, step, fail_after)
    with pytest.raises(MemoryError, match=f"failed after {step}"):
        apply(scene, inputs, second, ApplyOptions(show_overlay="probability:posterior hippocampus"))
    after = snapshot(scene, times=False)
    assert after == before
    assert set(snapshot(scene)) == set(before_times)  # no node added or removed
