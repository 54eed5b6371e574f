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
from trame_slicer import module as trame_slicer_module
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

from medseg.outputs import safe_slug
from MedSegLib.headless import register_converter_rules
from MedSegLib.panel import CHANNEL_FIELDS, Device, default_model, overlay_label, postprocess_defaults, review_item_text

from .page import BOX_FIELDS, TABLE_HEADERS, PageLayout
from .security import ServeOptions
from .session import WebSession

__all__ = ["MedSegWebApp", "serve"]

log = logging.getLogger(__name__)

POLL_S = 0.1  # as the panel's QTimer
REMEASURE_S = 0.3  # the table is measured this long after the last edit


def _no_view_ui(*_args) -> None:
    """The views without trame-slicer's gutter (the page's own controls are in the drawer)."""


class MedSegWebApp(PageLayout, TrameApp):
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
