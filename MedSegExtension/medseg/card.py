"""The model card: what a checkpoint is, what it expects and how it was made.

A card travels inside the checkpoint (JSON in the safetensors metadata, see ``checkpoint.py``). It is
validated on every read: an error names the bad field (``labels[2].color``) and what was expected.

Conventions: ``spacing`` is in mm in ITK/Slicer (x, y, z) order; ``patch_size`` is in array order
(z, y, x) for 3D networks and (y, x) for 2D networks, which run slice by slice along ``slice_axis``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from . import __version__
from .calibration import calibration_problems
from .card_checks import (
    MAX_NAME_CHARS,
    _check_json,
    _Errors,
    _number,
    _numbers,
    _show,
    _text,
    _typed,
    card_error,
    finite_or_null,
)
from .domain import input_domain_problems
from .orientation import orientation_problem

__all__ = ["FORMAT_VERSION", "InputChannel", "Label", "ModelCard", "Normalization", "card_error", "finite_or_null"]

FORMAT_VERSION = 1
MODALITIES = ("CT", "MR", "PT", "US", "EM", "OT")
NORMALIZATIONS = ("zscore", "ct", "minmax", "none")

# A card comes from whoever wrote the checkpoint: every number is bounded before anything is sized from it.
# The bounds are generous for real models (TotalSegmentator has 118 labels, nnU-Net patches are <= 128^3 in 3D
# and 2048^2 in 2D, micro-CT voxels are ~1 um); a card outside them is refused with the field's path.
SPACING_RANGE_MM = (1e-4, 100.0)  # 0.1 um .. 10 cm per voxel
MAX_PATCH_SIZE = 1024  # per axis
MAX_PATCH_VOXELS = 2**26  # 67 million voxels in one window (512 x 512 x 256)
MAX_CLASSES = 1024  # labels, background included; label ids are 0..MAX_CLASSES - 1
MAX_INPUT_CHANNELS = 16
WIDTH_RANGE = (0.0, 8.0)  # channel multiplier, > 0
DEPTH_RANGE = (1, 8)  # levels of an encoder-decoder
MAX_FEATURES = 4096  # channels of one level in architecture_args.features
MAX_ARG_NUMBER = 1e6  # any other number of architecture_args, in absolute value
MAX_ARG_LIST = 64  # items of a list in architecture_args
MAX_INTENSITY = 1e9  # normalisation window, mean and std, in absolute value
UNRELIABLE_DICE = 0.5  # a label validated below this Dice gets a warning with every result (unreliable_labels)
MAX_TEXT_CHARS = 100_000  # summary, description, training.dataset and .license
MAX_CARD_CHARS = 10_000_000  # the card's JSON
MAX_ENSEMBLE = 16  # weight sets in one checkpoint (nnU-Net: 5 folds)
WINDOW_LAYOUTS = ("medseg", "nnunet")  # see medseg.sliding_window.WindowOptions.layout
PER_AXIS_ARGS = ("kernel_sizes", "strides")  # architecture_args that are lists of per-axis lists (nnU-Net's)
INFERENCE_KEYS = ("windows", "transpose", "crop_nonzero", "mask_normalization", "mirror_axes")
POSTPROCESS_KEYS = ("largest_component", "fill_holes", "min_island_ml")  # medseg.postprocess.PostprocessOptions
MAX_ISLAND_ML = 100.0  # postprocess.min_island_ml in mL: the panel's range (MedSegParameterNode.minIslandMl)
# Known architecture arguments: (low, high, integer, low excluded). Other arguments are checked generically.
ARGUMENT_BOUNDS: dict[str, tuple[float, float, bool, bool]] = {
    "spatial_dims": (2, 3, True, False),
    "in_channels": (1, MAX_INPUT_CHANNELS, True, False),
    "num_classes": (1, MAX_CLASSES, True, False),
    "width": (*WIDTH_RANGE, False, True),
    "depth": (*DEPTH_RANGE, True, False),
    "dropout": (0.0, 1.0, False, False),
}


def _check_architecture_args(args: dict[str, Any], errors: _Errors) -> None:
    """Known arguments within ARGUMENT_BOUNDS; any other: a JSON scalar or a short list of scalars, finite."""
    for key, value in args.items():
        where = f"architecture_args.{key}"
        if not (isinstance(key, str) and key.isidentifier()):
            errors.add(where, "argument names are Python identifiers such as 'width'")
        elif key in ARGUMENT_BOUNDS:
            low, high, integer, open_low = ARGUMENT_BOUNDS[key]
            _number(errors, where, value, (low, high), integer, open_low)
        elif key == "features":
            if _typed(errors, where, value, list | tuple, f"a list of at most {MAX_ARG_LIST} channel counts"):
                _numbers(errors, where, value, len(value), (1, MAX_FEATURES), integer=True)
        elif isinstance(value, list | tuple):
            if len(value) > MAX_ARG_LIST:
                errors.add(where, f"expected a list of at most {MAX_ARG_LIST} items, got {len(value)}")
            for i, item in enumerate(value[:MAX_ARG_LIST]):
                if key in PER_AXIS_ARGS and isinstance(item, list | tuple) and len(item) <= 3:  # per stage and axis
                    for j, sub in enumerate(item):
                        _scalar_argument(errors, f"{where}[{i}][{j}]", sub)
                else:
                    _scalar_argument(errors, f"{where}[{i}]", item)
        else:
            _scalar_argument(errors, where, value)


def _scalar_argument(errors: _Errors, where: str, value: Any) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _text(errors, where, value)
    elif isinstance(value, int | float):
        _number(errors, where, value, (-MAX_ARG_NUMBER, MAX_ARG_NUMBER))
    else:
        errors.add(where, f"expected a number, string, true/false, null or a list of these, got {_show(value)}")


@dataclass(frozen=True)
class Normalization:
    """Intensity normalisation of one input channel.

    kind: ``zscore`` (MRI: clip to the image's own ``percentiles``, then subtract its mean and divide by its
    std), ``ct`` (clip to ``window`` in HU, then ``(x - mean) / std`` with the training set's statistics),
    ``minmax`` (to [0, 1]) or ``none``.
    """

    kind: str = "zscore"
    percentiles: tuple[float, float] | None = (0.5, 99.5)
    window: tuple[float, float] | None = None
    mean: float | None = None
    std: float | None = None

    @staticmethod
    def parse(d: Any, where: str, errors: _Errors) -> Normalization | None:
        if not _typed(errors, where, d, dict, "an object with 'kind'"):
            return None
        kind = d.get("kind")
        if kind not in NORMALIZATIONS:
            errors.add(f"{where}.kind", f"expected one of {NORMALIZATIONS}, got {kind!r}")
            return None
        bounds = {"percentiles": (0.0, 100.0), "window": (-MAX_INTENSITY, MAX_INTENSITY)}
        pairs, ok = {}, True
        for key, (low, high) in bounds.items():
            v = d.get(key)
            good = v is None or _numbers(errors, f"{where}.{key}", v, 2, (low, high))
            if good and v is not None and not v[0] < v[1]:
                errors.add(f"{where}.{key}", f"expected [low, high] with low < high, got {_show(v)}")
                good = False
            ok &= good
            pairs[key] = tuple(float(x) for x in v) if v is not None and good else None
        stats = {"mean": ((-MAX_INTENSITY, MAX_INTENSITY), False), "std": ((0.0, MAX_INTENSITY), True)}
        for key, (limits, open_low) in stats.items():
            if d.get(key) is not None or kind == "ct":
                ok &= _number(errors, f"{where}.{key}", d.get(key), limits, open_low=open_low)
        if kind == "ct" and d.get("window") is None:
            errors.add(f"{where}.window", "a 'ct' normalisation needs a window [low, high] in HU")
            ok = False
        return Normalization(kind, pairs["percentiles"], pairs["window"], d.get("mean"), d.get("std")) if ok else None


@dataclass(frozen=True)
class InputChannel:
    """One input channel: its name as shown to the user (``T1w``), its DICOM modality, its normalisation."""

    name: str
    modality: str = "MR"
    normalization: Normalization = field(default_factory=Normalization)

    @staticmethod
    def parse(d: Any, where: str, errors: _Errors) -> InputChannel | None:
        if not _typed(errors, where, d, dict, "an object with 'name', 'modality', 'normalization'"):
            return None
        ok = _text(errors, f"{where}.name", d.get("name"), empty=False)  # a channel name such as 'T1w' or 'CT'
        if d.get("modality") not in MODALITIES:
            errors.add(f"{where}.modality", f"expected one of {MODALITIES}, got {d.get('modality')!r}")
            ok = False
        norm = Normalization.parse(d.get("normalization"), f"{where}.normalization", errors)
        return InputChannel(d["name"], d["modality"], norm) if ok and norm else None


@dataclass(frozen=True)
class Label:
    """One output label: id in the label map, name, RGB color 0-255, optional terminology.

    ``terminology`` follows Slicer's/DICOM's coded concepts: ``{"category": CODE, "type": CODE}`` with
    ``CODE = {"scheme": "SCT", "code": "...", "meaning": "..."}`` (SNOMED CT where known).
    """

    id: int
    name: str
    color: tuple[int, int, int] = (128, 128, 128)
    terminology: dict[str, dict[str, str]] | None = None

    @staticmethod
    def parse(d: Any, where: str, errors: _Errors) -> Label | None:
        if not _typed(errors, where, d, dict, "an object with 'id', 'name', 'color'"):
            return None
        ok = _number(errors, f"{where}.id", d.get("id"), (0, MAX_CLASSES - 1), integer=True)
        ok &= _text(errors, f"{where}.name", d.get("name"), empty=False)
        color = d.get("color", [128, 128, 128])
        if not (isinstance(color, list | tuple) and len(color) == 3 and all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color
        )):
            errors.add(f"{where}.color", f"expected 3 integers 0-255 (RGB), got {_show(color)}")
            ok = False
        term = d.get("terminology")
        if term is not None:
            ok &= _check_terminology(term, f"{where}.terminology", errors)
        return Label(d["id"], d["name"], tuple(color), term) if ok else None


def _check_terminology(term: Any, where: str, errors: _Errors) -> bool:
    if not _typed(errors, where, term, dict, "an object with 'category' and 'type' codes"):
        return False
    ok = True
    for key in ("category", "type"):
        code = term.get(key)
        if not (isinstance(code, dict) and all(isinstance(code.get(k), str) for k in ("scheme", "code", "meaning"))):
            errors.add(f"{where}.{key}", f"expected {{'scheme', 'code', 'meaning'}} strings, got {_show(code)}")
            ok = False
            continue
        for k in ("scheme", "code", "meaning"):
            text = code[k]
            if len(text) > MAX_NAME_CHARS or any(c in _TERMINOLOGY_SEPARATORS or not c.isprintable() for c in text):
                errors.add(f"{where}.{key}.{k}", f"expected at most {MAX_NAME_CHARS} printable characters, no "
                                                 f"'~', '^' or '|' (terminology separators), got {_show(text)}")
                ok = False
    return ok


_TERMINOLOGY_SEPARATORS = frozenset("~^|")


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to run a checkpoint and to judge whether to trust it.

    Attributes:
        name: short id used on the command line and in Slicer (``hippocampus-unet3d``).
        summary: one sentence for the model picker.
        architecture: registry name (``medseg models`` lists them); ``architecture_args`` rebuild it.
        inputs: one entry per input channel, in the network's channel order.
        labels: one entry per output class, ids 0..n-1, 0 is the background.
        spacing: voxel spacing in mm (x, y, z) the model was trained at; None runs at the input's spacing.
        patch_size: sliding-window size in array order; its length is the network's spatial_dims.
        slice_axis: for 2D networks, the array axis (0 = z) slices are taken along.
        orientation: the voxel orientation of the training arrays, an ITK/DICOMOrient code of three letters
            naming where the i, j, k axes point (``"RAS"``, ``"LPS"``); inference permutes and flips every
            input into it and its outputs back. None (older cards): arrays are fed as stored, with a warning.
        input_domain: optional; what the training inputs looked like (patient-axis size and spacing ranges,
            per-channel 1st/99th intensity percentile ranges), measured by ``medseg.domain.describe_inputs``;
            inputs far outside it get a warning (``medseg.domain.domain_warnings``). None: no such check.
        calibration: optional; the temperature inference divides the logits by and the conformal volume
            interval, fitted on the validation cases by ``scripts/calibrate.py`` (``medseg.calibration``).
        training: at least ``dataset`` and ``license``; also split, epochs, time, hardware when trained here.
        ensemble: optional; names of several weight sets of the same network (nnU-Net's folds, ``["fold_0",
            "fold_1"]``), stored as ``members.<i>.<name>``; their logits are averaged. None: one weight set.
        inference: optional; how the model must be run when that differs from MedSeg's own way (models imported
            from nnU-Net, ``medseg.nnunet``): ``windows`` (``"medseg"`` or ``"nnunet"``: window positions, padding
            and Gaussian of nnU-Net's predictor), ``transpose`` (a permutation of the (z, y, x) array axes applied
            to the volume as stored, nnU-Net's ``transpose_forward``; the card then has no ``orientation``, and
            ``spacing``/``patch_size`` are in the transposed order), ``crop_nonzero`` (run on the box of the
            non-zero voxels of all channels, background outside, as nnU-Net), ``mask_normalization`` (per
            channel: z-score statistics from the non-zero region only, zero outside), ``mirror_axes`` (network
            array axes that test-time augmentation flips; default all).
        postprocess: optional; the post-processing a run gets when its caller does not choose one
            (``SegmentOptions.postprocess`` None, ``medseg segment`` without ``--postprocess``, and the panel's and
            page's checkboxes when the model is picked): some of ``largest_component`` and ``fill_holes`` (true or
            false) and ``min_island_ml`` (mL, 0 to :data:`MAX_ISLAND_ML`), the fields of
            :class:`medseg.postprocess.PostprocessOptions`; stored with all three. None: no post-processing.
        metrics: validation metrics (for example ``{"dice": {"anterior": 0.88}}``).
    """

    name: str
    summary: str
    architecture: str
    architecture_args: dict[str, Any]
    inputs: tuple[InputChannel, ...]
    labels: tuple[Label, ...]
    patch_size: tuple[int, ...]
    training: dict[str, Any]
    spacing: tuple[float, float, float] | None = None
    slice_axis: int = 0
    orientation: str | None = None
    input_domain: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    ensemble: tuple[str, ...] | None = None
    inference: dict[str, Any] | None = None
    postprocess: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    engine_version: str = __version__
    format_version: int = FORMAT_VERSION

    @property
    def spatial_dims(self) -> int:
        return int(self.architecture_args.get("spatial_dims", len(self.patch_size)))

    @property
    def foreground_labels(self) -> tuple[Label, ...]:
        return tuple(label for label in self.labels if label.id != 0)

    def label(self, name_or_id: str | int) -> Label:
        """The label with this name (case-insensitive) or id; KeyError lists the valid names."""
        for label in self.labels:
            if label.id == name_or_id or (isinstance(name_or_id, str) and label.name.lower() == name_or_id.lower()):
                return label
        names = ", ".join(repr(label.name) for label in self.labels)
        raise KeyError(f"model {self.name!r} has no label {name_or_id!r}; its labels are {names}")

    def unreliable_labels(self, below: float = UNRELIABLE_DICE) -> list[tuple[str, float]]:
        """Foreground labels whose validation Dice in the card's ``metrics`` is below `below`, as (name, Dice):
        from ``metrics.evaluation`` (``medseg evaluate`` at the data's own resolution) when the card has it,
        else the training run's ``metrics.dice``. Labels without a numeric score are not listed."""
        evaluation = self.metrics.get("evaluation")
        labels = evaluation.get("labels") if isinstance(evaluation, dict) else None
        if isinstance(labels, dict):
            scores = {name: v.get("dice") for name, v in labels.items() if isinstance(v, dict)}
        else:
            scores = self.metrics.get("dice") if isinstance(self.metrics.get("dice"), dict) else {}
        weak = []
        for label in self.foreground_labels:
            value = scores.get(label.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
                    and value < below:
                weak.append((label.name, float(value)))
        return weak

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str, source: str = "model card") -> ModelCard:
        if not isinstance(text, str) or len(text) > MAX_CARD_CHARS:
            size = f"{len(text)} characters" if isinstance(text, str) else type(text).__name__
            raise ValueError(f"{source}: the model card must be JSON text of at most {MAX_CARD_CHARS} characters, "
                             f"got {size}; is this a MedSeg checkpoint?")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, an integer of > 4300 digits, deep nesting
            raise ValueError(f"{source}: the model card is not valid JSON ({type(exc).__name__}: "
                             f"{str(exc)[:200]})") from None
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, d: Any, source: str = "model card") -> ModelCard:
        """Validate and build a card; ValueError lists every bad field by its path."""
        errors = _Errors()
        if not isinstance(d, dict):
            errors.add("card", f"expected a JSON object, got {type(d).__name__}")
            errors.raise_if_any(source)
        if not _check_json(d, errors):
            errors.raise_if_any(source)
        fv = d.get("format_version", FORMAT_VERSION)
        if type(fv) is not int or fv != FORMAT_VERSION:
            errors.add("format_version", f"this engine reads format {FORMAT_VERSION}, got {_show(fv)}; update MedSeg")
        _check_texts(d, errors)
        args = d.get("architecture_args")
        if _typed(errors, "architecture_args", args, dict, "an object of constructor arguments"):
            _check_architecture_args(args, errors)
        inputs = _parse_list(d.get("inputs"), "inputs", InputChannel.parse, errors)
        labels = _parse_list(d.get("labels"), "labels", Label.parse, errors)
        patch = d.get("patch_size")
        _check_patch(patch, errors)
        spacing = d.get("spacing")
        if spacing is not None:  # mm (x, y, z); null runs at the input's spacing
            _numbers(errors, "spacing", spacing, 3, SPACING_RANGE_MM, open_low=False)
        training = d.get("training")
        if _typed(errors, "training", training, dict, "an object with 'dataset' and 'license'"):
            for key in ("dataset", "license"):  # say 'unknown' if unknown
                _text(errors, f"training.{key}", training.get(key), MAX_TEXT_CHARS)
        _typed(errors, "metrics", d.get("metrics", {}), dict, "an object")
        _number(errors, "slice_axis", d.get("slice_axis", 0), (0, 2), integer=True)
        if d.get("orientation") is not None and orientation_problem(d["orientation"]):
            errors.add("orientation", orientation_problem(d["orientation"]))
        if d.get("input_domain") is not None and all(inputs):  # see medseg.domain
            for where, problem in input_domain_problems(d["input_domain"], [c.name for c in inputs]):
                errors.add(where, problem)
        if d.get("calibration") is not None and all(labels):  # see medseg.calibration
            names = [label.name for label in labels if label.id != 0]
            for where, problem in calibration_problems(d["calibration"], names):
                errors.add(where, problem)
        ensemble = d.get("ensemble")
        if ensemble is not None:
            _check_ensemble(ensemble, errors)
        if d.get("inference") is not None:
            _check_inference(d["inference"], d, errors)
        if d.get("postprocess") is not None:
            _check_postprocess(d["postprocess"], errors)
        errors.raise_if_any(source)
        card = cls(
            name=d["name"], summary=d["summary"], architecture=d["architecture"], architecture_args=dict(args),
            inputs=tuple(inputs), labels=tuple(labels), patch_size=tuple(patch), training=dict(training),
            spacing=tuple(float(s) for s in spacing) if spacing is not None else None,
            slice_axis=d.get("slice_axis", 0), orientation=d.get("orientation"), metrics=dict(d.get("metrics", {})),
            input_domain=d.get("input_domain"), calibration=d.get("calibration"),
            ensemble=tuple(ensemble) if ensemble is not None else None, inference=d.get("inference"),
            postprocess=_postprocess_dict(d.get("postprocess")),
            description=d.get("description", ""), engine_version=d.get("engine_version", "unknown"),
            format_version=fv,
        )
        card._check_consistency(source)
        return card

    def _check_consistency(self, source: str) -> None:
        errors = _Errors()
        args = self.architecture_args
        if args.get("in_channels", 1) != len(self.inputs):
            errors.add("inputs", f"{len(self.inputs)} channels listed but architecture_args.in_channels is "
                                 f"{args.get('in_channels', 1)}")
        if args.get("num_classes") != len(self.labels):
            errors.add("labels", f"{len(self.labels)} labels listed but architecture_args.num_classes is "
                                 f"{args.get('num_classes')}")
        ids = sorted(label.id for label in self.labels)
        if ids != list(range(len(self.labels))):
            errors.add("labels", f"label ids must be 0..{len(self.labels) - 1} each once, got {_show(ids)}")
        names = [label.name.strip().lower() for label in self.labels]
        twice = sorted({label.name for label in self.labels if names.count(label.name.strip().lower()) > 1})
        if twice:
            errors.add("labels", f"label names must differ (ignoring case), {_show(twice)} appear more than once")
        if len(self.patch_size) != self.spatial_dims:
            errors.add("patch_size", f"{len(self.patch_size)} sizes for a {self.spatial_dims}D network")
        errors.raise_if_any(source)


def _check_ensemble(names: Any, errors: _Errors) -> None:
    """2..MAX_ENSEMBLE distinct non-blank names."""
    if not (isinstance(names, list | tuple) and 2 <= len(names) <= MAX_ENSEMBLE):
        errors.add("ensemble", f"expected a list of 2-{MAX_ENSEMBLE} weight-set names, got {_show(names)}")
        return
    if all([_text(errors, f"ensemble[{i}]", n, empty=False) for i, n in enumerate(names)]) and \
            len(set(names)) != len(names):
        errors.add("ensemble", f"weight-set names must differ, got {_show(names)}")


def _check_inference(inf: Any, d: dict[str, Any], errors: _Errors) -> None:
    """The optional ``inference`` block (see :class:`ModelCard`)."""
    if not _typed(errors, "inference", inf, dict, f"an object with some of {INFERENCE_KEYS}"):
        return
    for key in inf:
        if key not in INFERENCE_KEYS:
            errors.add(f"inference.{key}", f"unknown key; this engine knows {INFERENCE_KEYS}; update MedSeg")
    if inf.get("windows", "medseg") not in WINDOW_LAYOUTS:
        errors.add("inference.windows", f"expected one of {WINDOW_LAYOUTS}, got {_show(inf.get('windows'))}")
    if not isinstance(inf.get("crop_nonzero", False), bool):
        errors.add("inference.crop_nonzero", f"expected true or false, got {_show(inf['crop_nonzero'])}")
    transpose = inf.get("transpose")
    if transpose is not None:
        if not (isinstance(transpose, list | tuple) and sorted(transpose) == [0, 1, 2]
                and all(type(t) is int for t in transpose)):
            errors.add("inference.transpose", f"expected a permutation of [0, 1, 2], got {_show(transpose)}")
        if d.get("orientation") is not None:
            errors.add("inference.transpose", "a card has either an orientation or a transpose of the stored "
                                              "voxel order, not both")
    inputs = d.get("inputs") if isinstance(d.get("inputs"), list) else []
    masks = inf.get("mask_normalization")
    if masks is not None and not (isinstance(masks, list | tuple) and len(masks) == len(inputs)
                                  and all(isinstance(m, bool) for m in masks)):
        errors.add("inference.mask_normalization", f"expected one true/false per input channel ({len(inputs)}), "
                                                   f"got {_show(masks)}")
    axes = inf.get("mirror_axes")
    dims = len(d["patch_size"]) if isinstance(d.get("patch_size"), list | tuple) else 3
    if axes is not None and not (isinstance(axes, list | tuple) and len(set(axes)) == len(axes) and all(
            type(a) is int and 0 <= a < dims for a in axes)):
        errors.add("inference.mirror_axes", f"expected distinct axes 0-{dims - 1}, got {_show(axes)}")


def _check_postprocess(pp: Any, errors: _Errors) -> None:
    """The optional ``postprocess`` block: some of POSTPROCESS_KEYS, flags true/false, an island size in mL."""
    if not _typed(errors, "postprocess", pp, dict, f"an object with some of {POSTPROCESS_KEYS}"):
        return
    for key in pp:
        if key not in POSTPROCESS_KEYS:
            errors.add(f"postprocess.{key}", f"unknown key; this engine knows {POSTPROCESS_KEYS}; update MedSeg")
    for key in ("largest_component", "fill_holes"):
        if key in pp and not isinstance(pp[key], bool):
            errors.add(f"postprocess.{key}", f"expected true or false, got {_show(pp[key])}")
    if "min_island_ml" in pp:
        _number(errors, "postprocess.min_island_ml", pp["min_island_ml"], (0.0, MAX_ISLAND_ML))


def _postprocess_dict(pp: dict[str, Any] | None) -> dict[str, Any] | None:
    """A checked ``postprocess`` block with all three fields (absent ones off)."""
    if pp is None:
        return None
    return {"largest_component": pp.get("largest_component", False), "fill_holes": pp.get("fill_holes", False),
            "min_island_ml": float(pp.get("min_island_ml", 0.0))}


def _check_texts(d: dict[str, Any], errors: _Errors) -> None:
    """The card's own strings: name and architecture (short, non-blank), summary, description, engine version."""
    _text(errors, "name", d.get("name"), empty=False)
    _text(errors, "architecture", d.get("architecture"), empty=False)
    _text(errors, "summary", d.get("summary"), MAX_TEXT_CHARS)
    if "description" in d:
        _text(errors, "description", d["description"], MAX_TEXT_CHARS)
    if "engine_version" in d:
        _text(errors, "engine_version", d["engine_version"])


def _check_patch(patch: Any, errors: _Errors) -> None:
    """2 or 3 sizes, each 1..MAX_PATCH_SIZE, at most MAX_PATCH_VOXELS in all."""
    if not (isinstance(patch, list | tuple) and len(patch) in (2, 3)):
        errors.add("patch_size", f"expected 2 or 3 integers 1-{MAX_PATCH_SIZE}, got {_show(patch)}")
    elif _numbers(errors, "patch_size", patch, len(patch), (1, MAX_PATCH_SIZE), integer=True) and (
            math.prod(patch) > MAX_PATCH_VOXELS):
        errors.add("patch_size", f"{_show(list(patch))} is {math.prod(patch):,} voxels per window; at most "
                                 f"{MAX_PATCH_VOXELS:,} are allowed")


def _parse_list(items: Any, where: str, parse: Any, errors: _Errors) -> list[Any]:
    if not isinstance(items, list) or not items:
        errors.add(where, f"expected a non-empty list, got {_show(items)}")
        return []
    if len(items) > MAX_CLASSES:
        errors.add(where, f"expected at most {MAX_CLASSES} entries, got {len(items)}")
        return []
    return [parse(item, f"{where}[{i}]", errors) for i, item in enumerate(items)]
