"""MedSegLogic's "Learn from corrections" calls, as the panel's buttons make them, on the real Slicer core: a result
of the sample saved three times as a training case into its model's corrections folder, a fine-tuning job started,
polled and finished, and the new model listed in the model picker under its fine-tuned name."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from module_support import SAMPLE, parameters
from test_logic import checkpoint, module  # noqa: F401 (fixtures: MedSeg.py loaded with stand-ins, a tiny model)

slicer = pytest.importorskip("slicer", reason="needs the real Slicer core: pip install slicer-core")


def test_save_training_cases_then_fine_tune_in_the_background(module, scene, checkpoint, tmp_path):  # noqa: F811
    from medseg.io import read_image
    from MedSegLib.panel import settings_from_parameters
    from MedSegLib.run import ModelCache
    from MedSegLib.volumes import volume_from_array

    image, geometry = read_image(SAMPLE)
    volume = volume_from_array(scene, image, geometry, "hippocampus_001_T1w")
    logic = module.MedSegLogic(ModelCache())
    card = logic.readCard(checkpoint)
    settings = settings_from_parameters(parameters(modelName=checkpoint, device=module.Device.CPU,
                                                   uncertainty=False), card)
    segmentation = scene.GetNodeByID(logic.segment([volume], settings).segmentation_id)
    assert logic.resultModel(segmentation) == card.name and logic.resultModel(None) is None

    root = tmp_path / "corrections"
    for _ in range(3):  # the panel's button, clicked three times (each a new case)
        files = logic.saveTrainingCase(segmentation, root, checkpoint)
    folder = logic.correctionsFolder(root, card.name)
    assert files["dataset"].parent == folder == root / "selftest-tiny-unet" and logic.countCases(folder) == 3
    with pytest.raises(ValueError, match="no MedSeg result"):
        logic.saveTrainingCase(None, root)

    models = tmp_path / "models"
    task = logic.startFinetune(checkpoint, folder, models, device="cpu", steps=2, holdout=1, num_threads=1)
    for _ in range(1200):
        if task.finished:
            break
        time.sleep(0.1)
    outcome = task.take()
    assert outcome.state == "done", outcome.traceback
    today = dt.datetime.now(dt.UTC).date().isoformat()
    title = f"selftest-tiny-unet (fine-tuned {today}, 2 cases)"
    assert outcome.result.title == title and outcome.result.path.parent == models
    assert logic.finetuneSummary(outcome.result).startswith(f"Saved {title}")
    choices, problems = logic.modelChoices([checkpoint], models)
    assert problems == [] and [c.text for c in choices if not c.bundled] == [
        "selftest-tiny-unet (tiny.safetensors)", title]
