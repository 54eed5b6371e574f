"""The background fine-tuning job (``MedSegLib.finetune_job``) that the panel and the web front end start, poll and
cancel: a tiny real checkpoint fine-tuned on real hippocampus cases; the new model lands in the models folder under a
fine-tuned name and is listed by the model picker; a cancelled or failed job leaves the models folder empty."""

from __future__ import annotations

import datetime as dt
import shutil
import time

import pytest
from bridge_support import make_checkpoint

from medseg.checkpoint import read_card
from MedSegLib.finetune_job import (
    CommitFlag,
    FinetuneRequest,
    corrections_folder,
    count_cases,
    default_corrections_root,
    default_models_folder,
    finetune_summary,
    medseg_home,
    model_files,
    start_finetune,
)
from MedSegLib.panel import finetuned_title, model_choices
from MedSegLib.worker import Cancelled

CASES = ["hippocampus_014", "hippocampus_015", "hippocampus_019"]
NOW = dt.datetime(2026, 12, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.fixture
def parent(tmp_path):
    return make_checkpoint(tmp_path / "tiny.safetensors")


@pytest.fixture
def corrections(shared_data, tmp_path):
    root = tmp_path / "corrections"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
        for case in CASES:
            shutil.copy(shared_data / "hippocampus" / sub / f"{case}.nii.gz", root / sub / f"{case}.nii.gz")
    shutil.copy(shared_data / "hippocampus" / "dataset.json", root / "dataset.json")
    return root


def _request(parent, corrections, models, **changes) -> FinetuneRequest:
    base = dict(model=str(parent), corrections=corrections, models_folder=models, steps=3, holdout=1, device="cpu",
                num_threads=1)
    return FinetuneRequest(**{**base, **changes})


def _poll(task, timeout: float = 120.0, until=None) -> list[str]:
    """Poll as the panel's timer does; returns the progress messages seen."""
    seen, deadline = [], time.monotonic() + timeout
    while not task.finished and time.monotonic() < deadline:
        message = task.progress().message
        if not seen or seen[-1] != message:
            seen.append(message)
        if until is not None and until(message):
            return seen
        time.sleep(0.005)
    assert task.finished, f"the job did not finish in {timeout} s; last progress: {seen[-1:]}"
    return seen


def test_a_job_saves_the_model_under_a_fine_tuned_name_that_the_picker_lists(parent, corrections, tmp_path):
    models = tmp_path / "models"
    task = start_finetune(_request(parent, corrections, models), now=NOW)
    seen = _poll(task)
    outcome = task.take()
    assert outcome.state == "done", outcome.traceback
    result = outcome.result
    assert result.path == models / "tiny-hippocampus-ft-20261202.safetensors" and result.path.is_file()
    assert sorted(p.name for p in models.iterdir()) == [result.path.name]  # the staging folder is gone
    assert result.title == "tiny-hippocampus (fine-tuned 2026-12-02, 2 cases)"
    card = read_card(result.path)
    assert card.training["fine_tune"]["parent"]["name"] == "tiny-hippocampus" and finetuned_title(card) == result.title
    assert any("step 3/3" in m for m in seen) and task.progress().fraction == 1.0
    assert "holdout mean Dice" in finetune_summary(result) and result.path.name in finetune_summary(result)

    assert model_files(models) == [str(result.path)]
    choices, problems = model_choices([], [str(parent), *model_files(models)], read_card)
    assert problems == [] and [c.text for c in choices] == ["tiny-hippocampus (tiny.safetensors)", result.title]
    assert finetuned_title(read_card(parent)) is None

    again = start_finetune(_request(parent, corrections, models, steps=1), now=NOW)  # same day: a new file
    _poll(again)
    assert again.take().result.path.name == "tiny-hippocampus-ft-20261202_2.safetensors"
    assert len(model_files(models)) == 2


def test_a_cancelled_job_writes_no_checkpoint(parent, corrections, tmp_path):
    models = tmp_path / "models"
    task = start_finetune(_request(parent, corrections, models, steps=2000))
    _poll(task, until=lambda message: "step" in message)
    task.cancel()
    assert task.cancelled
    _poll(task)
    outcome = task.take()
    assert outcome.state == "cancelled" and isinstance(outcome.error, Cancelled)
    assert list(models.iterdir()) == []  # neither a checkpoint nor the staging folder
    assert not task.progress().message.startswith("saved")


def test_cancel_is_refused_once_the_checkpoint_is_committed():
    flag = CommitFlag()
    flag.commit()
    assert flag.cancel() is False and not flag.cancelled and flag.committed
    late = CommitFlag()
    assert late.cancel() is True
    with pytest.raises(Cancelled):
        late.commit()
    assert not late.committed


@pytest.mark.parametrize(("break_it", "message"), [
    (lambda folder: shutil.rmtree(folder / "imagesTr"), "holds no corrections"),
    (lambda folder: None, "leaves no correction to train on"),  # holdout 3 of 3 cases
])
def test_a_failed_job_reports_the_engine_message_and_writes_nothing(parent, corrections, tmp_path, break_it,
                                                                      message):
    models = tmp_path / "models"
    break_it(corrections)
    task = start_finetune(_request(parent, corrections, models, holdout=3))
    _poll(task)
    outcome = task.take()
    assert outcome.state == "failed" and message in outcome.message
    assert list(models.iterdir()) == []


def test_the_default_folders_and_the_per_model_corrections_folder(tmp_path, corrections):
    env = {"MEDSEG_HOME": str(tmp_path / "home")}
    assert medseg_home(env) == tmp_path / "home"
    assert default_corrections_root(env) == tmp_path / "home" / "corrections"
    assert default_models_folder(env) == tmp_path / "home" / "models"
    assert medseg_home({}).name == ".medseg" and medseg_home({}).parent.is_dir()
    assert corrections_folder(tmp_path, "hippocampus unet/3d") == tmp_path / "hippocampus_unet_3d"
    assert count_cases(corrections) == 3 and count_cases(tmp_path / "missing") == 0
    assert model_files(tmp_path / "missing") == []
