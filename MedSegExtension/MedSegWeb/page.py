"""The page's layout (trame + Vuetify 3 widgets): the drawer's sections (open, model, inputs, run, correction,
result) and the views. A mixin of :class:`MedSegWeb.app.MedSegWebApp`, whose state and actions the widgets bind.
"""

from __future__ import annotations

from trame.ui.vuetify3 import SinglePageWithDrawerLayout
from trame.widgets import html
from trame.widgets import vuetify3 as v3

from MedSegLib.panel import CHANNEL_FIELDS
from MedSegLib.tables import COLUMNS

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


class PageLayout:
    """Builds the page (see the module docstring)."""

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
