"""A model card's default post-processing in the panel and the page: the card text states it, and picking a model
sets the post-processing checkboxes to it (MedSegLib.panel.postprocess_defaults, called by MedSeg.py and by
MedSegWeb/app.py), from which the run's options are built as for any explicit choice. Without Qt."""

from __future__ import annotations

import ast

from module_support import MODULE_FILE, REPO, parameters

from medseg.card import ModelCard
from medseg.catalog import bundled_models
from medseg.postprocess import PostprocessOptions
from MedSegLib.panel import describe_card, format_postprocess, postprocess_defaults, settings_from_parameters

OFF = {"largestComponent": False, "fillHoles": False, "minIslandMl": 0.0}


def _card(postprocess: dict | None) -> ModelCard:
    card = {entry.name: entry for entry in bundled_models()}["hippocampus-unet3d"].card
    return ModelCard.from_dict({**card.to_dict(), "postprocess": postprocess})


def test_picking_a_model_puts_its_card_default_into_the_checkboxes_and_the_run_uses_them():
    card = _card({"largest_component": True, "min_island_ml": 0.25})
    fields = postprocess_defaults(card)
    assert fields == {"largestComponent": True, "fillHoles": False, "minIslandMl": 0.25}
    state = parameters(fillHoles=True)  # the user's earlier choice for another model
    for name, value in fields.items():
        setattr(state, name, value)
    options = settings_from_parameters(state, card).segment_options()
    assert options.postprocess == PostprocessOptions(largest_component=True, min_island_ml=0.25)  # explicit
    unticked = settings_from_parameters(parameters(**{**vars(state), **OFF}), card)
    assert unticked.segment_options().postprocess == PostprocessOptions()  # unticking turns the default off
    assert postprocess_defaults(_card(None)) == postprocess_defaults(None) == OFF


def test_the_bundled_left_atrium_card_states_and_sets_its_largest_component_default():
    card = {entry.name: entry for entry in bundled_models()}["left-atrium-vnet"].card
    assert postprocess_defaults(card) == {**OFF, "largestComponent": True}
    lines = describe_card(card).splitlines()
    assert "Post-processing by default: largest component" in lines
    assert lines[-1].startswith("Calibration:")  # the calibration line stays last
    assert "0.871 -> 0.889" in card.description


def test_the_card_text_states_the_default_only_when_the_card_has_one():
    assert not any(line.startswith("Post-processing") for line in describe_card(_card(None)).splitlines())
    text = describe_card(_card({"fill_holes": True, "min_island_ml": 0.5}))
    assert "Post-processing by default: islands < 0.5 mL removed, holes filled" in text.splitlines()
    assert format_postprocess({"largest_component": False}) == "Post-processing by default: none"


def _method(tree: ast.Module, class_name: str, name: str) -> ast.FunctionDef:
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    return next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == name)


def _calls(node: ast.AST) -> set[str]:
    return {ast.unparse(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)}


def test_both_front_ends_take_the_checkboxes_from_the_same_bridge_function():
    module = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    assert "postprocess_defaults" in ast.unparse(_method(module, "MedSegWidget", "_pickModel"))
    for caller in ("_onModelPicked", "initializeParameterNode", "addCheckpoint"):  # the user's picks, not a scene load
        assert "self._pickModel" in _calls(_method(module, "MedSegWidget", caller)), caller
    assert "self._pickModel" not in _calls(_method(module, "MedSegWidget", "_showModel"))
    web = ast.parse((REPO / "MedSegExtension" / "MedSegWeb" / "app.py").read_text(encoding="utf-8"))
    assert "postprocess_defaults" in ast.unparse(_method(web, "MedSegWebApp", "_postprocess_state"))
    for caller in ("_init_state", "_on_model"):
        assert "self._postprocess_state" in _calls(_method(web, "MedSegWebApp", caller)), caller
