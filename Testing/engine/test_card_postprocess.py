"""A model card's default post-processing (``ModelCard.postprocess``): checked as untrusted input, kept by save and
load, applied by the engine when the caller does not choose, replaced by an explicit choice (``none`` included), and
stated by ``medseg segment``, ``medseg evaluate`` and ``medseg info``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from card_support import card_dict
from threshold_net import Threshold

from medseg.card import ModelCard
from medseg.checkpoint import LoadedModel, load_checkpoint, read_card, save_checkpoint
from medseg.cli import build_parser, main
from medseg.cli_segment import postprocess_options
from medseg.geometry import Geometry
from medseg.inference import Segmenter, SegmentOptions
from medseg.postprocess import PostprocessOptions, card_default

GEOMETRY = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))
ALL_OFF = {"largest_component": False, "fill_holes": False, "min_island_ml": 0.0}


def _segmenter(postprocess: dict | None) -> Segmenter:
    model = Threshold()
    d = card_dict(model)
    d.update(architecture_args=model.config, patch_size=[16, 16, 16], spacing=None, postprocess=postprocess,
             labels=[{"id": 0, "name": "background", "color": [0, 0, 0]},
                     {"id": 1, "name": "bright", "color": [255, 0, 0]}])
    d["inputs"][0]["normalization"] = {"kind": "none"}
    return Segmenter(LoadedModel(model, ModelCard.from_dict(d), Path("threshold")), device="cpu")


def _image() -> np.ndarray:
    """A hollow ball (a 3-voxel cavity inside) and a separate small ball: positive inside, negative outside."""
    k, j, i = np.indices((24, 32, 28))
    big = np.sqrt((k - 11) ** 2 + (j - 12) ** 2 + (i - 13) ** 2)
    small = np.sqrt((k - 12) ** 2 + (j - 27) ** 2 + (i - 13) ** 2)
    inside = ((big <= 7) & (big > 1.5)) | (small <= 2)
    return np.where(inside, 1.0, -1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------- the card field


def test_a_default_is_stored_with_all_three_fields_and_survives_save_and_load(tmp_path):
    torch.manual_seed(0)
    from medseg.models import build_model

    model = build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.0625, depth=3)
    d = card_dict(model)
    assert ModelCard.from_dict(d).postprocess is None and card_default(ModelCard.from_dict(d)) == PostprocessOptions()
    d["postprocess"] = {"largest_component": True}
    card = ModelCard.from_dict(d)
    assert card.postprocess == {"largest_component": True, "fill_holes": False, "min_island_ml": 0.0}
    assert ModelCard.from_json(card.to_json()) == card
    path = save_checkpoint(tmp_path / "m.safetensors", model, card)
    assert read_card(path).postprocess == card.postprocess and load_checkpoint(path).card == card
    assert card_default(read_card(path)) == PostprocessOptions(largest_component=True)
    d["postprocess"] = {"fill_holes": True, "min_island_ml": 2}
    assert card_default(ModelCard.from_dict(d)) == PostprocessOptions(fill_holes=True, min_island_ml=2.0)


@pytest.mark.parametrize(("value", "field", "problem"), [
    ({"largest": True}, "postprocess.largest", "unknown key"),
    ({"largest_component": "yes"}, "postprocess.largest_component", "expected true or false, got 'yes'"),
    ({"fill_holes": 1}, "postprocess.fill_holes", "expected true or false, got 1"),
    ({"min_island_ml": -0.5}, "postprocess.min_island_ml", "expected a finite number in [0, 100], got -0.5"),
    ({"min_island_ml": 1e9}, "postprocess.min_island_ml", "expected a finite number in [0, 100]"),
    ({"min_island_ml": True}, "postprocess.min_island_ml", "expected a finite number in [0, 100], got True"),
    ({"min_island_ml": "0.5"}, "postprocess.min_island_ml", "expected a finite number in [0, 100], got '0.5'"),
    ({"min_island_ml": float("nan")}, "postprocess.min_island_ml", "expected a finite number, got nan"),
    ([True], "postprocess", "expected an object with some of"),
    ("largest", "postprocess", "expected an object with some of"),
])
def test_a_bad_default_is_refused_naming_the_card_and_the_field(value, field, problem):
    d = card_dict(Threshold())
    d["postprocess"] = value
    with pytest.raises(ValueError) as err:
        ModelCard.from_json(json.dumps(d), source="hostile.safetensors")
    message = str(err.value)
    assert "invalid model card in hostile.safetensors" in message and f"{field}: {problem}" in message


# ---------------------------------------------------------------------------------------------- the engine


def test_the_card_default_applies_when_the_caller_does_not_choose():
    image = _image()
    raw = (image > 0).astype(np.uint8)
    small = int(raw[:, 22:, :].sum())
    result = _segmenter({"largest_component": True}).segment(image, GEOMETRY, SegmentOptions())
    assert result.labels[:, 22:, :].sum() == 0 and np.array_equal(result.labels[:, :22, :], raw[:, :22, :])
    assert result.postprocessing == {"largest_component": True, "fill_holes": False, "min_island_ml": 0.0,
                                     "removed_voxels": {1: small}, "filled_voxels": {1: 0}, "source": "card"}
    assert result.report()["postprocessing"]["source"] == "card"
    assert result.measurements[0].voxel_count == int(raw.sum()) - small


def test_an_explicit_choice_replaces_the_card_default_and_none_turns_it_off():
    image = _image()
    raw = (image > 0).astype(np.uint8)
    segmenter = _segmenter({"largest_component": True})
    off = segmenter.segment(image, GEOMETRY, SegmentOptions(postprocess=PostprocessOptions()))
    assert np.array_equal(off.labels, raw)
    assert off.postprocessing == {**ALL_OFF, "removed_voxels": {1: 0}, "filled_voxels": {1: 0}, "source": "options"}
    holes = segmenter.segment(image, GEOMETRY, SegmentOptions(postprocess=PostprocessOptions(fill_holes=True)))
    assert holes.labels[:, 22:, :].sum() == raw[:, 22:, :].sum()  # not the card's largest component: the ball stays
    assert holes.labels[11, 12, 13] == 1 and raw[11, 12, 13] == 0  # the cavity is filled
    assert holes.postprocessing["source"] == "options" and holes.postprocessing["filled_voxels"][1] > 0


def test_a_card_without_a_default_changes_nothing():
    image = _image()
    result = _segmenter(None).segment(image, GEOMETRY, SegmentOptions())
    assert np.array_equal(result.labels, (image > 0).astype(np.uint8))
    assert result.postprocessing == {**ALL_OFF, "removed_voxels": {1: 0}, "filled_voxels": {1: 0}, "source": "card"}


# ---------------------------------------------------------------------------------------------- the command line


@pytest.mark.parametrize(("flags", "expected"), [
    ([], None),
    (["--postprocess", "none"], PostprocessOptions()),
    (["--postprocess", "largest", "fill-holes"], PostprocessOptions(largest_component=True, fill_holes=True)),
    (["--min-island-ml", "0.5"], PostprocessOptions(min_island_ml=0.5)),
    (["--postprocess", "largest", "--min-island-ml", "0"], PostprocessOptions(largest_component=True)),
])
def test_segment_flags_absent_mean_the_card_default_and_given_mean_exactly_what_they_say(flags, expected):
    for command in (["segment", "in.nii.gz", "--output", "out.nii.gz"], ["evaluate", "--images", "i", "--labels", "l"]):
        args = build_parser().parse_args([*command, "--model", "m", *flags])
        assert postprocess_options(args) == expected


@pytest.mark.parametrize("flags", [["--postprocess", "none", "largest"], ["--postprocess", "none",
                                                                          "--min-island-ml", "1"]])
def test_none_with_a_step_is_refused(flags):
    args = build_parser().parse_args(["segment", "in.nii.gz", "--output", "o.nii.gz", "--model", "m", *flags])
    with pytest.raises(ValueError, match="'none' turns post-processing off; give it alone"):
        postprocess_options(args)


def test_the_bundled_left_atrium_model_keeps_its_largest_component_unless_told_otherwise(shared_data, tmp_path,
                                                                                         capsys):
    assert main(["info", "left-atrium-vnet"]) == 0
    assert "post-processing by default: largest component" in capsys.readouterr().out
    split = Path(__file__).resolve().parents[2] / "Resources" / "Models" / "left-atrium-vnet.split.json"
    case = json.loads(split.read_text())["validation"][0]
    image = shared_data / "left_atrium" / "imagesTr" / f"{case}.nii.gz"
    reports = {}
    for name, flags in (("default", []), ("none", ["--postprocess", "none"])):
        report = tmp_path / f"{name}.json"
        assert main(["segment", str(image), "--model", "left-atrium-vnet", "--output", str(tmp_path / f"{name}.nii.gz"),
                     "--report", str(report), "--device", "cpu", "--no-progress", *flags]) == 0
        reports[name] = json.loads(report.read_text())["postprocessing"]
    out = capsys.readouterr().out
    assert "post-processing: largest component (the model card's default; --postprocess none: off)" in out
    assert {k: reports["default"][k] for k in (*ALL_OFF, "source")} == {**ALL_OFF, "largest_component": True,
                                                                          "source": "card"}
    assert reports["none"] == {**ALL_OFF, "removed_voxels": {"1": 0}, "filled_voxels": {"1": 0}, "source": "options"}
    evaluation = tmp_path / "evaluation.json"
    assert main(["evaluate", "--model", "left-atrium-vnet", "--images", str(image.parent), "--labels",
                 str(shared_data / "left_atrium" / "labelsTr"), "--cases", case, "--device", "cpu",
                 "--json", str(evaluation)]) == 0
    assert json.loads(evaluation.read_text())["options"]["postprocessing"] == {**ALL_OFF, "largest_component": True,
                                                                                "source": "card"}
