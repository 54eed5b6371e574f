"""The panel's "Add checkpoint..." on an nnU-Net results folder: converted once, then read as any checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "engine"))
from nnunet_folder import write_results_folder

from medseg.checkpoint import read_card
from MedSegLib.nnunet_import import checkpoint_for, imported_models_dir, nnunet_source


def test_results_folder_or_a_file_in_it_becomes_a_checkpoint(tmp_path):
    folder, _ = write_results_folder(tmp_path / "results", folds=(0, 1))
    models = tmp_path / "models"
    for picked, folds in ((folder, ("fold_0", "fold_1")), (folder / "plans.json", ("fold_0", "fold_1")),
                          (folder / "fold_1" / "checkpoint_final.pth", ("fold_1",))):
        path = checkpoint_for(picked, models)
        assert Path(path).parent == models and path.endswith(".safetensors")
        card = read_card(path)
        assert card.training["nnunet"]["folds"] == list(folds)
        assert (card.ensemble is not None) == (len(folds) > 1)
    assert len(list(models.glob("*.safetensors"))) == 2  # all folds converted once, then fold 1 alone


def test_other_paths_are_left_alone_and_errors_name_the_problem(tmp_path):
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"x")
    assert checkpoint_for(model, tmp_path / "models") == str(model)
    assert nnunet_source(tmp_path) is None and not (tmp_path / "models").exists()
    folder, _ = write_results_folder(tmp_path / "results")
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="refused to load"):
        checkpoint_for(folder, tmp_path / "models")
    assert not list((tmp_path / "models").glob("*.safetensors"))


def test_converted_models_live_beside_slicer_settings(tmp_path):
    settings = tmp_path / "NA-MIC" / "Slicer.ini"
    assert imported_models_dir(settings) == tmp_path / "NA-MIC" / "MedSeg" / "imported"
