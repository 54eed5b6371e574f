"""The model card: what a checkpoint is, what it expects and how it was made.

A card travels inside the checkpoint (JSON in the safetensors metadata, see ``checkpoint.py``). It is
validated on every read: an error names the bad field (``labels[2].color``) and what was expected.

Conventions: ``spacing`` is in mm in ITK/Slicer (x, y, z) order; ``patch_size`` is in array order
(z, y, x) for 3D networks and (y, x) for 2D networks, which run slice by slice along ``slice_axis``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from . import __version__

__all__ = ["FORMAT_VERSION", "InputChannel", "Label", "ModelCard", "Normalization", "card_error"]

FORMAT_VERSION = 1
MODALITIES = ("CT", "MR", "PT", "US", "EM", "OT")
NORMALIZATIONS = ("zscore", "ct", "minmax", "none")


class _Errors:
    """Collects every problem of a card so that one error lists them all."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, problem: str) -> None:
        self.items.append(f"{where}: {problem}")

    def raise_if_any(self, source: str) -> None:
        if self.items:
            raise ValueError(card_error(source, self.items))


def card_error(source: str, problems: list[str]) -> str:
    lines = "\n  - ".join(problems)
    return f"invalid model card in {source}:\n  - {lines}\nFix these fields of the card (medseg info shows it)."


def _typed(errors: _Errors, where: str, value: Any, kind: type | tuple[type, ...], what: str) -> bool:
    if isinstance(value, bool) or not isinstance(value, kind):
        errors.add(where, f"expected {what}, got {value!r}")
        return False
    return True


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
        pairs = {}
        for key in ("percentiles", "window"):
            v = d.get(key)
            if v is not None and not (isinstance(v, list | tuple) and len(v) == 2 and v[0] < v[1]):
                errors.add(f"{where}.{key}", f"expected [low, high] with low < high, got {v!r}")
            pairs[key] = tuple(float(x) for x in v) if v is not None else None
        if kind == "ct":
            if pairs["window"] is None:
                errors.add(f"{where}.window", "a 'ct' normalisation needs a window [low, high] in HU")
            if not isinstance(d.get("std"), int | float) or d.get("std", 0) <= 0:
                errors.add(f"{where}.std", f"a 'ct' normalisation needs std > 0, got {d.get('std')!r}")
            if not isinstance(d.get("mean"), int | float):
                errors.add(f"{where}.mean", f"a 'ct' normalisation needs a numeric mean, got {d.get('mean')!r}")
        return Normalization(kind, pairs["percentiles"], pairs["window"], d.get("mean"), d.get("std"))


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
        ok = _typed(errors, f"{where}.name", d.get("name"), str, "a channel name such as 'T1w' or 'CT'")
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
        ok = _typed(errors, f"{where}.id", d.get("id"), int, "an integer label id")
        ok &= _typed(errors, f"{where}.name", d.get("name"), str, "a label name")
        color = d.get("color", [128, 128, 128])
        if not (isinstance(color, list | tuple) and len(color) == 3 and all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color
        )):
            errors.add(f"{where}.color", f"expected 3 integers 0-255 (RGB), got {color!r}")
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
            errors.add(f"{where}.{key}", f"expected {{'scheme', 'code', 'meaning'}} strings, got {code!r}")
            ok = False
    return ok


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
        training: at least ``dataset`` and ``license``; also split, epochs, time, hardware when trained here.
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

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str, source: str = "model card") -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: the model card is not valid JSON ({exc})") from None
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, d: Any, source: str = "model card") -> ModelCard:
        """Validate and build a card; ValueError lists every bad field by its path."""
        errors = _Errors()
        if not isinstance(d, dict):
            errors.add("card", f"expected a JSON object, got {type(d).__name__}")
            errors.raise_if_any(source)
        fv = d.get("format_version", FORMAT_VERSION)
        if fv != FORMAT_VERSION:
            errors.add("format_version", f"this engine reads format {FORMAT_VERSION}, got {fv!r}; update MedSeg")
        for key in ("name", "summary", "architecture"):
            _typed(errors, key, d.get(key), str, "a string")
        args = d.get("architecture_args")
        _typed(errors, "architecture_args", args, dict, "an object of constructor arguments")
        inputs = _parse_list(d.get("inputs"), "inputs", InputChannel.parse, errors)
        labels = _parse_list(d.get("labels"), "labels", Label.parse, errors)
        patch = d.get("patch_size")
        if not (isinstance(patch, list | tuple) and len(patch) in (2, 3) and all(
            isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in patch
        )):
            errors.add("patch_size", f"expected 2 or 3 positive integers, got {patch!r}")
        spacing = d.get("spacing")
        if spacing is not None and not (
            isinstance(spacing, list | tuple) and len(spacing) == 3 and all(
                isinstance(s, int | float) and not isinstance(s, bool) and s > 0 for s in spacing)
        ):
            errors.add("spacing", f"expected 3 positive numbers in mm (x, y, z) or null, got {spacing!r}")
        training = d.get("training")
        if _typed(errors, "training", training, dict, "an object with 'dataset' and 'license'"):
            for key in ("dataset", "license"):
                _typed(errors, f"training.{key}", training.get(key), str, "a string (say 'unknown' if unknown)")
        _typed(errors, "metrics", d.get("metrics", {}), dict, "an object")
        if d.get("slice_axis", 0) not in (0, 1, 2):
            errors.add("slice_axis", f"expected 0, 1 or 2, got {d.get('slice_axis')!r}")
        errors.raise_if_any(source)
        card = cls(
            name=d["name"], summary=d["summary"], architecture=d["architecture"], architecture_args=dict(args),
            inputs=tuple(inputs), labels=tuple(labels), patch_size=tuple(patch), training=dict(training),
            spacing=tuple(float(s) for s in spacing) if spacing is not None else None,
            slice_axis=d.get("slice_axis", 0), metrics=dict(d.get("metrics", {})),
            description=str(d.get("description", "")), engine_version=str(d.get("engine_version", "unknown")),
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
            errors.add("labels", f"label ids must be 0..{len(self.labels) - 1} each once, got {ids}")
        if len(self.patch_size) != self.spatial_dims:
            errors.add("patch_size", f"{len(self.patch_size)} sizes for a {self.spatial_dims}D network")
        errors.raise_if_any(source)


def _parse_list(items: Any, where: str, parse: Any, errors: _Errors) -> list[Any]:
    if not isinstance(items, list) or not items:
        errors.add(where, f"expected a non-empty list, got {items!r}")
        return []
    return [parse(item, f"{where}[{i}]", errors) for i, item in enumerate(items)]
