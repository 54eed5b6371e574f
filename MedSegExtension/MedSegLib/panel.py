"""What the MedSeg panel shows and what it sends to the bridge, without Qt (tested in pytest).

``MedSeg.py`` binds widgets to its parameter node and calls these: the model picker's entries and the card text under
it, the channel labels from the card's inputs, the device line, the run settings read from the parameter node (turned
into the engine's ``SegmentOptions`` and the bridge's ``ApplyOptions``), the overlay picker's names, and where the
``Resources`` folder is. Nothing here imports PyTorch: the engine is imported only when options are built.
"""

from __future__ import annotations

import enum
import html
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.text import printable  # standard library only: the panel still loads without PyTorch

from .i18n import tr as _

if TYPE_CHECKING:
    from medseg.card import ModelCard
    from medseg.inference import SegmentOptions

    from .run import ApplyOptions

__all__ = [
    "CHANNEL_FIELDS",
    "Device",
    "ModelChoice",
    "RunSettings",
    "activation_choices",
    "card_tooltip",
    "channel_labels",
    "default_model",
    "describe_card",
    "device_summary",
    "finetuned_title",
    "format_calibration",
    "format_metrics",
    "format_postprocess",
    "html_text",
    "input_volumes",
    "model_choices",
    "overlay_label",
    "postprocess_defaults",
    "resource_path",
    "review_item_text",
    "saved_paths",
    "settings_from_parameters",
]

log = logging.getLogger(__name__)

# Parameter node fields of the input channels, in the model card's channel order (the panel has three selectors).
CHANNEL_FIELDS = ("inputVolume", "channel2Volume", "channel3Volume")


class Device(enum.Enum):
    """The device picker (the parameter node stores the member; the engine gets its value)."""

    AUTO = "auto"
    GPU = "cuda"
    CPU = "cpu"

    @staticmethod
    def label(member: Device) -> str:  # the parameter node wrapper's combo-box text for an enum member
        return {"auto": _("Auto (GPU if found)"), "cuda": _("GPU (CUDA)"), "cpu": _("CPU")}[member.value]


def resource_path(module_file: str | os.PathLike[str], relative: str) -> Path:
    """A file of the extension's ``Resources``: beside the module once installed (``<module dir>/Resources``), the
    repository's top-level ``Resources`` in the source tree (module dir = ``MedSegExtension/``)."""
    here = Path(module_file).resolve().parent
    candidates = [here / "Resources" / relative, here.parent / "Resources" / relative]
    return next((c for c in candidates if c.exists()), candidates[0])


# ---------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model picker.

    Attributes:
        key: what the parameter node stores and the engine resolves: a bundled model's name or a checkpoint path.
        text: the entry's text.
        card: the model card (read from the file's header, weights not loaded).
        bundled: shipped in ``Resources/Models``.
    """

    key: str
    text: str
    card: ModelCard
    bundled: bool

    @property
    def tooltip(self) -> str:
        return card_tooltip(self.card, None if self.bundled else self.key)


DEFAULT_MODEL = "hippocampus-unet3d"  # what a first Segment runs: the model of the bundled sample, quick on a CPU


def default_model(keys: Sequence[str] | Any) -> str:
    """The picker's first selection among model `keys`: :data:`DEFAULT_MODEL` when offered, else the first key
    ("" for none), so a larger bundled model (an abdominal CT one) sorting first is never picked unasked."""
    keys = list(keys)
    return DEFAULT_MODEL if DEFAULT_MODEL in keys else (keys[0] if keys else "")


def model_choices(bundled: Sequence[Any], user_paths: Sequence[str],
                  read_card: Callable[[str], ModelCard]) -> tuple[list[ModelChoice], list[str]]:
    """The picker's entries: bundled models (``medseg.catalog.bundled_models()``), then the user's checkpoints.

    Returns:
        (choices, problems): a user checkpoint that is gone or unreadable is left out and its problem listed.
    """
    choices = [ModelChoice(e.name, printable(_("{name} (bundled)").format(name=e.name)), e.card, True)
               for e in bundled]
    problems = []
    for path in user_paths:
        if any(c.key == path for c in choices):
            continue
        try:
            card = read_card(path)
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        text = finetuned_title(card) or printable(f"{card.name} ({Path(path).name})")
        choices.append(ModelChoice(path, text, card, False))
    return choices, problems


def finetuned_title(card: ModelCard) -> str | None:
    """A fine-tuned model's name in the picker, from its card's lineage (``training.fine_tune``):
    ``hippocampus-unet3d (fine-tuned 2026-12-02, 10 cases)``; None for a model that was not fine-tuned."""
    lineage = (card.training or {}).get("fine_tune")
    if not isinstance(lineage, dict):
        return None
    parent = (lineage.get("parent") or {}).get("name") or card.name
    day = str(lineage.get("date") or "")[:10] or "?"
    used = len((lineage.get("corrections") or {}).get("used") or [])
    template = (_("{parent} (fine-tuned {day}, {used} case)") if used == 1
                else _("{parent} (fine-tuned {day}, {used} cases)"))
    return printable(template.format(parent=parent, day=day, used=used))


def saved_paths(value: Any) -> list[str]:
    """The checkpoint list kept in Slicer's settings (QSettings gives None, a string or a list)."""
    if value is None or value == "":
        return []
    items = [value] if isinstance(value, str) else list(value)
    return list(dict.fromkeys(str(v) for v in items if v))


def format_metrics(metrics: dict[str, Any]) -> str:
    """Validation metrics in one line: ``Dice: anterior 0.891, posterior 0.874 (mean 0.883; 26 cases)``."""
    if not metrics:
        return "no validation metrics in the card"
    parts = []
    for key in ("dice", "iou"):
        per_label = metrics.get(key)
        if isinstance(per_label, dict) and per_label:
            text = ", ".join(f"{name} {value:.3f}" for name, value in per_label.items()
                             if isinstance(value, float | int))
            mean = metrics.get(f"mean_{key}")
            parts.append(f"{'Dice' if key == 'dice' else 'IoU'}: {text}" + (
                f" (mean {mean:.3f})" if isinstance(mean, float | int) else ""))
    if not parts:
        parts = [f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
                 if isinstance(v, float | int | str)]
    cases = metrics.get("validation_cases")
    return "; ".join(parts) + (f"; {cases} validation cases" if isinstance(cases, int) else "")


def describe_card(card: ModelCard) -> str:
    """The text under the model picker: what the model does, on what it was trained, how well it did, its default
    post-processing (only when the card has one).

    Plain text with every control character removed (:func:`medseg.text.printable`): the card comes from the
    checkpoint's author. The module shows it in a label whose text format is plain text.
    """
    inputs = ", ".join(f"{c.name} ({c.modality})" for c in card.inputs)
    labels = ", ".join(label.name for label in card.foreground_labels)
    training = card.training
    lines = [card.summary,
             _("{architecture}, {dims}D; input: {inputs}; labels: {labels}").format(
                 architecture=card.architecture, dims=card.spatial_dims, inputs=inputs, labels=labels),
             _("Trained on {dataset} (license: {license})").format(
                 dataset=training.get("dataset", _("an unnamed data set")), license=training.get("license", "?")),
             _("Validation: {metrics}").format(metrics=format_metrics(card.metrics)),
             *([format_postprocess(card.postprocess)] if card.postprocess else []),
             format_calibration(card.calibration)]
    return "\n".join(printable(line) for line in lines)


def format_calibration(calibration: dict[str, Any] | None) -> str:
    """The card's calibration in one line: temperature and ECE, and the 90 % volume interval's coverage."""
    if not calibration:
        return _("Calibration: none (probabilities uncalibrated; volumes with a TTA range, not an interval)")
    parts = []
    if "temperature" in calibration:
        ece = (_(", ECE {before:.3f} -> {after:.3f}").format(before=calibration["ece_before"],
                                                             after=calibration["ece_after"])
               if isinstance(calibration.get("ece_before"), float) and isinstance(calibration.get("ece_after"), float)
               else "")
        parts.append(_("temperature {temperature:.3g}{ece}").format(temperature=calibration["temperature"], ece=ece))
    interval = calibration.get("volume_interval")
    if interval:
        coverage = [v.get("coverage_loo") for v in interval["per_label"].values()]
        known = [c for c in coverage if isinstance(c, float)]
        parts.append(_("volumes with a {level:g} % interval").format(level=interval["level"] * 100)
                     + (_(" (validation coverage {low:.2f}-{high:.2f})").format(low=min(known), high=max(known))
                        if known else ""))
    return _("Calibration: {parts}").format(parts="; ".join(parts))


def format_postprocess(postprocess: dict[str, Any] | None) -> str:
    """The card's default post-processing in one line (``ModelCard.postprocess``, checked by the card)."""
    steps = _postprocess_fields(postprocess)
    parts = [text for on, text in ((steps["largestComponent"], _("largest component")),
                                   (steps["minIslandMl"] > 0, _("islands < {ml:g} mL removed").format(
                                       ml=steps["minIslandMl"])),
                                   (steps["fillHoles"], _("holes filled"))) if on]
    return _("Post-processing by default: {steps}").format(steps=", ".join(parts) if parts else _("none"))


def postprocess_defaults(card: ModelCard | None) -> dict[str, Any]:
    """The post-processing checkboxes' values for a model just picked: its card's default (``ModelCard.postprocess``;
    all off for a card without one or no model), keyed by the parameter node's fields (``largestComponent``,
    ``fillHoles``, ``minIslandMl``). The panel sets them on its parameter node, the web page on its state."""
    return _postprocess_fields(card.postprocess if card is not None else None)


def _postprocess_fields(postprocess: dict[str, Any] | None) -> dict[str, Any]:
    pp = postprocess or {}
    return {"largestComponent": bool(pp.get("largest_component", False)),
            "fillHoles": bool(pp.get("fill_holes", False)), "minIslandMl": float(pp.get("min_island_ml", 0.0))}


def done_message(seconds: float, device: str, warnings: Sequence[str] = ()) -> str:
    """The status line after a run: how long it took and where, then each warning of the engine (an input unlike the
    model's training data, :func:`medseg.domain.domain_warnings`) for the user to read before trusting the result."""
    text = _("Done in {seconds:.1f} s on {device}.").format(seconds=seconds, device=printable(device))
    if warnings:
        text += " " + _("Check the result: {warnings}").format(warnings=warnings_text(warnings).replace("\n", " "))
    return text


def warnings_text(warnings: Sequence[str]) -> str:
    """The engine's warnings as plain text, one per line, without control characters (for a message box)."""
    return "\n".join(printable(w) for w in warnings)


def card_tooltip(card: ModelCard, path: str | None = None) -> str:
    """The whole card, for the picker's tooltip."""
    spacing = _("input spacing") if card.spacing is None else " x ".join(f"{s:g}" for s in card.spacing) + " mm"
    lines = [describe_card(card),
             printable(_("Patch {patch}, spacing {spacing}, engine {engine}").format(
                 patch=list(card.patch_size), spacing=spacing, engine=card.engine_version))]
    if card.description:
        lines.append(printable(card.description, newlines=True))
    if path:
        lines.append(printable(_("File: {path}").format(path=path)))
    return "\n".join(lines)


def html_text(text: str) -> str:
    """Plain text as Qt rich text that shows it verbatim, for tooltips (Qt renders a tooltip that looks like
    HTML as HTML, so a card's ``<img src=...>`` would otherwise be rendered): control characters removed, ``<``,
    ``>`` and ``&`` escaped, line breaks kept."""
    lines = printable(text, newlines=True).split("\n")
    return "<qt>" + "<br>".join(html.escape(line, quote=False) for line in lines) + "</qt>"


def activation_choices(card: ModelCard | None) -> list[tuple[str, str, str]]:
    """The Grad-CAM class picker's ``(text, data, tooltip)`` items: each foreground label, its name shown without
    control characters, the exact name kept as the data the engine is given."""
    return [(printable(label.name), label.name, "") for label in card.foreground_labels] if card else []


def channel_labels(card: ModelCard | None) -> list[str]:
    """Labels of the three channel selectors ("" hides a selector): the card's channel names and modalities.

    Raises:
        ValueError: the model needs more channels than the panel has selectors.
    """
    if card is None:
        return [_("Input volume:"), "", ""]
    if len(card.inputs) > len(CHANNEL_FIELDS):
        raise ValueError(_("model {model!r} needs {count} input volumes; the panel has {fields}: run it with "
                           "`medseg segment` on the command line").format(model=card.name, count=len(card.inputs),
                                                                          fields=len(CHANNEL_FIELDS)))
    labels = [printable(f"{c.name} ({c.modality}):") for c in card.inputs]
    return labels + [""] * (len(CHANNEL_FIELDS) - len(labels))


def input_volumes(parameters: Any, card: ModelCard) -> list:
    """The volume nodes for the model's channels, in the card's order (None where the user picked none)."""
    channel_labels(card)  # refuses a model with too many channels
    return [getattr(parameters, name) for name in CHANNEL_FIELDS[:len(card.inputs)]]


def device_summary(found: Sequence[str]) -> str:
    """The line beside the device picker, from ``medseg.device.available_devices()``."""
    gpus = [d for d in found if d != "cpu"]
    return (_("Found: {gpus} and the CPU").format(gpus=", ".join(gpus)) if gpus
            else _("No GPU found: runs on the CPU"))


# ---------------------------------------------------------------------------------------------- run settings


@dataclass(frozen=True)
class RunSettings:
    """The panel's options for one run (read from the parameter node by :func:`settings_from_parameters`)."""

    model: str
    device: str = "auto"
    tta: bool = False
    overlap: float = 0.5
    prune_level: int | None = None  # UNet++ only
    accurate: bool = False  # UNet++ only
    largest_component: bool = False
    fill_holes: bool = False
    min_island_ml: float = 0.0
    uncertainty: bool = True  # also the review list (it ranks the regions of high entropy: no extra pass)
    probabilities: bool = False
    activation_class: str = ""  # "": no Grad-CAM
    replace: bool = True
    overlay_opacity: float = 0.5

    def segment_options(self) -> SegmentOptions:
        """The engine's options (imports the engine)."""
        from medseg.inference import SegmentOptions
        from medseg.postprocess import PostprocessOptions

        return SegmentOptions(
            overlap=self.overlap, tta=self.tta, probabilities=self.probabilities, uncertainty=self.uncertainty,
            activation_classes=(self.activation_class,) if self.activation_class else (),
            postprocess=PostprocessOptions(self.largest_component, self.fill_holes, self.min_island_ml),
            prune_level=self.prune_level, accurate=self.accurate, review=self.uncertainty)

    def apply_options(self) -> ApplyOptions:
        """How the bridge puts the result in the scene (Grad-CAM shown first, else uncertainty)."""
        from .run import ApplyOptions

        return ApplyOptions(replace=self.replace, show_overlay="auto", overlay_opacity=self.overlay_opacity)


def settings_from_parameters(parameters: Any, card: ModelCard) -> RunSettings:
    """The parameter node's values for `card`'s model (UNet++ options only for UNet++, a Grad-CAM class only if the
    model has it).

    Raises:
        ValueError: no model picked.
    """
    if not parameters.modelName:
        raise ValueError(_("no model selected; pick one in the Model list (or add a checkpoint file)"))
    unetpp = card.architecture == "unetpp"
    names = {label.name for label in card.foreground_labels}
    device = parameters.device
    return RunSettings(
        model=parameters.modelName, device=device.value if isinstance(device, Device) else str(device),
        tta=bool(parameters.tta), overlap=float(parameters.overlap),
        prune_level=int(parameters.pruneLevel) if unetpp else None, accurate=bool(parameters.accurate) and unetpp,
        largest_component=bool(parameters.largestComponent), fill_holes=bool(parameters.fillHoles),
        min_island_ml=float(parameters.minIslandMl), uncertainty=bool(parameters.uncertainty),
        probabilities=bool(parameters.probabilities),
        activation_class=parameters.activationClass if parameters.activationClass in names else "",
        replace=bool(parameters.replacePrevious), overlay_opacity=float(parameters.overlayOpacity))


def review_item_text(region: Any) -> str:
    """The review list's line for a ``medseg.review.ReviewRegion``: number, segment, size and mean uncertainty."""
    return printable(_("{number}. {segment}: {volume:.0f} mm3, uncertainty {uncertainty:.2f}").format(
        number=region.id, segment=region.label_name, volume=region.volume_ml * 1000,
        uncertainty=region.mean_uncertainty))


def overlay_label(kind: str) -> str:
    """The overlay picker's text for an overlay kind of ``MedSegLib.run``."""
    if kind.startswith("activation:"):
        return printable(_("Grad-CAM: {name}").format(name=kind.split(":", 1)[1]))
    if kind.startswith("probability:"):
        return printable(_("Probability: {name}").format(name=kind.split(":", 1)[1]))
    return {"uncertainty": _("Uncertainty (entropy)"), "tta_variance": _("TTA variance")}.get(kind, kind)
