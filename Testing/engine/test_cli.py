"""The medseg command line, run as a user runs it (a subprocess of the installed entry point)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from card_support import card_dict

from medseg.checkpoint import save_checkpoint
from medseg.models import ARCHITECTURES


def medseg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medseg", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", [[], ["models"], ["info"], ["import"], ["segment"], ["evaluate"], ["train"]])
def test_every_subcommand_has_help(command):
    result = medseg(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: medseg" in result.stdout


def test_models_json_lists_architectures():
    result = medseg("models", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [a["name"] for a in data["architectures"]] == list(ARCHITECTURES)
    assert isinstance(data["bundled_models"], list)


def test_info_prints_the_card(tmp_path, tiny_model, tiny_card):
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model, tiny_card)
    result = medseg("info", str(path))
    assert result.returncode == 0, result.stderr
    assert "tiny-hippocampus" in result.stdout and "posterior hippocampus" in result.stdout
    n = sum(p.numel() for p in tiny_model.parameters())
    assert f"{n:,} parameters" in result.stdout
    as_json = json.loads(medseg("info", str(path), "--json").stdout)
    assert as_json["architecture_args"] == tiny_model.config


def test_info_on_unknown_model_names_the_fix():
    result = medseg("info", "no-such-model")
    assert result.returncode == 2
    assert "unknown model 'no-such-model'" in result.stderr and "Traceback" not in result.stderr


def test_import_from_the_command_line(tmp_path, tiny_model):
    import torch

    torch.save(tiny_model.state_dict(), tmp_path / "w.pth")
    (tmp_path / "card.json").write_text(json.dumps(card_dict(tiny_model)))
    result = medseg("import", str(tmp_path / "w.pth"), "--card", str(tmp_path / "card.json"),
                    "--output", str(tmp_path / "w.safetensors"))
    assert result.returncode == 0, result.stderr
    assert medseg("info", str(tmp_path / "w.safetensors")).returncode == 0
