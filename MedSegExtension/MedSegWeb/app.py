"""`medseg serve`: the MedSeg panel's workflow in a web page, on the real Slicer core (trame-slicer).

The page's controls are bound to :class:`MedSegWeb.session.WebSession`, which calls the bridge (``MedSegLib``) as the
Slicer panel does. The views are trame-slicer's server-rendered slice and 3D views; correction uses its segment editor
effects. The segmentation runs in the bridge's worker thread; an asyncio task polls it every 100 ms, so the page (and
the views) stay interactive, and closing the tab does not stop the server or the run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

from trame.app import TrameApp
from trame.decorators import change
from trame.ui.vuetify3 import SinglePageWithDrawerLayout
from trame.widgets import html
from trame.widgets import vuetify3 as v3
from trame_slicer import module as trame_slicer_module
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

from medseg.outputs import safe_slug
from MedSegLib.headless import register_converter_rules
from MedSegLib.panel import CHANNEL_FIELDS, Device, default_model, overlay_label, postprocess_defaults, review_item_text
from MedSegLib.tables import COLUMNS

from .security import ServeOptions
from .session import WebSession

__all__ = ["MedSegWebApp", "serve"]

log = logging.getLogger(__name__)

POLL_S = 0.1  # as the panel's QTimer
REMEASURE_S = 0.3  # the table is measured this long after the last edit
BOX_FIELDS = tuple(f"box_{axis}_{end}" for axis in "ijk" for end in ("first", "last"))  # "Limit to box"
TABLE_KEYS = ("name", "voxel_count", "volume_ml", "soft_volume_ml", "volume_interval_lo_ml", "volume_interval_hi_ml",
              "largest_diameter_mm", "intensity_mean", "ai_volume_ml", "added_ml", "removed_ml", "edited")
TABLE_HEADERS = tuple((c.key, f"{c.title} ({c.unit})" if c.unit else c.title) for c in COLUMNS if c.key in TABLE_KEYS)
_UPLOAD_JS = """
const f = $event.target.files && $event.target.files[0];
if (!f) {{ return; }}
if (f.size > {limit}) {{
  message_error = true;
  message = `${{f.name}} is ${{(f.size / 1048576).toFixed(1)}} MB; uploads are limited to {limit_mb} MB`;
}} else {{
  busy = true;
  trame.trigger('{trigger}', [f.name, f.size, $event.target.files]);
}}
"""


def _no_view_ui(*_args) -> None:
    """The views without trame-slicer's gutter (the page's own controls are in the drawer)."""


class MedSegWebApp(TrameApp):
    """The page and its bindings. One instance per server process (one user session).

    Args:
        options: bind address, token, data root and upload limit.
        server: a trame server (None: a new one).
    """

    def __init__(self, options: ServeOptions, server=None):
        super().__init__(server, client_type="vue3")
        self.options = options
        self.server.enable_module(trame_slicer_module)
        register_converter_rules()  # closed surfaces for the 3D view, before the first segmentation node
        self.slicer_app = SlicerApp()
        register_rca_factories(self.slicer_app.view_manager, self.server, slice_view_ui_f=_no_view_ui,
                               three_d_view_ui_f=_no_view_ui)
        self.layout_manager = LayoutManager(self.slicer_app.scene, self.slicer_app.view_manager, self.server)
        self.layout_manager.register_layout("MedSeg", Layout(LayoutDirection.Horizontal, [
            ViewLayoutDefinition.axial_view(), ViewLayoutDefinition.threed_view()]))
        self.layout_manager.set_layout("MedSeg")
        self.session = WebSession(self.slicer_app, options)
        self.session.click_handler = self._on_view_click
        self._edited_at: float | None = None
        self.slicer_app.segmentation_editor.segmentation_modified.connect(self._on_edit)
        self._init_state()
        self._build_ui()
        self.server.controller.on_server_ready.add(self._start_loops)

    # -- state -------------------------------------------------------------------------------------------------------
    def _init_state(self) -> None:
        s = self.state
        s.trame__title = "MedSeg"
        choices = self.session.choices
        s.model_items = [{"title": c.text, "value": k} for k, c in choices.items()]
        s.model_name = default_model(choices)
        s.card_text = self.session.card_text(s.model_name)
        s.activation_items = self.session.activation_items(s.model_name)
        s.activation_class = ""
        s.model_path = ""
        s.device = "auto"
        s.device_items = [{"title": Device.label(d), "value": d.value} for d in Device]
        s.device_line = self.session.device_line()
        s.prune_level = 4  # UNet++ only, as the panel's spin box (1-4)
        s.accurate = False
        s.update(self._model_state(s.model_name))
        s.volume_items = []
        s.update({field: None for field in CHANNEL_FIELDS})
        s.tta = False
        s.uncertainty = True
        s.probabilities = True
        s.limit_to_box = False
        s.box_text = ""
        s.update(self._box_state([]))
        s.update(self._postprocess_state(s.model_name))
        s.volume_loaded = False
        s.data_root_enabled = self.options.data_root is not None
        s.server_path = ""
        s.busy = False
        s.running = False
        s.progress = 0
        s.message = "Open a volume to start."
        s.message_error = False
        s.has_result = False
        s.overlay_items = [{"title": "none", "value": ""}]
        s.overlay = ""
        s.opacity = 0.5
        s.effect = "none"
        s.brush_mm = 5.0
        s.scissors_fill = "erase_inside"
        s.islands_mode = "keep_largest"
        s.island_min_voxels = 1000
        s.smoothing_mode = "median"
        s.smoothing_mm = 3.0
        s.threshold_min, s.threshold_max = 0.0, 0.0  # set from the volume when a result arrives
        s.logical_operation = "copy"
        s.logical_other = ""
        s.segment_items = []
        s.segment_id = ""
        s.table_rows = []
        s.table_headers = [{"title": t, "key": k} for k, t in TABLE_HEADERS]
        s.review_items = []
        s.download_name = "medseg.zip"
        s.export_name = "medseg-dicom.zip"
        s.dicom_source = False
        s.has_probabilities = False
        s.guided_threshold = 0.5
        s.remeasured = 0  # counts the table's re-measures (the browser tests wait on it)

    def _say(self, message: str, error: bool = False) -> None:
        self.state.message = message
        self.state.message_error = error

    def _refresh_result(self) -> None:
        s, session = self.state, self.session
        s.has_result = session.segmentation is not None
        base = safe_slug(session.segmentation.GetName()) if s.has_result else "medseg"
        s.download_name, s.export_name = f"{base}.zip", f"{base}-dicom.zip"
        s.has_probabilities = any(kind.startswith("probability:") for kind in session.overlays())
        s.overlay_items = [{"title": "none", "value": ""}] + [
            {"title": overlay_label(kind), "value": kind} for kind in session.overlays()]
        s.overlay = getattr(session, "shown_overlay", None) or ""
        s.segment_items = session.segment_items()
        s.segment_id = s.segment_items[0]["value"] if s.segment_items else ""
        s.logical_other = s.segment_items[1]["value"] if len(s.segment_items) > 1 else ""
        s.threshold_min, s.threshold_max = session.threshold_defaults()
        s.effect = "none"  # a new result starts with no effect active (the editor's is deactivated)
        s.review_items = [{"title": review_item_text(r), "value": i} for i, r in enumerate(session.review_regions)]
        self._show_table(session.table())

    def _show_table(self, rows: list[dict]) -> None:
        def cell(value):
            if isinstance(value, float):
                return f"{value:.3f}"
            return "" if value is None else str(value)

        self.state.table_rows = [{k: cell(row.get(k)) for k, _ in TABLE_HEADERS} for row in rows]

    # -- actions -----------------------------------------------------------------------------------------------------
    def _guarded(self, what: str, action, *args) -> bool:
        try:
            action(*args)
        except Exception as exc:  # every refusal ends in the page's message line
            log.info("%s: %s", what, exc)
            self._say(f"{what}: {exc}", error=True)
            return False
        return True

    def _after_open(self) -> None:
        s = self.state
        s.volume_items = self.session.volume_items()
        opened = [item["value"] for item in s.volume_items]
        for field in CHANNEL_FIELDS:  # a picker keeps its volume while it is open; the first shows the new one
            if s[field] not in opened:
                s[field] = None
        s[CHANNEL_FIELDS[0]] = self.session.volume.GetID()
        s.volume_loaded = True
        s.dicom_source = self.session.source_folder is not None
        s.has_result = False
        s.table_rows, s.review_items, s.segment_items = [], [], []
        s.overlay_items, s.overlay, s.effect = [{"title": "none", "value": ""}], "", "none"
        s.progress = 0
        s.limit_to_box = False
        s.update(self._box_state(self.session.volume_box()))  # the new volume's whole extent
        self._say(self.session.status.message)

    @staticmethod
    def _box_state(bounds: list[int]) -> dict:
        """The box fields (first and last voxel on i, j, k) from `bounds` ("" each without a volume)."""
        bounds = bounds or [""] * 6
        return {field: bounds[n] for n, field in enumerate(BOX_FIELDS)}

    def _box(self) -> list | None:
        """The box the run is limited to (the fields' values), or None when "Limit to box" is off."""
        return [self.state[field] for field in BOX_FIELDS] if self.state.limit_to_box else None

    def open_server_path(self) -> None:
        if self._guarded("Cannot open", self.session.open_path, self.state.server_path):
            self._after_open()

    def upload(self, name: str, size: int, files: list[dict] | None = None) -> None:
        """The file input's trigger (the page refuses a file over the limit before sending it; checked here again)."""
        from trame.app.file_upload import ClientFile

        self.state.busy = False
        try:
            content = ClientFile(files[0]).content if files else b""
            if isinstance(content, list):  # trame sends large files in parts
                content = b"".join(content)
            self.session.open_upload(name, bytes(content))
        except Exception as exc:
            self._say(f"Cannot open {Path(str(name)).name}: {exc}", error=True)
            return
        self._after_open()

    def upload_model(self, name: str, size: int, files: list[dict] | None = None) -> None:
        """The model file input's trigger: the checkpoint joins the picker and is selected, or the page says why not
        (nothing else changes)."""
        from trame.app.file_upload import ClientFile

        self.state.busy = False
        try:
            content = ClientFile(files[0]).content if files else b""
            if isinstance(content, list):
                content = b"".join(content)
            key = self.session.add_model_upload(name, bytes(content), self.state.device)
        except Exception as exc:
            self._say(f"Model not added: {exc}", error=True)
            return
        self._select_model(key)

    def add_model_path(self) -> None:
        s = self.state
        try:
            key = self.session.add_model_path(s.model_path, s.device)
        except Exception as exc:
            self._say(f"Model not added: {exc}", error=True)
            return
        self._select_model(key)

    def _select_model(self, key: str) -> None:
        s = self.state
        s.model_items = [{"title": c.text, "value": k} for k, c in self.session.choices.items()]
        s.model_name = key
        self._say(f"Added model {self.session.choices[key].text}. Click Segment to run it.")

    def segment(self) -> None:
        s = self.state
        values = {"modelName": s.model_name, "device": s.device, "tta": s.tta, "uncertainty": s.uncertainty,
                  "probabilities": s.probabilities, "largestComponent": s.largest_component,
                  "fillHoles": s.fill_holes, "minIslandMl": s.min_island_ml or 0, "overlayOpacity": s.opacity,
                  "activationClass": s.activation_class, "pruneLevel": s.prune_level, "accurate": s.accurate,
                  "roiBox": self._box(), **{field: s[field] for field in CHANNEL_FIELDS}}
        if self._guarded("MedSeg cannot segment", self.session.start, values):
            s.running = True
            s.progress = 0
            self._say("Starting...")

    def cancel(self) -> None:
        self.session.cancel()
        self._say(self.session.status.message)

    def undo(self) -> None:
        self._guarded("Undo", self.session.undo)

    def redo(self) -> None:
        self._guarded("Redo", self.session.redo)

    def jump(self, index: int) -> None:
        self._guarded("Review", self.session.jump_to_region, int(index))

    def download(self):
        try:
            _name, content = self.session.results_zip()
        except Exception as exc:
            self._say(f"Saving failed; nothing was written: {exc}", error=True)
            return None
        return self.server.protocol.addAttachment(content)

    def guided(self) -> None:
        if self._guarded("Guided edit", self.session.guided_threshold, self.state.segment_id,
                         self.state.guided_threshold):
            self._on_edit()

    def _on_view_click(self, ras_point, add: bool) -> None:
        """A click in a slice view with "Click: add" / "Click: remove" (``WebSession.guided_click``)."""
        s = self.state
        with self.state:  # from the view's interaction, outside a trame callback: sent when the block ends
            try:
                changed = self.session.guided_click(s.segment_id, ras_point, add, s.guided_threshold)
            except Exception as exc:
                log.info("guided click: %s", exc)
                self._say(f"Nothing changed: {exc}", error=True)
                return
            done = (f"The probable region under the click ({changed} voxels) is in the segment now" if add else
                    f"The segment's piece under the click ({changed} voxels) was removed")
            self._say(f"{done}; Undo reverts it")
            self._on_edit()

    def islands(self) -> None:
        s = self.state
        if self._guarded("Islands", self.session.islands, s.segment_id, s.islands_mode, s.island_min_voxels):
            self._on_edit()

    def smooth(self) -> None:
        s = self.state
        if self._guarded("Smoothing", self.session.smooth, s.segment_id, s.smoothing_mode, s.smoothing_mm):
            self._on_edit()

    def threshold(self) -> None:
        s = self.state
        if self._guarded("Threshold", self.session.threshold, s.segment_id, s.threshold_min, s.threshold_max):
            self._say(f"The segment is now the voxels from {s.threshold_min} to {s.threshold_max}; Undo reverts it")
            self._on_edit()

    def logical(self) -> None:
        s = self.state
        if self._guarded("Logical operators", self.session.logical, s.segment_id, s.logical_operation,
                         s.logical_other):
            self._say(f"Logical operators: {s.logical_operation} done; Undo reverts it")
            self._on_edit()

    def export(self):
        try:
            content = self.session.export_zip()
        except Exception as exc:
            self._say(f"Export failed; nothing was written: {exc}", error=True)
            return None
        return self.server.protocol.addAttachment(content)

    @change("model_name")
    def _on_model(self, model_name, **_):
        s = self.state
        s.card_text = self.session.card_text(model_name)
        s.update(self._postprocess_state(model_name))
        s.update(self._model_state(model_name))
        s.activation_items = self.session.activation_items(model_name)
        if s.activation_class not in [item["value"] for item in s.activation_items]:
            s.activation_class = ""

    def _model_state(self, model_name: str) -> dict:
        """The input pickers' labels (the card's channels; "" hides one) and whether the UNet++ options show."""
        try:
            labels = self.session.channel_labels(model_name)
            problem = ""
        except ValueError as exc:  # more channels than pickers: the page says so and shows one picker
            labels, problem = self.session.channel_labels(""), str(exc)
        state = {"channel_labels": labels, "is_unetpp": self.session.is_unetpp(model_name)}
        if problem:
            state["card_text"] = problem
        return state

    def _postprocess_state(self, model_name: str) -> dict:
        """The post-processing controls for a model just picked: its card's default (the panel's
        ``postprocess_defaults``, as the Slicer module's checkboxes)."""
        choice = self.session.choices.get(model_name)
        fields = postprocess_defaults(choice.card if choice is not None else None)
        return {"largest_component": fields["largestComponent"], "fill_holes": fields["fillHoles"],
                "min_island_ml": fields["minIslandMl"]}

    @change("limit_to_box", *BOX_FIELDS)
    def _on_box(self, **_):
        """The box drawn in the views as it is typed (hidden when "Limit to box" is off)."""
        s = self.state
        if s.volume_loaded and not s.running and self._guarded("Box", self.session.set_box, self._box()):
            s.box_text = self.session.box_text() if s.limit_to_box else ""

    @change("overlay")
    def _on_overlay(self, overlay, **_):
        if self.session.segmentation is not None:
            self._guarded("Overlay", self.session.show_overlay, overlay or "", self.state.opacity)

    @change("opacity")
    def _on_opacity(self, opacity, **_):
        self._guarded("Opacity", self.session.set_opacity, opacity)

    @change("effect", "brush_mm", "scissors_fill", "threshold_min", "threshold_max")
    def _on_effect(self, effect, brush_mm, scissors_fill, threshold_min, threshold_max, **_):
        self._guarded("Edit", self.session.set_effect, effect, brush_mm, scissors_fill, (threshold_min, threshold_max))

    @change("segment_id")
    def _on_segment(self, segment_id, **_):
        if segment_id and self.session.segmentation is not None:
            self._guarded("Segment", self.session.set_segment, segment_id)

    def _on_edit(self, *_args) -> None:
        if self.session.segmentation is not None and self.session.task is None:
            self._edited_at = time.monotonic()

    def _fit_views(self) -> None:
        """Fit the views to the result; the 3D view once its surfaces exist (they are built by its first render)."""
        for view in self.slicer_app.view_manager.get_threed_views():
            view.render()
        self.slicer_app.display_manager.reset_views()

    # -- loops -------------------------------------------------------------------------------------------------------
    def _start_loops(self, **_):
        asyncio.get_event_loop().create_task(self._poll_loop())

    async def _poll_loop(self) -> None:
        """Every 100 ms: the run's progress and outcome; the table 0.3 s after the last edit."""
        while True:
            await asyncio.sleep(POLL_S)
            try:
                self._tick()
            except Exception:  # the loop must survive anything one tick does
                log.exception("MedSeg web: poll failed")

    def _tick(self) -> None:
        session = self.session
        applied = False
        if session.task is not None or self.state.running:
            with self.state:  # sent to the page when the block ends
                status = session.poll()
                self.state.progress = status.progress
                if status.finished:
                    self.state.running = False
                    if status.error:
                        self._say(status.error, error=True)
                    else:
                        self._say(status.message)
                        if status.applied:
                            self._refresh_result()
                            applied = True
                    self._edited_at = None
                else:
                    self.state.message = status.message
        if applied:  # after the table and message went out: the first 3D render builds the surfaces
            self._fit_views()
        if self._edited_at is not None and time.monotonic() - self._edited_at > REMEASURE_S:
            self._edited_at = None
            with self.state:
                try:
                    self._show_table(session.remeasure())
                    self.state.remeasured += 1
                except Exception as exc:
                    self._say(f"Volume table not updated: {exc}", error=True)

    # -- page --------------------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        limit = self.options.max_upload_bytes
        upload_js = _UPLOAD_JS.format(limit=limit, limit_mb=f"{self.options.max_upload_mb:g}",
                                      trigger=self.server.trigger_name(self.upload))
        model_js = _UPLOAD_JS.format(limit=limit, limit_mb=f"{self.options.max_upload_mb:g}",
                                     trigger=self.server.trigger_name(self.upload_model))
        with SinglePageWithDrawerLayout(self.server, full_height=True) as layout:
            layout.title.set_text("MedSeg")
            layout.drawer.width = 430
            with layout.toolbar:
                v3.VSpacer()
                html.Div("{{ message }}", id="message",
                         classes=("message_error ? 'text-red-lighten-2 text-body-2 px-4' : 'text-body-2 px-4'",),
                         style="max-width: 70vw; white-space: normal;")
            with layout.drawer, html.Div(classes="pa-3"):
                self._open_ui(upload_js)
                self._model_ui(model_js)
                self._run_ui()
                self._result_ui()
            with layout.content, html.Div(classes="d-flex flex-column", style="height: calc(100vh - 64px);"):
                with html.Div(style="flex: 1 1 auto; min-height: 0; width: 100%;", id="views"):
                    self.layout_manager.initialize_layout_grid(layout)
                self._table_ui()
        self.ui = layout

    def _table_ui(self) -> None:
        """Under the views: the volume table (re-measured after edits) and the review list."""
        with html.Div(v_if="has_result", classes="d-flex pa-2", style="flex: 0 0 auto; max-height: 32vh; "
                      "overflow: auto; border-top: 1px solid #ccc;"):
            with html.Div(style="flex: 3 1 0;"):
                html.Div("Volumes", classes="text-subtitle-2")
                with html.Table(id="volume-table", classes="text-caption", style="width: 100%;"):
                    with html.Tr():
                        for _, title in TABLE_HEADERS:
                            html.Th(title, style="text-align: left; vertical-align: bottom; padding-right: 8px;")
                    with html.Tr(v_for="row in table_rows", key="row.name"):
                        for key, _ in TABLE_HEADERS:
                            html.Td(f"{{{{ row.{key} }}}}", classes=f"col-{key}", style="padding-right: 8px;")
                html.Div("{{ remeasured }}", id="remeasured", style="display: none;")
            with html.Div(v_if="review_items.length", classes="ml-4", style="flex: 1 1 0;"):
                html.Div("Review (most uncertain first)", classes="text-subtitle-2")
                with html.Div(id="review-list"):
                    html.Div("{{ item.title }}", v_for="item in review_items", key="item.value",
                             click=(self.jump, "[item.value]"), classes="text-body-2 py-1 review-item",
                             style="cursor: pointer; text-decoration: underline dotted;")

    def _open_ui(self, upload_js: str) -> None:
        html.Div("1. Volume", classes="text-subtitle-2")
        html.Input(type="file", id="upload-input", change=upload_js, disabled=("running || busy",),
                   accept=".nii,.nii.gz,.nrrd,.mha,.gz")
        with html.Div(v_if="data_root_enabled", classes="d-flex align-center mt-2"):
            v3.VTextField(v_model=("server_path",), label="Path in the data root", density="compact",
                          hide_details=True, id="path-input")
            v3.VBtn("Open", id="open-path", click=self.open_server_path, disabled=("running",), classes="ml-2")

    def _model_ui(self, upload_js: str) -> None:
        html.Div("2. Model", classes="text-subtitle-2 mt-4")
        v3.VSelect(v_model=("model_name",), items=("model_items",), density="compact", hide_details=True,
                   id="model-select")
        html.Pre("{{ card_text }}", id="card-text", classes="text-caption",
                 style="white-space: pre-wrap; font-family: inherit;")
        self._inputs_ui()
        with html.Div(classes="text-caption"):
            html.Span("Add a checkpoint (.safetensors with a MedSeg card): ")
            html.Input(type="file", id="model-upload-input", change=upload_js, disabled=("running || busy",),
                       accept=".safetensors,.pt,.pth")
        with html.Div(v_if="data_root_enabled", classes="d-flex align-center mt-1"):
            v3.VTextField(v_model=("model_path",), label="Checkpoint or nnU-Net results folder in the data root",
                          density="compact",
                          hide_details=True, id="model-path-input")
            v3.VBtn("Add", id="add-model", click=self.add_model_path, disabled=("running",), classes="ml-2")
        with html.Div(v_if="is_unetpp", classes="d-flex align-center mt-2", id="unetpp-options"):
            v3.VSelect(v_model=("prune_level",), label="UNet++ prune level", density="compact", hide_details=True,
                       id="prune-level", items=("prune_items", [{"title": f"L{n}", "value": n} for n in (1, 2, 3, 4)]))
            v3.VCheckbox(v_model=("accurate",), label="Accurate mode", density="compact", hide_details=True,
                         id="opt-accurate", classes="ml-2")
        v3.VSelect(v_model=("activation_class",), items=("activation_items",), label="Grad-CAM class",
                   density="compact", hide_details=True, id="activation-select", classes="mt-2")
        v3.VSelect(v_model=("device",), items=("device_items",), label="Device", density="compact",
                   hide_details=True, id="device-select")
        html.Div("{{ device_line }}", classes="text-caption")
        with html.Div(classes="d-flex flex-wrap"):
            for key, text in (("tta", "Test-time augmentation"), ("uncertainty", "Uncertainty + review"),
                              ("probabilities", "Keep probabilities"), ("largest_component", "Largest component"),
                              ("fill_holes", "Fill holes")):
                v3.VCheckbox(v_model=(key,), label=text, density="compact", hide_details=True, id=f"opt-{key}")
        v3.VTextField(v_model=("min_island_ml",), label="Drop islands smaller than (mL)", type="number", min=0,
                      density="compact", hide_details=True, id="opt-min_island_ml")

    def _inputs_ui(self) -> None:
        """One picker per input channel of the model (the card's names, as the panel's channel selectors), listing
        the volumes opened in this session; the first shows the volume opened last."""
        for n, field in enumerate(CHANNEL_FIELDS):
            v3.VSelect(v_if=f"channel_labels[{n}]", v_model=(field,), items=("volume_items",),
                       label=(f"channel_labels[{n}]",), density="compact", hide_details=True, classes="mt-1",
                       id=f"channel-{n + 1}", no_data_text="Open a volume first")

    def _run_ui(self) -> None:
        html.Div("3. Segment", classes="text-subtitle-2 mt-2")
        v3.VCheckbox(v_model=("limit_to_box",), label="Limit to box (voxels, first to last)", density="compact",
                     hide_details=True, id="opt-limit_to_box", disabled=("!volume_loaded || running",))
        with html.Div(v_if="limit_to_box", classes="d-flex flex-wrap", id="box-fields"):
            for field in BOX_FIELDS:
                axis, end = field.split("_")[1:]
                v3.VTextField(v_model=(field,), label=f"{axis} {end}", type="number", density="compact",
                              hide_details=True, id=f"box-{axis}-{end}", style="max-width: 66px;", classes="mr-1")
        html.Div("{{ box_text }}", v_if="limit_to_box", classes="text-caption", id="box-text")
        with html.Div(classes="d-flex"):
            v3.VBtn("Segment", id="segment-button", color="primary", click=self.segment,
                    disabled=("!volume_loaded || running",))
            v3.VBtn("Cancel", id="cancel-button", click=self.cancel, disabled=("!running",), classes="ml-2")
        v3.VProgressLinear(model_value=("progress",), height=8, classes="mt-2", id="progress",
                           color=("running ? 'primary' : 'success'",))
        html.Div("{{ progress }}", id="progress-value", style="display: none;")

    def _effect_options_ui(self) -> None:
        """Scissors' fill mode (the lasso is drawn on the axial view), what Draw does, the options of Threshold,
        Islands, Smoothing and Logical operators and their Apply buttons (each on the segment picked above)."""
        v3.VSelect(v_if="effect === 'scissors'", v_model=("scissors_fill",), density="compact", hide_details=True,
                   id="scissors-fill", label="Scissors: draw on the axial view (cuts every slice)", items=(
                       "scissors_items", [{"title": t, "value": v} for v, t in (
                           ("erase_inside", "Erase inside"), ("erase_outside", "Erase outside"),
                           ("fill_inside", "Fill inside"), ("fill_outside", "Fill outside"))]))
        with html.Div(v_if="effect === 'islands'", classes="d-flex align-center"):
            v3.VSelect(v_model=("islands_mode",), density="compact", hide_details=True, id="islands-mode",
                       items=("islands_items", [{"title": "Keep largest island", "value": "keep_largest"},
                                                {"title": "Remove small islands", "value": "remove_small"}]))
            v3.VTextField(v_if="islands_mode === 'remove_small'", v_model=("island_min_voxels",),
                          type="number", label="Min voxels", density="compact", hide_details=True,
                          classes="ml-2", style="max-width: 110px;", id="island-min-voxels")
            v3.VBtn("Apply", id="islands-apply", click=self.islands, density="compact", classes="ml-2")
        with html.Div(v_if="effect === 'smoothing'", classes="d-flex align-center"):
            v3.VSelect(v_model=("smoothing_mode",), density="compact", hide_details=True, id="smoothing-mode",
                       items=("smoothing_items", [{"title": t, "value": t.lower()} for t in (
                           "Median", "Opening", "Closing", "Gaussian")]))
            v3.VTextField(v_model=("smoothing_mm",), type="number", density="compact", hide_details=True,
                          label=("smoothing_mode === 'gaussian' ? 'Sigma (mm)' : 'Kernel (mm)'",), classes="ml-2",
                          style="max-width: 130px;", id="smoothing-mm")
            v3.VBtn("Apply", id="smoothing-apply", click=self.smooth, density="compact", classes="ml-2")
        html.Div("Draw on the axial view: press and drag around a region; on release it is added to the segment on "
                 "that slice", v_if="effect === 'draw'", classes="text-caption", id="draw-help")
        self._threshold_ui()
        self._logical_ui()

    def _threshold_ui(self) -> None:
        """Threshold's intensity range (the voxels in it blink in the segment's colour on the axial view) and Apply."""
        with html.Div(v_if="effect === 'threshold'", classes="d-flex align-center"):
            for end in ("min", "max"):
                v3.VTextField(v_model=(f"threshold_{end}",), type="number", label=f"Intensity {end}", density="compact",
                              hide_details=True, style="max-width: 130px;", classes="mr-2", id=f"threshold-{end}")
            v3.VBtn("Apply", id="threshold-apply", click=self.threshold, density="compact")
        html.Div("The voxels in range blink in the segment's colour; Apply makes them the segment (taken from the "
                 "other segments)", v_if="effect === 'threshold'", classes="text-caption")

    def _logical_ui(self) -> None:
        """Logical operators: the operation, the second segment (for those that read one) and Apply."""
        with html.Div(v_if="effect === 'logical'", classes="d-flex align-center"):
            v3.VSelect(v_model=("logical_operation",), density="compact", hide_details=True, id="logical-operation",
                       items=("logical_items", [{"title": t, "value": v} for v, t in (
                           ("copy", "Copy from"), ("union", "Add (union)"), ("intersect", "Intersect with"),
                           ("subtract", "Subtract"), ("invert", "Invert"), ("clear", "Clear"))]))
            v3.VSelect(v_if="['copy', 'union', 'intersect', 'subtract'].includes(logical_operation)",
                       v_model=("logical_other",), items=("segment_items",), label="with segment", density="compact",
                       hide_details=True, classes="ml-2", id="logical-other")
            v3.VBtn("Apply", id="logical-apply", click=self.logical, density="compact", classes="ml-2")
        html.Div("Segments do not overlap: voxels copied or added from another segment leave it",
                 v_if="effect === 'logical'", classes="text-caption")

    def _result_ui(self) -> None:
        with html.Div(v_if="has_result"):
            html.Div("4. Overlays", classes="text-subtitle-2 mt-4")
            v3.VSelect(v_model=("overlay",), items=("overlay_items",), density="compact", hide_details=True,
                       id="overlay-select")
            v3.VSlider(v_model=("opacity",), min=0, max=1, step=0.05, label="Opacity", hide_details=True,
                       density="compact", id="opacity")
            html.Div("5. Correct (the table below is measured again after each edit)", classes="text-subtitle-2 mt-2")
            v3.VSelect(v_model=("segment_id",), items=("segment_items",), density="compact", hide_details=True,
                       id="segment-select")
            with v3.VBtnToggle(v_model=("effect",), mandatory=True, density="compact", classes="mt-2 flex-wrap",
                               style="height: auto;"):
                for value, text in (("none", "View"), ("paint", "Paint"), ("erase", "Erase"),
                                    ("scissors", "Scissors"), ("draw", "Draw"), ("threshold", "Threshold"),
                                    ("islands", "Islands"), ("smoothing", "Smoothing"), ("logical", "Logical")):
                    v3.VBtn(text, value=value, id=f"effect-{value}")
                for value, text in (("guided_add", "Click: add"), ("guided_remove", "Click: remove")):
                    v3.VBtn(text, value=value, id=f"effect-{value}", v_if="has_probabilities")
            v3.VBtn("Undo", id="undo-button", click=self.undo, classes="mt-2", density="compact")
            v3.VBtn("Redo", id="redo-button", click=self.redo, classes="ml-1 mt-2", density="compact")
            v3.VSlider(v_model=("brush_mm",), min=1, max=30, step=1, label="Brush (mm)", hide_details=True,
                       density="compact", v_if="['paint', 'erase', 'smoothing'].includes(effect)")
            self._effect_options_ui()
            with html.Div(v_if="has_probabilities", classes="d-flex align-center mt-1"):
                v3.VSlider(v_model=("guided_threshold",), min=0.05, max=0.95, step=0.05, hide_details=True,
                           density="compact", label="Probability >=", thumb_label=True, id="guided-threshold")
                v3.VBtn("Apply", id="guided-apply", click=self.guided, density="compact", classes="ml-2")
            html.Div("Click in the axial view: add the probable region (probability >= the threshold) under the "
                     "click to the segment, or remove the segment's piece there", classes="text-caption",
                     v_if="['guided_add', 'guided_remove'].includes(effect)")
            html.Div("6. Save", classes="text-subtitle-2 mt-2")
            trigger = self.server.trigger_name(self.download)
            v3.VBtn("Results (.zip)", id="download-button", prepend_icon="mdi-download",
                    click=f"utils.download(download_name, trigger('{trigger}'), 'application/zip')")
            export = self.server.trigger_name(self.export)
            v3.VBtn("DICOM SEG + SR + PDF", id="export-button", prepend_icon="mdi-file-export", classes="ml-2",
                    disabled=("!dicom_source",), click=f"utils.download(export_name, trigger('{export}'), "
                    "'application/zip')")


def serve(options: ServeOptions) -> int:
    """Start the server (blocks until it stops). The token, if any, is the page's ``?secret=`` parameter."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    os.environ["TRAME_WS_MAX_MSG_SIZE"] = str(options.max_upload_bytes + 2**20)
    argv = ["medseg-serve", "--server", "--timeout", "0"]
    if options.token:
        argv += ["--authKey", options.token]
    saved, sys.argv = sys.argv, argv  # trame reads its options from sys.argv; medseg's own are parsed already
    try:
        app = MedSegWebApp(options)
        print(f"MedSeg web: http://{options.host}:{options.port}/" + ("?secret=<token>" if options.token else ""),
              flush=True)
        app.server.start(host=options.host, port=options.port, open_browser=False, timeout=0)
    finally:
        sys.argv = saved
        if "app" in locals():
            app.session.close()
    return 0
