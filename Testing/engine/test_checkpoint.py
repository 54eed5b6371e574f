"""Self-describing safetensors checkpoints; pickles are refused without running them."""

from __future__ import annotations

import json
import os

import pytest
import torch
from card_support import card_dict

from medseg.card import ModelCard
from medseg.checkpoint import import_state_dict, load_checkpoint, read_card, save_checkpoint


def test_save_load_round_trip(tmp_path, tiny_model, tiny_card):
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model, tiny_card)
    loaded = load_checkpoint(path)
    assert loaded.card == tiny_card
    assert not loaded.model.training
    x = torch.randn(1, 1, 8, 12, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), tiny_model(x), rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left


def test_half_precision_storage_loads_as_float32(tmp_path, tiny_model, tiny_card):
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model, tiny_card, dtype=torch.float16)
    full = save_checkpoint(tmp_path / "f.safetensors", tiny_model, tiny_card)
    assert path.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_checkpoint(path)
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    x = torch.randn(1, 1, 8, 12, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), tiny_model(x), rtol=1e-2, atol=1e-2)


def test_card_is_read_without_weights_and_is_complete(tmp_path, tiny_model, tiny_card):
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model, tiny_card)
    card = read_card(path).to_dict()
    for key in ("architecture", "architecture_args", "inputs", "labels", "spacing", "patch_size", "training",
                "metrics", "engine_version", "format_version"):
        assert card[key] not in (None, "", [], {}), key
    assert card["labels"][1]["terminology"]["type"]["scheme"] == "SCT"
    assert card["inputs"][0]["normalization"]["kind"] == "zscore"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("labels", [{"id": 0, "name": "bg", "color": [0, 0, 300]}], "labels[0].color"),
    ("inputs", [{"name": "CT", "modality": "XR", "normalization": {"kind": "ct"}}], "inputs[0].modality"),
    ("patch_size", [32, -1, 32], "patch_size"),
    ("spacing", [1, 0, 1], "spacing"),
    ("training", {"dataset": "x"}, "training.license"),
    ("architecture", 5, "architecture"),
])
def test_card_errors_name_the_bad_field(tiny_model, field, value, message):
    d = card_dict(tiny_model)
    d[field] = value
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ModelCard.from_dict(d)


def test_card_inconsistent_with_its_architecture(tiny_model):
    d = card_dict(tiny_model)
    d["labels"] = d["labels"][:2]
    with pytest.raises(ValueError, match="2 labels listed but architecture_args.num_classes is 3"):
        ModelCard.from_dict(d)


def test_weights_that_do_not_match_the_card_are_refused(tmp_path, tiny_model, tiny_card):
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model, tiny_card)
    d = card_dict(tiny_model)
    d["architecture_args"] = {**d["architecture_args"], "width": 0.125}
    wrong = ModelCard.from_dict(d)
    from safetensors.torch import load_file, save_file
    save_file(load_file(path), tmp_path / "wrong.safetensors", metadata={"medseg.card": wrong.to_json()})
    with pytest.raises(ValueError, match="do not match the card's architecture.*shape mismatch"):
        load_checkpoint(tmp_path / "wrong.safetensors")


def test_truncated_checkpoint_is_a_clear_error(tmp_path, tiny_model, tiny_card):
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model, tiny_card)
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.safetensors"):
        load_checkpoint(tmp_path / "cut.safetensors")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.safetensors"):
        read_card(tmp_path / "nothere.safetensors")


class _Payload:
    """Unpickling this would create a file: proof that code from the checkpoint ran."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.fixture
def evil_checkpoint(tmp_path, tiny_model):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": tiny_model.state_dict(), "payload": _Payload(str(marker))}, path)
    assert not marker.exists()
    return path, marker


def test_pickle_checkpoint_is_refused_and_its_payload_never_runs(tmp_path, evil_checkpoint, tiny_card):
    path, marker = evil_checkpoint
    with pytest.raises(ValueError, match="pickle.*medseg import"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="refused to load .*evil.pt.*was not run"):
        import_state_dict(path, tiny_card, tmp_path / "out.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


def test_plain_state_dict_import(tmp_path, tiny_model, tiny_card):
    src = tmp_path / "plain.pth"
    torch.save({"model": {f"module.{k}": v for k, v in tiny_model.state_dict().items()}}, src)
    out = import_state_dict(src, tiny_card, tmp_path / "imported.safetensors")
    loaded = load_checkpoint(out)
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), tiny_model(x), rtol=0, atol=0)
    assert json.loads(loaded.card.to_json())["name"] == "tiny-hippocampus"
    assert os.path.getsize(out) > 0
