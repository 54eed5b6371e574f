"""The page's post-processing controls follow the picked model's card default (MedSegLib.panel.postprocess_defaults,
as the Slicer panel's checkboxes), and a run gets what they show: a real `MedSegWebApp` on a trame server that is
never started (no browser), its state changed on the server side as a page would change it."""

from __future__ import annotations

import pytest

pytest.importorskip("trame_slicer", reason="needs trame-slicer (the web extra: see scripts/setup.sh)")

from medseg.postprocess import PostprocessOptions
from MedSegWeb.security import ServeOptions


@pytest.fixture(scope="module")
def app():
    from trame.app import get_server

    from MedSegWeb.app import MedSegWebApp

    app = MedSegWebApp(ServeOptions(), server=get_server("medseg-test-postprocess", client_type="vue3"))
    app.state.ready()  # flushes run the @change handlers from now on, as with a connected page
    yield app
    app.session.close()


def _pick(app, model: str) -> None:
    app.state.model_name = model
    app.state.flush()


def _run_options(app) -> PostprocessOptions:
    s = app.state
    values = {"modelName": s.model_name, "largestComponent": s.largest_component, "fillHoles": s.fill_holes,
              "minIslandMl": s.min_island_ml}
    return app.session.settings(values).segment_options().postprocess


def test_picking_a_model_sets_the_controls_to_its_card_default(app):
    s = app.state
    _pick(app, "hippocampus-unet3d")
    assert (s.largest_component, s.fill_holes, s.min_island_ml) == (False, False, 0.0)
    _pick(app, "left-atrium-vnet")
    assert (s.largest_component, s.fill_holes, s.min_island_ml) == (True, False, 0.0)
    assert "Post-processing by default: largest component" in s.card_text
    assert _run_options(app) == PostprocessOptions(largest_component=True)
    s.largest_component = False  # the user unticks it: the run has none
    s.flush()
    assert _run_options(app) == PostprocessOptions()
    _pick(app, "hippocampus-unet3d")
    _pick(app, "left-atrium-vnet")  # picked again: the card's default again
    assert s.largest_component is True
