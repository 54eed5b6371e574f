"""The Segment button: read the input nodes, run the engine, put the results in the scene.

Three steps, so that the GUI can keep Slicer responsive and Cancel meaningful::

    inputs = read_inputs(volume_nodes, card, roi_node)          # main thread: copies voxels out of the nodes
    result = compute(segmenter, inputs, options, progress, cancel)  # any thread: no MRML object is touched
    applied = apply(scene, inputs, result, ApplyOptions())      # main thread: every scene change, in one place

:func:`read_inputs` and :func:`compute` never change the scene; a refusal, an engine error or a cancel
(:class:`medseg.sliding_window.Cancelled`) before :func:`apply` leaves it exactly as it was. :func:`apply` checks and
builds everything it can off-scene first (segments, overlay arrays, table rows, which nodes to reuse), then adds or
updates the nodes; should that fail, the nodes it added are removed again and the nodes of an earlier result it
was replacing (and the slice views) are restored from copies taken before (:mod:`MedSegLib.backup`).
:class:`SegmentationRun` chains the three steps for scripts and the self-test. :class:`ModelCache` keeps loaded
models by checkpoint file and device, so a second run on the same model does not load it again.

The engine (PyTorch) is imported only when a model is loaded or run, never when this module is imported.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import slicer

from medseg.card import ModelCard
from medseg.geometry import Geometry
from medseg.text import printable

from .backup import NodeBackup
from .corrections import AI_MASK_ROLE, store_ai_mask
from .display import heat_color_node, show_overlay, style_overlay
from .i18n import tr as _
from .segmentation import (
    MODEL_ATTRIBUTE,
    OVERLAY_KIND_ATTRIBUTE,
    OVERLAY_ROLE,
    SOURCE_VOLUME_ROLE,
    TABLE_ROLE,
    build_segments,
    find_result,
    overlay_nodes,
    place_in_hierarchy,
    set_segments,
)
from .tables import add_table_node, fill_table, result_rows
from .volumes import arrays_from_volumes, roi_to_ijk_box, update_volume_from_array, volume_from_array

if TYPE_CHECKING:
    from medseg.inference import SegmentationResult, Segmenter, SegmentOptions
    from medseg.sliding_window import CancelToken

__all__ = ["MODEL_CACHE", "AppliedResult", "ApplyOptions", "ModelCache", "RunInputs", "SegmentationRun", "apply",
           "compute", "describe", "read_inputs"]

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]


# ---------------------------------------------------------------------------------------------- models


class ModelCache:
    """Loaded models (:class:`medseg.inference.Segmenter`) by checkpoint file and device.

    The key is the checkpoint's resolved path, size and modification time and the device asked for, so a file
    replaced on disk is loaded again. At most `max_models` stay loaded (least recently used go first: GPU memory).
    Thread-safe; a model must not run two volumes at once (the panel runs one at a time).
    """

    def __init__(self, max_models: int = 2, loader: Callable[[Path, str], Segmenter] | None = None):
        self.max_models = max(1, int(max_models))
        self._loader = loader
        self._models: OrderedDict[tuple, Segmenter] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many times a checkpoint was read from disk

    def _load(self, path: Path, device: str) -> Segmenter:
        if self._loader is not None:
            return self._loader(path, device)
        from medseg.inference import Segmenter

        return Segmenter(path, device=device)

    def get(self, model: str | os.PathLike[str], device: str = "auto") -> Segmenter:
        """The loaded model for a bundled model name or a checkpoint path.

        Raises:
            FileNotFoundError: no such file. ValueError: an unknown model name, or a corrupt, pickle or mismatched
            checkpoint (the engine's message names the file and the fix).
        """
        from medseg.catalog import resolve_checkpoint

        try:
            path = resolve_checkpoint(model).resolve()
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns, str(device))
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            t = time.perf_counter()
            segmenter = self._load(path, str(device))
            self.loads += 1
            log.info("loaded model %s on %s in %.2f s", path.name, device, time.perf_counter() - t)
            self._models[key] = segmenter
            while len(self._models) > self.max_models:
                self._models.popitem(last=False)
            return segmenter

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


MODEL_CACHE = ModelCache()


# ---------------------------------------------------------------------------------------------- read (main thread)


@dataclass(frozen=True)
class RunInputs:
    """What a run needs from the scene, copied out of it (safe to hand to a worker thread).

    Attributes:
        channels: ``(C, Z, Y, X)`` float32 voxels, one channel per model input.
        geometry: their common grid in world coordinates (parent transforms applied).
        volume_id: ID of the first channel's node: results go on its grid, beside it.
        volume_name: its name (for node names and messages).
        channel_ids: IDs of every channel's node.
        roi: ``(i0, i1, j0, j1, k0, k1)`` half-open voxel box from the ROI node, or None.
    """

    channels: np.ndarray
    geometry: Geometry
    volume_id: str
    volume_name: str
    channel_ids: tuple[str, ...]
    roi: tuple[int, int, int, int, int, int] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.channels.shape[1:])


def _check_channel_count(card: ModelCard, given: int) -> None:
    names = [c.name for c in card.inputs]
    if given != len(names):
        modalities = ", ".join(f"{c.name} ({c.modality})" for c in card.inputs)
        template = (_("model {model!r} needs {count} input volume(s): {modalities}; {given} was given. Pick one "
                      "volume for each, in this order") if given == 1 else
                    _("model {model!r} needs {count} input volume(s): {modalities}; {given} were given. Pick one "
                      "volume for each, in this order"))
        raise ValueError(template.format(model=card.name, count=len(names), modalities=modalities, given=given))


def read_inputs(volume_nodes, card: ModelCard | None = None, roi_node=None) -> RunInputs:
    """Copy the input voxels and geometry out of the scene (call on the main thread).

    Args:
        volume_nodes: the input volume node, or one node per model channel in the card's order.
        card: the model's card (checks the channel count; 2D models accept a single slice).
        roi_node: a ``vtkMRMLMarkupsROINode`` to crop to, or None.

    Raises:
        ValueError: no volume, a vector/4D/2D volume, a non-linear transform, the wrong number of channels, channels
            on different grids, an ROI outside the volume (each message names the node and the fix).
    """
    nodes = list(volume_nodes) if isinstance(volume_nodes, list | tuple) else [volume_nodes]
    if card is not None:
        _check_channel_count(card, len(nodes))  # an unselected channel (None) is refused by name below
    names = [c.name for c in card.inputs] if card is not None else None
    two_d = card is not None and card.spatial_dims == 2
    channels, geometry = arrays_from_volumes(nodes, names, allow_single_slice=two_d)
    roi = roi_to_ijk_box(roi_node, nodes[0]) if roi_node is not None else None
    return RunInputs(channels, geometry, nodes[0].GetID(), nodes[0].GetName(), tuple(n.GetID() for n in nodes), roi)


# ---------------------------------------------------------------------------------------------- compute (any thread)


def compute(segmenter: Segmenter, inputs: RunInputs, options: SegmentOptions | None = None,
            progress: Progress | None = None, cancel: CancelToken | None = None) -> SegmentationResult:
    """Run the engine on copied inputs; touches no MRML object, so it may run in a worker thread.

    Raises:
        medseg.sliding_window.Cancelled: `cancel` was set (within one window).
        ValueError: options that do not fit the model (unknown Grad-CAM class, UNet++ options on another network).
        MemoryError: out of memory even with one window on the CPU (crop to a region of interest).
    """
    from medseg.inference import SegmentOptions

    options = options or SegmentOptions()
    card = segmenter.card
    _check_channel_count(card, inputs.channels.shape[0])
    for name in options.activation_classes:
        try:
            card.label(name)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
    if inputs.roi is not None:
        options = dataclasses.replace(options, roi=inputs.roi)
    channels = inputs.channels[0] if inputs.channels.shape[0] == 1 else inputs.channels
    return segmenter.segment(channels, inputs.geometry, options, progress, cancel)


# ---------------------------------------------------------------------------------------------- apply (main thread)


@dataclass(frozen=True)
class ApplyOptions:
    """How a result goes into the scene.

    Attributes:
        replace: reuse the previous result of this model on this volume (same nodes, cleared and refilled; its
            overlays that this run did not produce are removed); False adds a new set of nodes.
        name: base name of the nodes (None: ``"<volume> <model>"``).
        probability_labels: labels whose probability map becomes an overlay (None: every foreground label), when
            the run computed probabilities.
        show_overlay: overlay kind to show in the slice views ("activation:<label>", "probability:<label>",
            "uncertainty", "tta_variance"), "auto" (the first there is, in that order) or None (views unchanged).
        overlay_opacity: foreground opacity for the shown overlay.
    """

    replace: bool = True
    name: str | None = None
    probability_labels: tuple[str | int, ...] | None = None
    show_overlay: str | None = "auto"
    overlay_opacity: float = 0.5


@dataclass(frozen=True)
class AppliedResult:
    """Node IDs of a result in the scene."""

    segmentation_id: str
    table_id: str
    overlay_ids: dict[str, str] = field(default_factory=dict)  # overlay kind -> volume node ID
    added_ids: tuple[str, ...] = ()
    removed_ids: tuple[str, ...] = ()
    replaced: bool = False
    shown_overlay: str | None = None


@dataclass(frozen=True)
class _Overlay:
    kind: str
    title: str
    array: np.ndarray
    window: tuple[float, float]


def _overlays(result: SegmentationResult, options: ApplyOptions) -> list[_Overlay]:
    card, shape = result.card, result.labels.shape
    out = [_Overlay(f"activation:{name}", printable(f"Grad-CAM {name}"), cam, (0.0, 1.0))
           for name, cam in result.activations.items()]
    if result.probabilities is not None:
        try:
            labels = card.foreground_labels if options.probability_labels is None else [
                card.label(x) for x in options.probability_labels]
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        out += [_Overlay(f"probability:{lab.name}", printable(f"probability {lab.name}"), result.probabilities[lab.id],
                         (0.0, 1.0)) for lab in labels]
    if result.entropy is not None:
        out.append(_Overlay("uncertainty", "uncertainty", result.entropy, (0.0, 1.0)))
    if result.tta_variance is not None:  # variance of a probability: at most 0.25
        out.append(_Overlay("tta_variance", "TTA variance", result.tta_variance, (0.0, 0.25)))
    for overlay in out:
        if overlay.array.shape != shape:
            raise ValueError(  # no tr: the engine's result contradicts itself, a bug
                f"overlay {overlay.kind} has shape {overlay.array.shape}, not the labels' {shape}")
    return out


def _shown(overlays: list[_Overlay], choice: str | None) -> str | None:
    if choice is None or not overlays:
        return None
    kinds = [o.kind for o in overlays]
    if choice == "auto":
        return kinds[0]
    if choice not in kinds:
        raise ValueError(_("overlay {choice!r} was not computed in this run; available: {kinds}").format(
            choice=choice, kinds=", ".join(kinds)))
    return choice


def _input_volume(scene, inputs: RunInputs):
    volume = scene.GetNodeByID(inputs.volume_id)
    image = volume.GetImageData() if volume is not None else None
    if image is None or tuple(image.GetDimensions()) != tuple(inputs.shape[::-1]):
        raise ValueError(_("volume {volume!r} was removed or changed while it was being segmented; nothing was "
                           "added to the scene: run again").format(volume=inputs.volume_name))
    return volume


def _node_ids(scene) -> list[str]:
    return [scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())]


def _remove(scene, node_ids: Sequence[str]) -> None:
    """Remove nodes with their display and storage nodes and their subject hierarchy items."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    for node_id in reversed(node_ids):
        node = scene.GetNodeByID(node_id)
        if node is None:
            continue
        item = sh.GetItemByDataNode(node) if sh is not None else 0
        if item:  # the application's subject hierarchy logic would do it; slicer-core alone does not
            sh.RemoveItem(item, False, False)
        helpers = []
        if node.IsA("vtkMRMLDisplayableNode"):
            helpers += [node.GetNthDisplayNode(n) for n in range(node.GetNumberOfDisplayNodes())]
        if node.IsA("vtkMRMLStorableNode"):
            helpers += [node.GetNthStorageNode(n) for n in range(node.GetNumberOfStorageNodes())]
        scene.RemoveNode(node)
        for helper in helpers:
            if helper is not None and helper.GetScene() is scene:
                scene.RemoveNode(helper)


def _apply_overlays(scene, segmentation, volume, base: str, overlays: list[_Overlay], added: list[str]):
    """Add or update overlay volumes; returns ({kind: node}, [stale overlay node IDs to remove])."""
    previous = overlay_nodes(segmentation)
    color = heat_color_node(scene) if overlays else None
    nodes = {}
    for overlay in overlays:
        name = f"{base} {overlay.title}"
        node = previous.pop(overlay.kind, None)
        if node is None:
            node = volume_from_array(scene, overlay.array.astype(np.float32, copy=False), volume, name)
            added.append(node.GetID())
        else:
            update_volume_from_array(node, overlay.array.astype(np.float32, copy=False), volume)
            node.SetName(name)
        node.SetAttribute(OVERLAY_KIND_ATTRIBUTE, overlay.kind)
        style_overlay(node, color, overlay.window)
        nodes[overlay.kind] = node
    segmentation.RemoveNodeReferenceIDs(OVERLAY_ROLE)
    for node in nodes.values():
        segmentation.AddNodeReferenceID(OVERLAY_ROLE, node.GetID())
    return nodes, [node.GetID() for node in previous.values()]


def _backup(scene, previous, views: bool) -> NodeBackup:
    """Copies of what `apply` may change in place: an earlier result's nodes and, if shown, the slice views."""
    nodes = []
    if previous is not None:
        nodes += [previous, previous.GetNodeReference(TABLE_ROLE), previous.GetNodeReference(AI_MASK_ROLE),
                  *overlay_nodes(previous).values()]
    if views:
        nodes += [scene.GetNthNodeByClass(n, "vtkMRMLSliceCompositeNode")
                  for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]
    return NodeBackup(nodes)


def apply(scene, inputs: RunInputs, result: SegmentationResult, options: ApplyOptions | None = None) -> AppliedResult:
    """Put a result in the scene (call on the main thread): segmentation, overlays, volume table.

    New nodes go in the subject hierarchy beside the input volume (under its study), named
    ``"<volume> <model>"`` and ``"<volume> <model> <overlay>"``; the segmentation references its source volume,
    table and overlays (``MedSeg.*`` reference roles) so that later runs, the table refresh and Save find them,
    and the AI's own label map, kept hidden to measure the user's edits against (:mod:`MedSegLib.corrections`).

    Raises:
        ValueError: the input volume was removed or changed during the run, or options that do not fit the result;
            the scene is unchanged.
    """
    options = options or ApplyOptions()
    volume = _input_volume(scene, inputs)
    card = result.card
    base = options.name or printable(f"{inputs.volume_name} {card.name}")  # node names: no control characters
    segments = build_segments(result.labels, card.labels, volume, result.measurements)
    overlays = _overlays(result, options)
    shown = _shown(overlays, options.show_overlay)
    rows = result_rows(result.measurements)
    previous = find_result(scene, volume, card.name) if options.replace else None
    backup = _backup(scene, previous, shown is not None)
    existing = set(_node_ids(scene))
    added: list[str] = []
    try:
        segmentation = previous
        if segmentation is None:
            segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", base)
            added.append(segmentation.GetID())
            segmentation.CreateDefaultDisplayNodes()
        set_segments(segmentation, segments, volume)
        segmentation.SetAttribute(MODEL_ATTRIBUTE, card.name)
        segmentation.SetNodeReferenceID(SOURCE_VOLUME_ROLE, volume.GetID())
        ai_mask = store_ai_mask(scene, segmentation, result.labels, volume, f"{base} AI mask", added)
        table = segmentation.GetNodeReference(TABLE_ROLE)
        if table is None:
            table = add_table_node(scene, rows, f"{base} volumes")
            added.append(table.GetID())
            segmentation.SetNodeReferenceID(TABLE_ROLE, table.GetID())
        else:
            fill_table(table, rows)
        overlay_nodes, stale = _apply_overlays(scene, segmentation, volume, base, overlays, added)
        for node_id in added:
            if node_id != ai_mask.GetID():  # kept out of the user's way
                place_in_hierarchy(scene, scene.GetNodeByID(node_id), volume)
        if shown is not None:
            show_overlay(scene, overlay_nodes[shown], options.overlay_opacity, background_node=volume)
    except BaseException:
        _remove(scene, [node_id for node_id in _node_ids(scene) if node_id not in existing])
        backup.restore()
        raise
    _remove(scene, stale)
    return AppliedResult(segmentation.GetID(), table.GetID(), {k: n.GetID() for k, n in overlay_nodes.items()},
                         tuple(added), tuple(stale), previous is not None, shown)


# ---------------------------------------------------------------------------------------------- the whole click


class SegmentationRun:
    """Read, compute and apply in one call (scripts, the self-test); the GUI calls the three steps itself.

    Args:
        scene: the MRML scene (None: ``slicer.mrmlScene`` at call time).
        cache: where loaded models are kept (None: the module's :data:`MODEL_CACHE`).
    """

    def __init__(self, scene=None, cache: ModelCache | None = None):
        self._scene = scene
        self.cache = cache if cache is not None else MODEL_CACHE
        self.timings: dict[str, float] = {}

    @property
    def scene(self):
        return self._scene if self._scene is not None else slicer.mrmlScene

    def prepare(self, volume_nodes, model: str | os.PathLike[str], device: str = "auto",
                roi_node=None) -> tuple[Segmenter, RunInputs]:
        """Load (or reuse) the model and copy the inputs out of the scene (main thread)."""
        t = time.perf_counter()
        segmenter = self.cache.get(model, device)
        inputs = read_inputs(volume_nodes, segmenter.card, roi_node)
        self.timings["prepare"] = time.perf_counter() - t
        return segmenter, inputs

    def run(self, volume_nodes, model: str | os.PathLike[str], options: SegmentOptions | None = None, *,
            device: str = "auto", roi_node=None, apply_options: ApplyOptions | None = None,
            progress: Progress | None = None, cancel: CancelToken | None = None) -> AppliedResult:
        """Segment `volume_nodes` with `model` and put the result in the scene; on any error or cancel the scene
        is left as it was."""
        segmenter, inputs = self.prepare(volume_nodes, model, device, roi_node)
        t = time.perf_counter()
        result = compute(segmenter, inputs, options, progress, cancel)
        self.timings["compute"] = time.perf_counter() - t
        if cancel is not None:
            cancel.check()
        t = time.perf_counter()
        applied = apply(self.scene, inputs, result, apply_options)
        self.timings["apply"] = time.perf_counter() - t
        return applied


def describe(result: AppliedResult, scene) -> dict[str, Any]:
    """Names of a result's nodes (for logs and the panel's status line)."""
    def name(node_id: str) -> str:
        node = scene.GetNodeByID(node_id)
        return node.GetName() if node is not None else node_id

    return {"segmentation": name(result.segmentation_id), "table": name(result.table_id),
            "overlays": {k: name(v) for k, v in result.overlay_ids.items()}}
