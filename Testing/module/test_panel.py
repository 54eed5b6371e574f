"""What the panel shows and sends (MedSegLib.panel), the dependency check (MedSegLib.dependencies) and where the
module finds its Resources, without Qt."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from module_support import REPO, parameters

from medseg.card import ModelCard
from medseg.checkpoint import read_card, save_checkpoint
from medseg.models import build_model
from MedSegLib.dependencies import REQUIREMENTS, ensure_requirements, install_plan, missing_requirements
from MedSegLib.panel import (
    Device,
    RunSettings,
    activation_choices,
    card_tooltip,
    channel_labels,
    describe_card,
    device_summary,
    format_metrics,
    html_text,
    input_volumes,
    model_choices,
    overlay_label,
    resource_path,
    review_item_text,
    saved_paths,
    settings_from_parameters,
)

METRICS = {"dice": {"anterior hippocampus": 0.8812, "posterior hippocampus": 0.8634}, "iou": {},
           "mean_dice": 0.8723, "validation_cases": 26, "epoch": 80}


def make_card(architecture="unet", channels=("T1w",), metrics=None) -> ModelCard:
    args = {"spatial_dims": 3, "in_channels": len(channels), "num_classes": 3, "width": 0.0625}
    model = build_model(architecture, **args)
    return ModelCard.from_dict({
        "name": f"test-{architecture}", "summary": "Hippocampus, anterior and posterior",
        "architecture": architecture, "architecture_args": model.config,
        "inputs": [{"name": c, "modality": "MR", "normalization": {"kind": "zscore"}} for c in channels],
        "labels": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                   {"id": 1, "name": "anterior hippocampus", "color": [220, 180, 60]},
                   {"id": 2, "name": "posterior hippocampus", "color": [60, 140, 220]}],
        "patch_size": [32, 32, 32], "training": {"dataset": "MSD Task04 Hippocampus", "license": "CC-BY-SA 4.0"},
        "metrics": metrics or {}})


def test_card_text_from_a_hostile_card_is_shown_as_plain_text_without_control_characters():
    d = make_card().to_dict()
    d["summary"] = "\x1b[2J<img src='http://x/y.png'>\u202eevil"
    d["labels"][1]["name"] = "<b>anterior</b>\x1b[31m"
    d["inputs"][0]["name"] = "T1w\x07<i>"
    d["training"]["dataset"] = "data\x9b2Jset"
    d["description"] = "line one\x1b]0;title\x07\nline two"
    card = ModelCard.from_dict(d)
    text, tooltip = describe_card(card), card_tooltip(card, "/tmp/m&n.safetensors")
    for shown in (text, tooltip, *channel_labels(card), *(t for t, _, _ in activation_choices(card))):
        assert not [c for c in shown if c != "\n" and (ord(c) < 32 or 0x7f <= ord(c) < 0xa0 or c == "\u202e")]
    assert text.splitlines()[0] == "<img src='http://x/y.png'>evil"  # the module's label shows it as plain text
    assert "Trained on dataset (license" in text and "line one\nline two" in tooltip
    assert activation_choices(card)[0] == ("<b>anterior</b>", "<b>anterior</b>\x1b[31m", "")
    html = html_text(tooltip)
    assert "<img" not in html and "&lt;img src='http://x/y.png'&gt;" in html and "m&amp;n" in html
    assert html.startswith("<qt>") and "line one<br>line two" in html


def test_card_text_shows_summary_training_data_and_metrics():
    text = describe_card(make_card(metrics=METRICS))
    assert text.splitlines()[0] == "Hippocampus, anterior and posterior"
    assert "unet, 3D; input: T1w (MR); labels: anterior hippocampus, posterior hippocampus" in text
    assert "Trained on MSD Task04 Hippocampus (license: CC-BY-SA 4.0)" in text
    assert "Validation: Dice: anterior hippocampus 0.881, posterior hippocampus 0.863 (mean 0.872); 26 validation " \
           "cases" in text
    assert format_metrics({}) == "no validation metrics in the card"
    assert format_metrics({"hd95_mm": 2.5}) == "hd95_mm 2.5"


def test_model_choices_list_bundled_then_user_checkpoints_and_report_bad_files(tmp_path):
    torch.manual_seed(0)
    model = build_model("unet", spatial_dims=3, in_channels=1, num_classes=3, width=0.0625)
    card = dataclasses.replace(make_card(), name="mine")
    good = save_checkpoint(tmp_path / "mine.safetensors", model, card)
    pickle = tmp_path / "weights.pth"
    torch.save(model.state_dict(), pickle)
    bundled = [SimpleNamespace(name="hippocampus-unet3d", path=tmp_path / "x.safetensors", card=make_card())]
    choices, problems = model_choices(bundled, [str(good), str(pickle), str(tmp_path / "gone.safetensors")],
                                      read_card)
    assert [(c.key, c.text, c.bundled) for c in choices] == [
        ("hippocampus-unet3d", "hippocampus-unet3d (bundled)", True), (str(good), "mine (mine.safetensors)", False)]
    assert f"File: {good}" in choices[1].tooltip and "Patch [32, 32, 32]" in choices[0].tooltip
    assert len(problems) == 2
    assert "pickle" in problems[0] and "medseg import" in problems[0]  # the engine's message, with the fix
    assert "gone.safetensors" in problems[1]


def test_channel_selectors_follow_the_card():
    assert channel_labels(None) == ["Input volume:", "", ""]
    assert channel_labels(make_card()) == ["T1w (MR):", "", ""]
    two = make_card(channels=("T1w", "T2w"))
    assert channel_labels(two) == ["T1w (MR):", "T2w (MR):", ""]
    assert input_volumes(parameters(), two) == ["T1", "T2"]
    assert input_volumes(parameters(), make_card()) == ["T1"]
    with pytest.raises(ValueError, match="needs 4 input volumes; the panel has 3: run it with `medseg segment`"):
        channel_labels(make_card(channels=("a", "b", "c", "d")))


def test_settings_map_the_parameter_node_to_engine_and_bridge_options():
    card = make_card()
    settings = settings_from_parameters(parameters(device=Device.CPU, tta=True, overlap=0.25, pruneLevel=2,
                                                   accurate=True, fillHoles=True, minIslandMl=0.2,
                                                   activationClass="posterior hippocampus", overlayOpacity=0.7),
                                        card)
    assert settings == RunSettings("hippocampus-unet3d", "cpu", True, 0.25, None, False, False, True, 0.2, True, False,
                                   "posterior hippocampus", True, 0.7)  # UNet++ options dropped for a U-Net
    options = settings.segment_options()
    assert (options.tta, options.overlap, options.activation_classes, options.uncertainty) == (
        True, 0.25, ("posterior hippocampus",), True)
    assert options.review and not dataclasses.replace(settings, uncertainty=False).segment_options().review
    assert (options.postprocess.fill_holes, options.postprocess.min_island_ml, options.prune_level) == (True, 0.2, None)
    apply = settings.apply_options()
    assert (apply.replace, apply.show_overlay, apply.overlay_opacity) == (True, "auto", 0.7)

    unetpp = settings_from_parameters(parameters(pruneLevel=2, accurate=True, activationClass="amygdala"),
                                      make_card("unetpp"))
    assert (unetpp.prune_level, unetpp.accurate, unetpp.activation_class, unetpp.device) == (2, True, "", "auto")
    assert unetpp.segment_options().prune_level == 2
    with pytest.raises(ValueError, match="no model selected"):
        settings_from_parameters(parameters(modelName=""), card)


def test_small_texts():
    assert [Device.label(d) for d in Device] == ["Auto (GPU if found)", "GPU (CUDA)", "CPU"]
    assert [d.value for d in Device] == ["auto", "cuda", "cpu"]
    assert device_summary(["cuda:0 (NVIDIA H100)", "cpu"]) == "Found: cuda:0 (NVIDIA H100) and the CPU"
    assert device_summary(["cpu"]) == "No GPU found: runs on the CPU"
    assert overlay_label("activation:posterior hippocampus") == "Grad-CAM: posterior hippocampus"
    assert overlay_label("probability:anterior") == "Probability: anterior"
    assert overlay_label("uncertainty") == "Uncertainty (entropy)" and overlay_label("tta_variance") == "TTA variance"
    assert saved_paths(None) == [] and saved_paths("") == [] and saved_paths("/a.safetensors") == ["/a.safetensors"]
    assert saved_paths(["/a", "/b", "/a", ""]) == ["/a", "/b"]
    region = SimpleNamespace(id=2, label_name="left\x1b[2J atrium", volume_ml=0.0345, mean_uncertainty=0.6123)
    assert review_item_text(region) == "2. left atrium: 34 mm3, uncertainty 0.61"  # no escape sequence


def test_resources_are_found_in_the_source_tree_and_once_installed(tmp_path):
    source = resource_path(REPO / "MedSegExtension" / "MedSeg.py", "UI/MedSeg.ui")
    assert source == REPO / "Resources" / "UI" / "MedSeg.ui" and source.is_file()
    installed = tmp_path / "lib" / "Slicer-5.10" / "qt-scripted-modules"
    (installed / "Resources" / "UI").mkdir(parents=True)
    (installed / "Resources" / "UI" / "MedSeg.ui").write_text("<ui/>")
    assert resource_path(installed / "MedSeg.py", "UI/MedSeg.ui") == installed / "Resources" / "UI" / "MedSeg.ui"


def test_missing_requirements_and_the_install_plan():
    assert missing_requirements() == []  # this environment has the engine
    absent = {"torch", "safetensors"}
    missing = missing_requirements(lambda name: None if name in absent else object())
    assert [r.module for r in missing] == ["torch", "safetensors"]
    broken = missing_requirements(lambda name: (_ for _ in ()).throw(ValueError("half removed")))
    assert len(broken) == len(REQUIREMENTS)

    plan = install_plan(missing, pytorch_extension=True)
    assert plan.torch_via_extension and plan.torch_requirement == ">=2.4" and plan.pip == ("safetensors>=0.4",)
    assert plan.message.startswith("MedSeg needs PyTorch, safetensors, which are not installed")
    assert "PyTorch extension, which picks the build for your GPU" in plan.message
    assert plan.message.rstrip().endswith("Install now?")
    fallback = install_plan(missing, pytorch_extension=False)
    assert not fallback.torch_via_extension and fallback.pip == ("torch>=2.4", "safetensors>=0.4")
    assert "from PyPI with pip" in fallback.message
    only_small = install_plan(missing[1:], pytorch_extension=True)
    assert not only_small.torch_via_extension and only_small.torch_requirement == "" and "is not" in only_small.message


def test_ensure_requirements_asks_first_then_installs_and_checks_again():
    installed: set[str] = set()
    calls: list = []

    def find_spec(name):
        return object() if name in installed or name in ("SimpleITK", "numpy") else None

    def confirm(answer):
        return lambda text: calls.append(("ask", text.splitlines()[0])) or answer

    def install_torch(version):
        calls.append(("torch", version))
        installed.add("torch")
        return "torch module"

    def pip_install(specs):
        calls.append(("pip", specs))
        installed.update(s.split(">")[0] for s in specs)

    state, message = ensure_requirements(confirm(False), install_torch, pip_install, True, find_spec)
    assert (state, calls) == ("declined", [("ask", "MedSeg needs PyTorch, safetensors, which are not installed in "
                                                    "Slicer's Python.")])
    assert "Nothing was installed" in message and not installed  # nothing is installed without a yes
    calls.clear()
    state, message = ensure_requirements(confirm(True), install_torch, pip_install, True, find_spec)
    assert state == "installed" and calls[1:] == [("torch", ">=2.4"), ("pip", ["safetensors>=0.4"])]
    assert message == "Installed PyTorch, safetensors."
    assert ensure_requirements(confirm(True), install_torch, pip_install, True, find_spec) == ("ready", "")

    installed.clear()
    state, message = ensure_requirements(confirm(True), lambda version: None, pip_install, True, find_spec)
    assert state == "incomplete" and "PyTorch was not installed" in message  # the user stopped the extension's own
    state, message = ensure_requirements(confirm(True), install_torch, lambda specs: None, False, find_spec)
    assert state == "incomplete"
    assert message.startswith("Still missing or too old after installing: PyTorch (not installed), safetensors (not "
                              "installed)")


def test_the_first_selection_is_the_samples_model_even_when_another_sorts_first():
    from MedSegLib.panel import DEFAULT_MODEL, default_model

    assert default_model(["abdominal-ct-organs", "hippocampus-unet3d", "left-atrium-vnet"]) == DEFAULT_MODEL
    assert default_model({"abdominal-ct-organs": 1, DEFAULT_MODEL: 2}) == DEFAULT_MODEL  # a dict of choices
    assert default_model(["/tmp/mine.safetensors"]) == "/tmp/mine.safetensors"
    assert default_model([]) == ""
