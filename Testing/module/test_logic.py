"""MedSegLogic, the module's facade over the bridge, on the real Slicer core.

MedSeg.py imports the application's Python packages (qt, slicer.ScriptedLoadableModule, slicer.parameterNodeWrapper,
slicer.i18n), which slicer-core lacks; they are replaced here by empty stand-ins, only so that the file can be
imported. The Widget is not exercised (it needs Qt: the in-Slicer self-test runs it); the Logic runs for real on a
slicer-core scene, as the Widget calls it: model list, inputs, the background job, apply, overlays, table, save. The
parameter node class is checked against the defaults the panel tests assume.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
from module_support import MODULE_FILE, SAMPLE, parameters

slicer = pytest.importorskip("slicer", reason="needs the real Slicer core: pip install slicer-core")


def _stand_ins() -> dict[str, types.ModuleType]:
    qt = types.ModuleType("qt")
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    wrapper.WithinRange = lambda low, high: ("WithinRange", low, high)
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")

    class Base:
        def __init__(self, *args, **kwargs):
            pass

    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest",
                 "ScriptedLoadableModuleWidget"):
        setattr(scripted, name, type(name, (Base,), {}))
    return {"qt": qt, "slicer.i18n": i18n, "slicer.parameterNodeWrapper": wrapper,
            "slicer.ScriptedLoadableModule": scripted}


@pytest.fixture(scope="module")
def module():
    stand_ins = {name: m for name, m in _stand_ins().items() if name not in sys.modules}
    sys.modules.update(stand_ins)
    try:
        spec = importlib.util.spec_from_file_location("MedSeg_under_test", MODULE_FILE)
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)
    return loaded


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from medseg.io import read_image
    from MedSegLib.selftest import tiny_checkpoint

    image, _ = read_image(SAMPLE)
    return str(tiny_checkpoint(tmp_path_factory.mktemp("logic") / "tiny.safetensors", calibration=image))


def test_parameter_node_defaults_are_what_the_panel_tests_assume(module):
    node_class = module.MedSegParameterNode
    expected = vars(parameters())
    for name, value in expected.items():
        if name in ("inputVolume", "channel2Volume", "channel3Volume", "roi", "modelName"):
            continue  # nodes have no default; the test model name is the test's own
        assert getattr(node_class, name) == value, name
    assert node_class.modelName == "" and set(expected) < set(node_class.__annotations__)


def test_the_logic_runs_a_click_on_the_real_core(module, scene, checkpoint, tmp_path):
    from medseg.io import read_image
    from MedSegLib.panel import settings_from_parameters
    from MedSegLib.run import ModelCache
    from MedSegLib.tables import table_rows
    from MedSegLib.volumes import volume_from_array

    image, geometry = read_image(SAMPLE)
    volume = volume_from_array(scene, image, geometry, "hippocampus_001_T1w")
    logic = module.MedSegLogic(ModelCache())
    choices, problems = logic.modelChoices([checkpoint])
    assert problems == [] and choices[-1].key == checkpoint
    card = logic.readCard(checkpoint)
    assert logic.availableDevices()[-1] == "cpu"

    settings = settings_from_parameters(parameters(modelName=checkpoint, device=module.Device.CPU,
                                                   activationClass="posterior hippocampus"), card)
    inputs = logic.readInputs([volume], card, None)
    task = logic.startSegmentation(inputs, settings)
    assert task.wait(60.0)
    outcome = task.take()
    assert outcome.state == "done", outcome.message
    applied = logic.apply(inputs, outcome.result, settings)

    segmentation = scene.GetNodeByID(applied.segmentation_id)
    table = scene.GetNodeByID(applied.table_id)
    assert logic.sourceVolume(segmentation) is volume and logic.resultTable(segmentation) is table
    overlays = logic.overlays(segmentation)
    assert set(overlays) == {"activation:posterior hippocampus", "uncertainty"} and logic.overlays(None) == {}
    logic.showOverlay(overlays["uncertainty"], 0.3, volume)
    logic.setOverlayOpacity(0.8)
    composite = scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert (composite.GetForegroundVolumeID(), composite.GetForegroundOpacity()) == (
        overlays["uncertainty"].GetID(), 0.8)

    assert all(isinstance(e, int) for e in logic.editEvents()) and len(set(logic.editEvents())) == 4
    rows = table_rows(logic.recomputeTable(segmentation, table))
    assert [r["voxel_count"] for r in rows] == [int((outcome.result.labels == k).sum()) for k in (1, 2)]

    files = logic.save(tmp_path / "out", segmentation, table, overwrite=False)
    assert sorted(p.name for p in files.values()) == sorted(
        [*(f"hippocampus_001_T1w {card.name}.{ext}" for ext in ("seg.nrrd", "nii.gz", "csv")),
         f"hippocampus_001_T1w {card.name}_ai.nii.gz"])  # the AI's own labels, kept with the result
    assert outcome.result.review is not None  # the panel's uncertainty option also ranks the regions to review
    assert logic.jumpTo((1.0, -2.0, 3.5)) == 3 and logic.nextRegion([4, 7], 7) == 4
    with pytest.raises(FileExistsError):
        logic.save(tmp_path / "out", segmentation, table, overwrite=False)
    with pytest.raises(ValueError, match="no segmentation to save"):
        logic.save(tmp_path / "out", None)

    again = logic.segment([volume], settings)  # the blocking call for scripts: replaces the result in place
    assert again.replaced and again.segmentation_id == applied.segmentation_id
    assert table_rows(table)[0]["voxel_count"] == rows[0]["voxel_count"]
    assert logic.cache.loads == 1


def test_a_run_on_an_input_unlike_the_training_data_warns_in_the_status_line(module, scene, checkpoint, tmp_path):
    import numpy as np

    from medseg.card import ModelCard
    from medseg.checkpoint import load_checkpoint, save_checkpoint
    from medseg.domain import describe_inputs
    from medseg.io import read_image
    from MedSegLib.panel import done_message, settings_from_parameters
    from MedSegLib.run import ModelCache
    from MedSegLib.volumes import volume_from_array

    loaded = load_checkpoint(checkpoint)  # the tiny model, its card now describing the sample as its training data
    card = ModelCard.from_dict({**loaded.card.to_dict(), "input_domain": describe_inputs([SAMPLE], ["T1w"])})
    described = str(save_checkpoint(tmp_path / "described.safetensors", loaded.model, card))
    image, geometry = read_image(SAMPLE)
    logic = module.MedSegLogic(ModelCache())
    settings = settings_from_parameters(parameters(modelName=described, device=module.Device.CPU), card)
    messages = {}
    for name, array in (("as trained", image), ("three times longer", np.tile(image, (3, 1, 1)))):
        volume = volume_from_array(scene, array, geometry, name)
        task = logic.startSegmentation(logic.readInputs([volume], card, None), settings)
        assert task.wait(60.0)
        outcome = task.take()
        assert outcome.state == "done", outcome.message
        messages[name] = done_message(outcome.seconds, "cpu", outcome.result.warnings)
    assert messages["as trained"].startswith("Done in ") and "Check the result" not in messages["as trained"]
    assert "Check the result: the input's size is far outside" in messages["three times longer"]
    assert "105 mm along S" in messages["three times longer"]


def test_the_logic_edits_a_segment_along_its_probability_map(module, scene, checkpoint):
    import numpy as np

    from medseg.guided_edit import threshold_mask
    from medseg.io import read_image
    from MedSegLib.guided_edit import probability_overlay
    from MedSegLib.panel import settings_from_parameters
    from MedSegLib.run import ModelCache
    from MedSegLib.segmentation import labelmap_from_segmentation
    from MedSegLib.volumes import volume_from_array, world_ijk_to_ras

    image, geometry = read_image(SAMPLE)
    volume = volume_from_array(scene, image, geometry, "hippocampus_001_T1w")
    logic = module.MedSegLogic(ModelCache())
    settings = settings_from_parameters(parameters(modelName=checkpoint, device=module.Device.CPU, uncertainty=False,
                                                   probabilities=True), logic.readCard(checkpoint))
    segmentation = scene.GetNodeByID(logic.segment([volume], settings).segmentation_id)
    probability = slicer.util.arrayFromVolume(probability_overlay(segmentation, "Segment_1"))
    before = labelmap_from_segmentation(segmentation, volume, ["Segment_1", "Segment_2"], [1, 2])
    saves = []
    for threshold in (0.4, 0.3):  # one slider drag: one state saved for the editor's undo
        logic.guidedThreshold(segmentation, "Segment_1", threshold, lambda: saves.append(1))
    mask = labelmap_from_segmentation(segmentation, volume, ["Segment_1"], [1]) > 0
    assert np.array_equal(mask, threshold_mask(probability, 0.3, seed_mask=before == 1, other_labels=before == 2))
    assert len(saves) == 1

    with pytest.raises(ValueError, match="no crosshair"):
        logic.crosshairRAS()
    crosshair = scene.AddNewNodeByClass("vtkMRMLCrosshairNode")  # the application has one
    k, j, i = np.argwhere(mask)[0]
    crosshair.SetCrosshairRAS(*(world_ijk_to_ras(volume) @ np.array([i, j, k, 1.0]))[:3])
    removed = logic.guidedClick(segmentation, "Segment_1", logic.crosshairRAS(), False, 0.3, lambda: saves.append(1))
    assert removed[k, j, i] and len(saves) == 2
    assert not (labelmap_from_segmentation(segmentation, volume, ["Segment_1"], [1]) > 0)[k, j, i]
