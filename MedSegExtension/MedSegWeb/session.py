"""The web page's workflow on the scene of a trame-slicer ``SlicerApp``, through the same bridge as the Slicer panel.

Every step is a call into ``MedSegLib`` (``panel.input_volumes`` and ``run.read_inputs``,
``worker.start_segmentation``, ``run.apply``, ``display.show_overlay``, ``tables.recompute_table``,
``guided_edit``, ``export.save_results``, ``review.jump_to``, ``nnunet_import.checkpoint_for``,
``volumes.roi_from_ijk_box``); this class only keeps what the page shows between
calls. No trame here: :mod:`MedSegWeb.app` binds it to the page. Main thread only,
except the segmentation's worker thread, which never touches the scene.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from MedSegLib import panel
from MedSegLib.display import set_overlay_opacity, show_overlay
from MedSegLib.export import save_results
from MedSegLib.review import jump_to
from MedSegLib.run import MODEL_CACHE, ModelCache, apply, read_inputs
from MedSegLib.segmentation import TABLE_ROLE, overlay_nodes
from MedSegLib.tables import recompute_table, table_rows
from MedSegLib.worker import start_segmentation

from .editing import Editing, number_field
from .security import ServeOptions, check_tree_in_root, check_upload, resolve_in_root

__all__ = ["Status", "WebSession"]

RESULT_CLASSES = ("vtkMRMLSegmentationNode", "vtkMRMLTableNode", "vtkMRMLVolumeNode")


@dataclass
class Status:
    """What the page shows of a run: progress (0-100), the status line, and whether a run is going."""

    running: bool = False
    progress: float = 0.0
    message: str = ""
    error: str = ""
    finished: bool = False
    applied: bool = False  # the run's result went into the scene
    warnings: list[str] = field(default_factory=list)


def _not_nnunet_folder(path: Path, shown: str) -> str:
    """Why folder `path` (shown as `shown`) is not an nnU-Net v2 results folder, and what to give instead."""
    missing = [name for name in ("plans.json", "dataset.json") if not (path / name).is_file()]
    if not any(child.is_dir() and child.name.startswith("fold_") for child in path.iterdir()):
        missing.append("fold_N folders")
    return (f"{shown!r} is a folder but not an nnU-Net v2 results folder (it lacks {', '.join(missing)}); the model "
            f"list is unchanged. Give the folder nnU-Net trained into (nnUNet_results/DatasetXXX_Name/"
            f"Trainer__Plans__configuration, holding plans.json, dataset.json and fold_0 ...), its plans.json, a "
            f"fold's checkpoint_final.pth, or a MedSeg checkpoint file (.safetensors)")


def _voxel_box(box: Any) -> tuple[int, ...]:
    """The page's box, first and last voxel on each axis (i, j, k, as Slicer numbers them), -> the half-open
    ``(i0, i1, j0, j1, k0, k1)`` the bridge and the engine take; ValueError naming a bound that is not a whole
    number."""
    if not isinstance(box, list | tuple) or len(box) != 6:
        raise ValueError(f"box {box!r}: give the first and last voxel on each of i, j and k")
    bounds = []
    for n, value in enumerate(box):
        what = f"box: {'ijk'[n // 2]} {'last' if n % 2 else 'first'} voxel"
        number = number_field(value, what)
        if number != int(number):
            raise ValueError(f"{what}: {value!r} is not a whole number; type a voxel index")
        bounds.append(int(number) + n % 2)  # the last voxel -> one past it
    return tuple(bounds)


class WebSession(Editing):
    """One user's workflow on one scene (one server process serves one session).

    Args:
        slicer_app: the trame-slicer ``SlicerApp`` whose scene, IO manager, display manager and segmentation editor
            the page shows.
        options: the server's options (data root, upload limit).
        cache: where loaded models are kept (None: the bridge's shared cache).
    """

    def __init__(self, slicer_app: Any, options: ServeOptions, cache: ModelCache | None = None):
        from undo_stack import UndoStack

        self.app = slicer_app
        self.scene = slicer_app.scene
        self.options = options
        self.cache = cache if cache is not None else MODEL_CACHE
        self.volume = None  # the volume shown (the last opened; after a run, the run's first channel)
        self.opened: dict[str, Any] = {}  # node ID -> the volumes opened in this session (the channel pickers')
        self._sources: dict[str, Path] = {}  # node ID -> the file or DICOM folder it was read from
        self.source_folder: Path | None = None
        self.click_handler = None  # (ras_point, add) -> None: what a guided click in a slice view calls
        self.segmentation = None
        self.roi = None  # the "Limit to box" markups ROI (one per session, moved for each box)
        self.task = None
        self._run = None
        self.review_regions: list = []
        self.status = Status(message="Open a volume to start.")
        self.undo_stack = UndoStack()
        self.app.segmentation_editor.set_undo_stack(self.undo_stack)
        self._uploads = Path(tempfile.mkdtemp(prefix="medseg-web-"))
        self.choices = self._model_choices()

    def close(self) -> None:
        shutil.rmtree(self._uploads, ignore_errors=True)

    # -- models ------------------------------------------------------------------------------------------------------
    @staticmethod
    def _model_choices() -> dict[str, panel.ModelChoice]:
        from medseg.catalog import bundled_models
        from medseg.checkpoint import read_card

        choices, _problems = panel.model_choices(bundled_models(), [], read_card)
        return {c.key: c for c in choices}

    def card(self, key: str):
        choice = self.choices.get(key)
        return choice.card if choice is not None else None

    def is_unetpp(self, key: str) -> bool:
        """Whether model `key` is a UNet++ (the page shows its prune level and accurate mode only then)."""
        card = self.card(key)
        return card is not None and card.architecture == "unetpp"

    def channel_labels(self, key: str) -> list[str]:
        """The labels of the three input pickers for model `key` (the panel's ``channel_labels``: the card's channel
        names and modalities, "" hides a picker). ValueError for a model with more channels than pickers."""
        return panel.channel_labels(self.card(key))

    def volume_items(self) -> list[dict]:
        """The channel pickers' items: every volume opened in this session, by the name of its file or folder."""
        return [{"title": self._sources[node_id].name, "value": node_id} for node_id in self.opened]

    def card_text(self, key: str) -> str:
        choice = self.choices.get(key)
        return panel.describe_card(choice.card) if choice is not None else ""

    def activation_items(self, key: str) -> list[dict]:
        """The Grad-CAM class picker for model `key` (the panel's ``activation_choices``): "none", then each
        foreground label; the value is what the run's ``activationClass`` gets."""
        choice = self.choices.get(key)
        labels = panel.activation_choices(choice.card if choice is not None else None)
        return [{"title": "none", "value": ""}] + [{"title": text, "value": name} for text, name, _tip in labels]

    def add_model_path(self, relative: str, device: str = "auto") -> str:
        """Add a checkpoint file of the data root to the model picker (see :meth:`add_model_upload`), or a model
        trained with nnU-Net v2: its results folder, its ``plans.json`` or a fold's ``checkpoint_final.pth``,
        converted first by the panel's own ``MedSegLib.nnunet_import.checkpoint_for`` into this session's folder
        (kept for the server's life). A folder that is not an nnU-Net results folder is refused with what it lacks.
        """
        path = resolve_in_root(self.options.data_root, relative)
        if path.is_file() and path.suffix in (".json", ".pth"):  # nnU-Net's plans.json / a fold's checkpoint: the
            real_root = Path(self.options.data_root).resolve()  # importer reads the results folder around it
            for folder in (path.parent, path.parent.parent):
                if folder == real_root or real_root in folder.parents:
                    check_tree_in_root(real_root, folder)
        shown = Path(relative).name or str(relative)
        return self._add_model(self._import_nnunet(path, shown), shown, device)

    def _import_nnunet(self, path: Path, shown: str) -> Path:
        """`path` converted to a MedSeg checkpoint when it names an nnU-Net results folder (or a file in one), else
        `path` itself; ValueError with the importer's reason (server folders replaced by data-root paths)."""
        from MedSegLib.nnunet_import import checkpoint_for

        try:
            converted = Path(checkpoint_for(path, self._uploads / "imported"))
        except (OSError, ValueError) as exc:
            reason = str(exc)
            for root in {str(Path(self.options.data_root).resolve()), str(self.options.data_root)}:
                reason = reason.replace(root + "/", "").replace(root, "the data root")
            raise ValueError(f"{shown} cannot be used as a model; the model list is unchanged: {reason}") from None
        if converted == path and path.is_dir():
            raise ValueError(_not_nnunet_folder(path, shown))
        return converted

    def add_model_upload(self, name: str, content: bytes, device: str = "auto") -> str:
        """Add an uploaded checkpoint (a file ``medseg segment --model PATH`` takes: safetensors with a MedSeg
        card) to the model picker, kept in this session's temporary folder; the upload size limit applies.

        Returns:
            the new picker entry's key. Raises ValueError naming the file and the fix when it cannot be loaded; the
            picker and the scene are then unchanged and the file is deleted.
        """
        base = check_upload(name, len(content), self.options.max_upload_bytes)
        folder = Path(tempfile.mkdtemp(prefix="model-", dir=self._uploads))
        path = folder / base
        path.write_bytes(content)
        try:
            return self._add_model(path, base, device)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _add_model(self, path: Path, shown: str, device: str) -> str:
        """Load `path` with the bridge's model cache (card validated, weights checked against it, network built on
        `device`, so the first Segment reuses it), then add it to the picker; `shown` names it in messages."""
        from medseg.checkpoint import read_card

        key = str(path)
        try:
            self.cache.get(key, device)
            choices, problems = panel.model_choices([], [key], read_card)
        except (OSError, ValueError, RuntimeError) as exc:
            problems, choices = [str(exc)], []
        if not choices:
            reason = (problems[0] if problems else "unreadable").replace(f"{key}: ", "", 1)
            for long_name in {str(path.resolve()), key}:  # the server's folders stay out of the page
                reason = reason.replace(long_name, shown)
            raise ValueError(f"{shown} cannot be used as a model; the model list is unchanged: {reason}")
        self.choices[key] = choices[0]
        return key

    @staticmethod
    def device_line() -> str:
        from medseg.device import available_devices

        return panel.device_summary(available_devices())

    # -- volumes -----------------------------------------------------------------------------------------------------
    def open_path(self, relative: str):
        """Open a file named relative to the data root (confined to it: ``security.resolve_in_root``)."""
        return self._load(resolve_in_root(self.options.data_root, relative))

    def open_upload(self, name: str, content: bytes):
        """Open an uploaded file (kept in this session's temporary folder)."""
        base = check_upload(name, len(content), self.options.max_upload_bytes)
        if self.task is not None:
            raise ValueError("a segmentation is running; wait for it or click Cancel before opening another volume")
        for old in self._uploads.glob("upload-*"):  # one upload kept at a time (the volume open now)
            shutil.rmtree(old, ignore_errors=True)
        path = Path(tempfile.mkdtemp(prefix="upload-", dir=self._uploads)) / base
        path.write_bytes(content)
        return self._load(path)

    def _load(self, path: Path):
        """Open `path` beside the volumes already open (one per channel of a multi-channel model; a volume of the
        same name is replaced); the previous result leaves the scene."""
        from medseg.io import read_image

        if self.task is not None:
            raise ValueError("a segmentation is running; wait for it or click Cancel before opening another volume")
        read_image(path)  # the engine's checks: a non-image, a truncated or non-finite file gets a message naming it
        files = sorted(str(p) for p in path.iterdir() if p.is_file()) if path.is_dir() else [str(path)]
        self._clear()
        nodes = self.app.io_manager.load_volumes(files)
        if not nodes:
            raise ValueError(f"{path.name}: the Slicer core could not read it as a volume; use NIfTI, NRRD or MHA")
        self.volume = nodes[0]
        for node_id, source in list(self._sources.items()):  # opened again: the new node replaces the old one
            if source.name == path.name:
                self.volume.SetName(self.opened[node_id].GetName())  # not the core's "<name>_1"
                self._close_volume(node_id)
        self.set_box(None)  # a box typed for the previous volume
        self.opened[self.volume.GetID()] = self.volume
        self._sources[self.volume.GetID()] = path
        self.source_folder = self._source_folder(self.volume.GetID())
        self.app.display_manager.show_volume_in_slice_background(self.volume)
        self.app.display_manager.reset_views()
        self.status = Status(message=f"Opened {path.name}. Pick a model and click Segment.")
        return self.volume

    def _source_folder(self, node_id: str) -> Path | None:
        """The DICOM folder volume `node_id` was read from (the source of DICOM SEG/SR and the PDF), else None."""
        source = self._sources.get(node_id)
        return source if source is not None and source.is_dir() else None

    def _close_volume(self, node_id: str) -> None:
        node = self.opened.pop(node_id)
        self._sources.pop(node_id, None)
        if node.GetScene() is not None:
            self.scene.RemoveNode(node)

    def _clear(self) -> None:
        """Remove the previous result (segmentation, table, overlay volumes; the opened volumes, views, color tables
        and editor node stay)."""
        self.app.segmentation_editor.deactivate_effect()
        for cls in RESULT_CLASSES:
            for node in list(self.scene.GetNodesByClass(cls)):
                if node.GetID() not in self.opened:
                    self.scene.RemoveNode(node)
        self.segmentation = None
        self.review_regions = []
        self.undo_stack.clear()

    # -- segment -----------------------------------------------------------------------------------------------------
    def settings(self, values: dict[str, Any]) -> panel.RunSettings:
        """The run's settings from the page's values, read by the panel's own ``settings_from_parameters``."""
        choice = self.choices.get(values.get("modelName") or "")
        if choice is None:
            raise ValueError("no model selected; pick one in the Model list")
        defaults = {"device": "auto", "tta": False, "overlap": 0.5, "pruneLevel": 4, "accurate": False,
                    "largestComponent": False, "fillHoles": False, "minIslandMl": 0.0, "uncertainty": True,
                    "probabilities": True, "activationClass": "", "replacePrevious": True, "overlayOpacity": 0.5}
        return panel.settings_from_parameters(SimpleNamespace(**{**defaults, **values}), choice.card)

    def start(self, values: dict[str, Any]) -> None:
        """The Segment button: copy the inputs out of the scene and start the engine in a worker thread."""
        if self.task is not None:
            raise ValueError("a segmentation is already running; wait for it or click Cancel")
        if self.volume is None:
            raise ValueError("no volume open; upload a file or open one from the data root first")
        settings = self.settings(values)
        card = self.choices[settings.model].card
        volumes = panel.input_volumes(self._channels(values), card)
        roi = self.set_box(values.get("roiBox"), volumes[0]) if volumes[0] is not None else None
        inputs = read_inputs(volumes, card, roi)
        self.task = start_segmentation(self.cache, settings.model, settings.device, inputs,
                                       settings.segment_options())
        self._run = (inputs, settings)
        self.status = Status(running=True, message="Starting...")

    def volume_box(self) -> list[int]:
        """The whole volume shown as the page's box: first and last voxel on i, j and k ([] with no volume)."""
        if self.volume is None:
            return []
        dims = self.volume.GetImageData().GetDimensions()
        return [bound for size in dims for bound in (0, size - 1)]

    def set_box(self, box: Any, volume=None):
        """The "Limit to box" control: the session's markups ROI moved onto `box` (first and last voxel on i, j and
        k of `volume`, default the volume shown) by the bridge's ``roi_from_ijk_box``, and shown (locked) in the
        views; None hides it. A run given this ROI reads it as the panel's ROI selector's node
        (``run.read_inputs``), so the engine segments only inside it.

        Returns:
            the ROI node, or None. Raises ValueError naming a bound that is not a voxel of the volume.
        """
        from MedSegLib.volumes import roi_from_ijk_box

        if box is None or box == []:
            if self.roi is not None and self.roi.GetDisplayNode() is not None:
                self.roi.GetDisplayNode().SetVisibility(False)
            return None
        volume = volume if volume is not None else self.volume
        if volume is None:
            raise ValueError("no volume open; open one before limiting the run to a box")
        self.roi = roi_from_ijk_box(self.scene, volume, _voxel_box(box), roi_node=self.roi)
        if self.roi.GetDisplayNode() is None:
            self.roi.CreateDefaultDisplayNodes()
        self.roi.SetLocked(True)  # the typed numbers are the box: no handles to drag it away from them
        display = self.roi.GetDisplayNode()
        if display is not None:
            display.SetHandlesInteractive(False)
            display.SetFillVisibility(False)  # an outline: the overlays inside stay readable
            display.SetVisibility(True)
        return self.roi

    def box_text(self) -> str:
        """The box as the views show it: its voxels (first to last) and size in mm ("" when hidden)."""
        from MedSegLib.volumes import roi_to_ijk_box

        display = self.roi.GetDisplayNode() if self.roi is not None else None
        if display is None or not display.GetVisibility() or self.volume is None:
            return ""
        box = roi_to_ijk_box(self.roi, self.volume)
        ranges = ", ".join(f"{axis} {box[2 * n]}-{box[2 * n + 1] - 1}" for n, axis in enumerate("ijk"))
        size = " x ".join(f"{round(mm, 1):g}" for mm in self.roi.GetSize())
        return f"Box: voxels {ranges} ({size} mm)"

    def _channels(self, values: dict[str, Any]) -> SimpleNamespace:
        """The channel pickers' volumes (node IDs under the panel's ``CHANNEL_FIELDS``) as the panel's parameter
        node holds them; the first channel defaults to the volume shown, an ID not opened here is no volume."""
        picked = {name: self.opened.get(values.get(name) or "") for name in panel.CHANNEL_FIELDS}
        if not values.get(panel.CHANNEL_FIELDS[0]):
            picked[panel.CHANNEL_FIELDS[0]] = self.volume
        return SimpleNamespace(**picked)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.status.message = "Cancelling (within one window)..."

    def poll(self) -> Status:
        """Progress of the running task; once it is over, its outcome (a result goes into the scene here)."""
        task = self.task
        if task is None:
            return self.status
        progress = task.progress()
        self.status.progress = round(100 * progress.fraction, 1)
        if not task.cancelled:
            self.status.message = progress.message
        outcome = task.take()
        if outcome is None:
            return self.status
        self.task = None
        (inputs, settings), self._run = self._run, None
        if outcome.state == "done":
            self._apply(inputs, outcome, settings)
        elif outcome.state == "cancelled":
            self.status = Status(finished=True, message="Cancelled: nothing was changed.")
        else:
            self.status = Status(finished=True, error=f"Segmentation failed; nothing was changed: {outcome.error}")
        return self.status

    def _apply(self, inputs, outcome, settings) -> None:
        try:
            applied = apply(self.scene, inputs, outcome.result, settings.apply_options())
        except Exception as exc:
            self.status = Status(finished=True, error=f"The result could not be added to the scene: {exc}")
            return
        self.segmentation = self.scene.GetNodeByID(applied.segmentation_id)
        if inputs.volume_id != self.volume.GetID():  # the result is on the first channel's grid: show that one
            self.volume = self.scene.GetNodeByID(inputs.volume_id)
            self.app.display_manager.show_volume_in_slice_background(self.volume)
        self.source_folder = self._source_folder(inputs.volume_id)
        editor = self.app.segmentation_editor
        editor.set_active_segmentation(self.segmentation, self.volume)
        editor.show_3d(True)  # closed surfaces in the 3D view, updated after each edit
        review = outcome.result.review
        self.review_regions = list(review.regions) if review is not None else []
        self.shown_overlay = applied.shown_overlay
        warnings = list(outcome.result.warnings)
        self.status = Status(finished=True, applied=True, progress=100.0, warnings=warnings, message=panel.done_message(
            outcome.seconds, outcome.result.info.get("device", settings.device), warnings))

    # -- results -----------------------------------------------------------------------------------------------------
    def table(self) -> list[dict]:
        table = self.segmentation.GetNodeReference(TABLE_ROLE) if self.segmentation is not None else None
        return table_rows(table) if table is not None else []

    def remeasure(self) -> list[dict]:
        """The volume table measured again (after edits), as the panel's 0.5 s timer does."""
        if self.segmentation is None or self.task is not None:
            return self.table()
        recompute_table(self.segmentation)
        return self.table()

    def overlays(self) -> dict[str, Any]:
        return overlay_nodes(self.segmentation) if self.segmentation is not None else {}

    def show_overlay(self, kind: str, opacity: float) -> None:
        node = self.overlays().get(kind) if kind else None
        show_overlay(self.scene, node, float(opacity), background_node=self.volume)

    def set_opacity(self, opacity: float) -> None:
        set_overlay_opacity(self.scene, float(opacity))

    def jump_to_region(self, index: int) -> None:
        jump_to(self.scene, self.review_regions[index].centroid_ras)

    # -- save --------------------------------------------------------------------------------------------------------
    def results_zip(self) -> tuple[str, bytes]:
        """The result as it is now (``.seg.nrrd``, NIfTI label map, CSV, the AI's mask) in one zip."""
        if self.segmentation is None:
            raise ValueError("no segmentation to save; click Segment first")
        with tempfile.TemporaryDirectory(dir=self._uploads) as folder:
            files = save_results(folder, self.segmentation)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for path in files.values():
                    archive.write(path, Path(path).name)
        name = Path(next(iter(files.values()))).name.split(".")[0]
        return f"{name}.zip", buffer.getvalue()

    def export_zip(self) -> bytes:
        """DICOM SEG, DICOM SR and the PDF report of the result as it is now (``MedSegLib.dicom_export``), zipped."""
        from MedSegLib.dicom_export import export_result

        if self.segmentation is None:
            raise ValueError("no segmentation to export; click Segment first")
        if self.source_folder is None:
            raise ValueError("DICOM SEG/SR and the PDF report need a DICOM series as input: open a DICOM folder from "
                             "the data root (Download results saves this result as .seg.nrrd, NIfTI and CSV)")
        with tempfile.TemporaryDirectory(dir=self._uploads) as folder:
            exported = export_result(self.scene, self.segmentation, folder, meshes=False,
                                     source_folder=self.source_folder)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for path in exported.paths:
                    archive.write(path, Path(path).name)
        return buffer.getvalue()
