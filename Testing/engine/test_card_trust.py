"""The model card as a trust boundary: every checkpoint a user hands us is treated as hostile.

Malformed and out-of-range cards are refused with a ValueError naming the field; oversized networks and
unknown constructor arguments are refused before anything is allocated; the weights are checked against the
card from the safetensors header; safetensors is recognised by its header (a length starting with 0x80 is
not a pickle); card text reaches the terminal without control characters; a bare name is a bundled model.
"""

from __future__ import annotations

import copy
import json
import pickle
import re
import resource
import struct
import unicodedata
from pathlib import Path

import pytest
import torch
from card_support import card_dict
from safetensors.torch import save_file

from medseg.card import MAX_CLASSES, MAX_PATCH_SIZE, ModelCard, finite_or_null
from medseg.catalog import bundled_models, is_bare_name, resolve_checkpoint
from medseg.checkpoint import MAX_PARAMETER_BYTES, load_checkpoint, parameter_count, read_card, save_checkpoint
from medseg.cli import main
from medseg.text import printable

# -------------------------------------------------------------------------------------------- malformed cards

# (where in the card, hostile value, the field path the error must name)
BAD_FIELDS = [
    (["name"], 5, "name"),
    (["name"], "", "name"),
    (["name"], "x" * 300, "name"),
    (["summary"], None, "summary"),
    (["summary"], ["a"], "summary"),
    (["description"], {"a": 1}, "description"),
    (["engine_version"], 1.0, "engine_version"),
    (["format_version"], "1", "format_version"),
    (["format_version"], True, "format_version"),
    (["architecture"], 5, "architecture"),
    (["architecture_args"], [], "architecture_args"),
    (["architecture_args", "width"], "wide", "architecture_args.width"),
    (["architecture_args", "width"], 0, "architecture_args.width"),
    (["architecture_args", "width"], 1000, "architecture_args.width"),
    (["architecture_args", "width"], float("nan"), "architecture_args.width"),
    (["architecture_args", "depth"], 9, "architecture_args.depth"),
    (["architecture_args", "depth"], 2.5, "architecture_args.depth"),
    (["architecture_args", "in_channels"], 17, "architecture_args.in_channels"),
    (["architecture_args", "num_classes"], 2000, "architecture_args.num_classes"),
    (["architecture_args", "spatial_dims"], True, "architecture_args.spatial_dims"),
    (["architecture_args", "dropout"], 1.5, "architecture_args.dropout"),
    (["architecture_args", "norm"], {"kind": "batch"}, "architecture_args.norm"),
    (["architecture_args", "features"], [32, -1], "architecture_args.features[1]"),
    (["architecture_args", "features"], "32", "architecture_args.features"),
    (["architecture_args", "extra"], [[1]], "architecture_args.extra[0]"),
    (["architecture_args", "extra"], 1e300, "architecture_args.extra"),
    (["inputs"], {}, "inputs"),
    (["inputs"], [], "inputs"),
    (["inputs", 0], "T1w", "inputs[0]"),
    (["inputs", 0, "name"], 3, "inputs[0].name"),
    (["inputs", 0, "name"], " ", "inputs[0].name"),
    (["inputs", 0, "modality"], ["MR"], "inputs[0].modality"),
    (["inputs", 0, "normalization"], "zscore", "inputs[0].normalization"),
    (["inputs", 0, "normalization", "kind"], None, "inputs[0].normalization.kind"),
    (["inputs", 0, "normalization", "percentiles"], ["a", 99], "inputs[0].normalization.percentiles[0]"),
    (["inputs", 0, "normalization", "percentiles"], [-1, 50], "inputs[0].normalization.percentiles[0]"),
    (["inputs", 0, "normalization", "percentiles"], [50, 101], "inputs[0].normalization.percentiles[1]"),
    (["inputs", 0, "normalization", "percentiles"], [90, 10], "inputs[0].normalization.percentiles"),
    (["inputs", 0, "normalization", "percentiles"], [1, 2, 3], "inputs[0].normalization.percentiles"),
    (["inputs", 0, "normalization", "percentiles"], [float("nan"), 99], "inputs[0].normalization.percentiles[0]"),
    (["inputs", 0, "normalization", "window"], [0, float("inf")], "inputs[0].normalization.window[1]"),
    (["inputs", 0, "normalization", "mean"], "0", "inputs[0].normalization.mean"),
    (["inputs", 0, "normalization", "mean"], float("-inf"), "inputs[0].normalization.mean"),
    (["inputs", 0, "normalization", "std"], 0, "inputs[0].normalization.std"),
    (["inputs", 0, "normalization", "std"], 1e12, "inputs[0].normalization.std"),
    (["labels"], "background", "labels"),
    (["labels", 1], None, "labels[1]"),
    (["labels", 1, "id"], "1", "labels[1].id"),
    (["labels", 1, "id"], 1.0, "labels[1].id"),
    (["labels", 1, "id"], 10**9, "labels[1].id"),
    (["labels", 1, "name"], None, "labels[1].name"),
    (["labels", 1, "name"], "", "labels[1].name"),
    (["labels", 1, "name"], "Posterior Hippocampus", "labels"),  # the same name twice (ignoring case)
    (["labels", 1, "color"], [1, 2], "labels[1].color"),
    (["labels", 1, "color"], "red", "labels[1].color"),
    (["labels", 1, "terminology"], "SCT", "labels[1].terminology"),
    (["labels", 1, "terminology", "type"], None, "labels[1].terminology.type"),
    (["labels", 1, "terminology", "type", "code"], 5366008, "labels[1].terminology.type"),
    (["labels", 1, "terminology", "type", "meaning"], "Hippo~campus", "labels[1].terminology.type.meaning"),
    (["labels", 1, "terminology", "type", "meaning"], "a\nb", "labels[1].terminology.type.meaning"),
    (["patch_size"], [32, 48], "patch_size"),  # 2 sizes for a 3D network
    (["patch_size"], "32", "patch_size"),
    (["patch_size"], [32, 48, 32.0], "patch_size[2]"),
    (["patch_size"], [32, 0, 32], "patch_size[1]"),
    (["patch_size"], [32, 2048, 32], "patch_size[1]"),
    (["patch_size"], [1024, 1024, 1024], "patch_size"),  # 2^30 voxels
    (["patch_size"], [32, True, 32], "patch_size[1]"),
    (["spacing"], [1, 0, 1], "spacing[1]"),
    (["spacing"], [1, 1e-6, 1], "spacing[1]"),
    (["spacing"], [1, 1, 1000], "spacing[2]"),
    (["spacing"], [1, float("nan"), 1], "spacing[1]"),
    (["spacing"], [1, float("inf"), 1], "spacing[1]"),
    (["spacing"], "1mm", "spacing"),
    (["spacing"], [1, "1", 1], "spacing[1]"),
    (["training"], None, "training"),
    (["training", "dataset"], 7, "training.dataset"),
    (["training", "license"], None, "training.license"),
    (["training", "lr"], float("nan"), "training.lr"),
    (["metrics"], [0.9], "metrics"),
    (["metrics", "dice", "anterior hippocampus"], float("inf"), "metrics.dice.anterior hippocampus"),
    (["slice_axis"], 3, "slice_axis"),
    (["slice_axis"], True, "slice_axis"),
    (["slice_axis"], "0", "slice_axis"),
]


def _set(card: dict, where: list, value) -> dict:
    out = copy.deepcopy(card)
    target = out
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    return out


@pytest.mark.parametrize(("where", "value", "field"), BAD_FIELDS,
                         ids=[f"{'.'.join(map(str, w))}={v!r:.20}" for w, v, _ in BAD_FIELDS])
def test_a_bad_field_is_a_value_error_naming_it(tiny_model, where, value, field):
    card = _set(card_dict(tiny_model), where, value)
    with pytest.raises(ValueError) as info:
        ModelCard.from_dict(card, source="hostile.safetensors")
    message = str(info.value)
    assert f"- {field}: " in message, message
    assert "hostile.safetensors" in message


HOSTILE_VALUES = [None, True, -1, 0, 10**12, 1.5, float("nan"), float("inf"), "", "x" * 300, [], [1, "a"], {},
                  {"a": [1]}, [[[]]]]


def _paths(value, prefix=()):
    """Every position in a JSON value: object members and list items, containers included."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield [*prefix, key]
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield [*prefix, i]
            yield from _paths(item, (*prefix, i))


def test_every_field_replaced_by_every_hostile_value_gives_a_value_error_or_a_card(tiny_model):
    base = card_dict(tiny_model)
    base["architecture_args"] = {**base["architecture_args"], "features": [8, 16]}  # a list inside the args too
    paths = list(_paths(base))
    refused = accepted = 0
    for where in paths:
        for value in HOSTILE_VALUES:
            try:
                ModelCard.from_dict(_set(base, where, value))
                accepted += 1
            except ValueError as exc:
                refused += 1
                assert str(exc).startswith("invalid model card in model card:"), (where, value, exc)
    assert refused + accepted == len(paths) * len(HOSTILE_VALUES) > 900
    assert refused > 0.8 * (refused + accepted)  # most positions refuse most values; some take any JSON


@pytest.mark.parametrize("text", [
    "[" * 100_000 + "]" * 100_000,  # deeper than Python's recursion limit
    "1" * 5000,  # an integer longer than Python converts
    "NaN", "[]", "null", '"card"', "{", "",
    '{"name": NaN}',
])
def test_card_json_that_is_not_a_card_is_a_value_error(text):
    with pytest.raises(ValueError, match="model card"):
        ModelCard.from_json(text)


def test_nan_and_infinity_written_by_json_are_refused_wherever_they_are(tiny_model):
    text = json.dumps(card_dict(tiny_model))
    for literal in ("NaN", "Infinity", "-Infinity", "1e400"):
        hostile = text.replace('"spacing": [1.0, 1.0, 1.0]', f'"spacing": [1.0, {literal}, 1.0]')
        with pytest.raises(ValueError, match=r"spacing\[1\]"):
            ModelCard.from_json(hostile)
        hostile = text.replace('"metrics": {', f'"metrics": {{"hd95": {literal}, ')
        with pytest.raises(ValueError, match=r"- metrics\.hd95: expected a finite number"):
            ModelCard.from_json(hostile)


def test_undefined_metrics_are_written_as_null(tiny_model):
    card = card_dict(tiny_model)
    card["metrics"] = {"dice": {"anterior hippocampus": float("nan")}, "hd95": [1.0, float("inf")]}
    with pytest.raises(ValueError, match="metrics.dice.anterior hippocampus: expected a finite number"):
        ModelCard.from_dict(card)
    card["metrics"] = finite_or_null(card["metrics"])
    assert ModelCard.from_dict(card).metrics == {"dice": {"anterior hippocampus": None}, "hd95": [1.0, None]}


def test_nesting_deeper_than_a_card_needs_is_refused(tiny_model):
    card = card_dict(tiny_model)
    deep: list = []
    card["training"]["notes"] = deep
    for _ in range(100):
        deep.append([])
        deep = deep[0]
    with pytest.raises(ValueError, match="nested more than 32 levels"):
        ModelCard.from_dict(card)


def test_generous_bounds_take_real_models(tiny_model):
    card = card_dict(tiny_model)
    n = 118  # TotalSegmentator's labels
    card["architecture_args"] = {**card["architecture_args"], "num_classes": n}
    card["labels"] = [{"id": i, "name": f"organ {i}", "color": [i, i, i]} for i in range(n)]
    card["spacing"], card["patch_size"] = [0.5, 0.5, 5.0], [128, 128, 128]
    card["inputs"][0] = {"name": "CT", "modality": "CT",
                         "normalization": {"kind": "ct", "window": [-1024, 3071], "mean": 40.0, "std": 400.0}}
    assert len(ModelCard.from_dict(card).labels) == n < MAX_CLASSES
    card["patch_size"] = [1, MAX_PATCH_SIZE, MAX_PATCH_SIZE]
    assert ModelCard.from_dict(card).patch_size == (1, 1024, 1024)


def test_bundled_cards_pass_the_bounds():
    entries = bundled_models()
    assert [e.name for e in entries] == ["abdominal-ct-organs", "hippocampus-unet3d", "hippocampus-unetpp",
                                         "left-atrium-vnet"]
    for entry in entries:
        assert 0 < parameter_count(entry.card) * 4 < MAX_PARAMETER_BYTES


# ------------------------------------------------------------------------------ networks and weights vs cards


def _hostile_file(path: Path, tiny_model, card: dict, tensors: dict | None = None) -> Path:
    """A checkpoint whose card was never validated: the tiny model's weights (or `tensors`) under `card`."""
    state = tensors if tensors is not None else {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    save_file(state, str(path), metadata={"medseg.card": json.dumps(card)})
    return path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_card_asking_for_too_many_parameters_is_refused_before_allocating(tmp_path, tiny_model):
    card = card_dict(tiny_model)
    card["architecture_args"] = {**card["architecture_args"], "width": 8.0, "depth": 6}  # 23.2e9 parameters, 86.3 GiB
    path = _hostile_file(tmp_path / "huge.safetensors", tiny_model, card)
    before = _peak_rss_mb()
    with pytest.raises(ValueError, match=r"huge.safetensors: architecture_args .* ask for [\d,]+ parameters "
                                         r"\(\d+\.\d GiB\); at most 2 GiB"):
        load_checkpoint(path)
    assert _peak_rss_mb() - before < 500  # shapes only: the meta device allocates nothing
    assert main(["info", str(path)]) == 2


@pytest.mark.parametrize(("args", "message"), [
    ({"colour": "red"}, r"architecture_args.colour: unet takes no argument 'colour'; its arguments are "
                        r"spatial_dims, in_channels, num_classes, width, depth, norm, dropout"),
    ({"depth": 7}, r"architecture_args cannot build unet: depth must be an integer from 2 to 6"),
    ({"norm": "layer"}, r"architecture_args cannot build unet: .*layer"),
])
def test_constructor_arguments_the_network_refuses_are_a_value_error(tmp_path, tiny_model, args, message):
    card = card_dict(tiny_model)
    card["architecture_args"] = {**card["architecture_args"], **args}
    path = _hostile_file(tmp_path / "bad.safetensors", tiny_model, card)
    with pytest.raises(ValueError, match=message):
        load_checkpoint(path)
    with pytest.raises(ValueError, match=message):
        parameter_count(read_card(path))


def test_weights_are_checked_against_the_card_from_the_header(tmp_path, tiny_model, tiny_card):
    state = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    first, last = sorted(state)[0], sorted(state)[-1]
    hostile = dict(state)
    del hostile[first]
    hostile["extra.weight"] = torch.zeros(2)
    hostile[last] = torch.zeros(7)
    path = _hostile_file(tmp_path / "w.safetensors", tiny_model, tiny_card.to_dict(), hostile)
    with pytest.raises(ValueError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert f"missing ['{first}']" in message and "unexpected ['extra.weight']" in message
    assert f"shape mismatch ['{last}: file (7,) vs card {tuple(state[last].shape)}']" in message


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.bool, torch.int64])
def test_weights_stored_as_integers_are_refused(tmp_path, tiny_model, tiny_card, dtype):
    state = {k: v.to(dtype).contiguous() for k, v in tiny_model.state_dict().items()}
    path = _hostile_file(tmp_path / "int.safetensors", tiny_model, tiny_card.to_dict(), state)
    with pytest.raises(ValueError, match="dtype not accepted"):
        load_checkpoint(path)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_weights_stored_in_other_float_types_load_as_float32(tmp_path, tiny_model, tiny_card, dtype):
    state = {k: v.to(dtype).contiguous() for k, v in tiny_model.state_dict().items()}
    path = _hostile_file(tmp_path / "f.safetensors", tiny_model, tiny_card.to_dict(), state)
    assert all(p.dtype == torch.float32 for p in load_checkpoint(path).model.parameters())


def test_batch_norm_counters_stay_int64(tmp_path):
    from medseg.models import build_model

    model = build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.0625, depth=3, norm="batch")
    card = ModelCard.from_dict(card_dict(model))
    loaded = load_checkpoint(save_checkpoint(tmp_path / "bn.safetensors", model, card, dtype=torch.float16))
    counters = [v for k, v in loaded.model.state_dict().items() if k.endswith("num_batches_tracked")]
    assert counters and all(v.dtype == torch.int64 for v in counters)


# ------------------------------------------------------------------------------------ recognising safetensors


def test_a_header_length_starting_with_0x80_is_safetensors_not_a_pickle(tmp_path, tiny_model):
    for extra in range(512):
        card = card_dict(tiny_model)
        card["description"] = "d" * extra
        path = save_checkpoint(tmp_path / "m.safetensors", tiny_model, ModelCard.from_dict(card))
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no description length gave a header length whose first byte is 0x80")
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] % 256 == 0x80
    assert read_card(path).description == "d" * extra
    loaded = load_checkpoint(path)
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), tiny_model(x), rtol=0, atol=0)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_raw_pickles_are_still_refused_as_pickles(tmp_path, tiny_model, protocol):
    path = tmp_path / "raw.pt"
    path.write_bytes(pickle.dumps({"w": [1.0] * 100}, protocol=protocol))
    assert path.read_bytes()[0] == 0x80
    with pytest.raises(ValueError, match="is a PyTorch pickle file.*medseg import"):
        read_card(path)


@pytest.mark.parametrize("head", [
    struct.pack("<Q", 10**12) + b"{}",  # a length beyond the file
    struct.pack("<Q", 4) + b"[1] ",  # JSON but not an object
    struct.pack("<Q", 4) + b"{x}!",  # not JSON
    b"\x80" + b"\0" * 7 + b"{" * 200,  # 0x80 length, unparsable header: neither safetensors nor loaded
])
def test_files_that_only_look_like_safetensors_are_refused(tmp_path, head):
    path = tmp_path / "odd.safetensors"
    path.write_bytes(head)
    with pytest.raises(ValueError, match="odd.safetensors"):
        read_card(path)


# ------------------------------------------------------------------------------------------- printable text

ANSI = "\x1b[2J\x1b[31m"
BIDI = "\u202e"


def test_printable_removes_escape_sequences_control_and_format_characters():
    assert printable("a\x1b[2Jb\x1b]0;title\x07c\x9b31md\x1bce") == "abcde"
    assert printable("x\u202eexe.txt\u200b\x00\x7f\x85y") == "xexe.txt y"
    assert printable("two\r\nlines\tand\x0btabs") == "two lines and tabs"
    assert printable("two\r\nlines", newlines=True) == "two\nlines"
    assert printable("Hippocampus (ü, 海马)") == "Hippocampus (ü, 海马)"
    assert printable(42) == "42"


def _controls(text: str) -> list[str]:
    return [c for c in text if c != "\n" and unicodedata.category(c).startswith("C")]


def test_medseg_info_prints_no_control_characters(tmp_path, tiny_model, capsys):
    card = card_dict(tiny_model)
    card["name"] = f"evil{ANSI}name"
    card["summary"] = f"{BIDI}summary\x1b]0;pwned\x07 with\nnewline"
    card["labels"][1]["name"] = f"anterior{ANSI}"
    card["training"]["dataset"] = f"data{ANSI}set\x9b2J"
    card["inputs"][0]["name"] = f"T1w{BIDI}"
    path = save_checkpoint(tmp_path / "ansi.safetensors", tiny_model, ModelCard.from_dict(card))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "evilname: summary with newline" in out and "1 anterior, 2 posterior" in out
    assert not _controls(out), _controls(out)
    assert main(["info", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert not _controls(out) and json.loads(out)["name"] == f"evil{ANSI}name"


# ---------------------------------------------------------------------------------- bare names vs file paths


def test_a_bare_name_is_always_the_bundled_model(tmp_path, tiny_model, tiny_card, monkeypatch):
    bundled = resolve_checkpoint("hippocampus-unet3d")
    monkeypatch.chdir(tmp_path)
    impostor = save_checkpoint(tmp_path / "hippocampus-unet3d", tiny_model, tiny_card)
    assert resolve_checkpoint("hippocampus-unet3d") == bundled != impostor
    assert resolve_checkpoint("./hippocampus-unet3d").resolve() == impostor.resolve()
    assert resolve_checkpoint(Path("hippocampus-unet3d")).resolve() == impostor.resolve()
    assert main(["info", "hippocampus-unet3d", "--json"]) == 0


def test_a_bare_name_that_is_not_bundled_points_to_the_file(tmp_path, tiny_model, tiny_card, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "my-model", tiny_model, tiny_card)
    with pytest.raises(KeyError, match=r"unknown model 'my-model'.*give its path: ./my-model"):
        resolve_checkpoint("my-model")
    assert resolve_checkpoint("./my-model").name == "my-model"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint("gone.safetensors")


@pytest.mark.parametrize(("text", "bare"), [
    ("hippocampus-unet3d", True), ("my.model", True), ("./m", False), ("dir/m", False), ("m.safetensors", False),
    ("M.PTH", False), ("~", False), ("~/m", False), ("..", False), ("", False),
])
def test_what_counts_as_a_bare_name(text, bare):
    assert is_bare_name(text) is bare


def test_medseg_segment_keeps_hostile_label_names_out_of_paths_terminal_and_headers(tmp_path, samples, capsys):
    from medseg.io import read_segmentation
    from medseg.models import build_model

    torch.manual_seed(0)
    model = build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.0625, depth=3)
    card = card_dict(model)
    card["labels"][1]["name"] = f"../../escaped{ANSI}\nSegment5_Name:=injected"
    card["labels"][2]["name"] = f"/etc/passwd{BIDI}"
    ckpt = save_checkpoint(tmp_path / "hostile.safetensors", model, ModelCard.from_dict(card))
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    assert main(["segment", str(samples / "hippocampus_001_T1w.nii.gz"), "--model", str(ckpt), "--output",
                 str(out / "seg.seg.nrrd"), "--probabilities", str(out / "p.nii.gz"), "--device", "cpu",
                 "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert not _controls(captured.out + captured.err), _controls(captured.out + captured.err)
    assert "../../escaped Segment5_Name:=injected" in captured.out  # the volume lines, cleaned
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "hostile.safetensors"]
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["out"]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 3 and "seg.seg.nrrd" in files
    assert all(re.fullmatch(r"p_[A-Za-z0-9_-]+\.nii\.gz", name) for name in files if name != "seg.seg.nrrd")
    _, _, segments = read_segmentation(out / "seg.seg.nrrd")
    assert [s.name for s in segments] == ["../../escaped Segment5_Name:=injected", "/etc/passwd"]
