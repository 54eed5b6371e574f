"""DICOM SEG (highdicom) from a label map on the grid of its source series.

Choices:
- One segment per foreground label with voxels, numbered 1..n in the card's order; a label without voxels is
  left out (logged): DICOM lets a segment have no frames, but Slicer refuses to export empty segments and
  several readers fail on them, and an empty segment reports nothing. A label map with no voxels at all is
  refused. The segment's tracking ID is the label name; the SR refers to segments by number and tracking UID.
- Codes: the card's ``Label.terminology`` (category, type and an optional ``typeModifier``, which goes into the
  type's SegmentedPropertyTypeModifierCodeSequence); a label without terminology is SCT Tissue / Tissue.
- Algorithm identification: name = the card's name, version = the checkpoint file's SHA-256 (64 hex digits,
  exactly the weights used; the card name alone can be reused by a retrained model), family = Artificial
  Intelligence, parameters = the MedSeg engine version and the architecture.
- Type AUTOMATIC, or SEMIAUTOMATIC when the mask was edited. BINARY by default; FRACTIONAL (PROBABILITY,
  0-255) from the class probabilities as an option.
- Frames are the label map's slices at each source instance's ImagePositionPatient (:mod:`.source`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import numpy as np

from .. import __version__
from ..card import Label, ModelCard
from ..geometry import Geometry
from ..text import printable
from .source import SourceSeries

__all__ = ["MANUFACTURER", "build_segmentation", "dataset_bytes", "segment_labels"]

log = logging.getLogger(__name__)

MANUFACTURER = "MedSeg"
SEG_SERIES_NUMBER = 9701
_LO = 64  # characters of a DICOM LO value


def segment_labels(labels: np.ndarray, card: ModelCard) -> list[Label]:
    """The card's foreground labels that have voxels in `labels`: segment ``n`` (1-based) is the n-th of them.

    Raises:
        ValueError: no label has any voxel.
    """
    present = set(np.unique(labels).tolist())
    out = [label for label in card.foreground_labels if label.id in present]
    empty = [printable(label.name) for label in card.foreground_labels if label.id not in present]
    if not out:
        raise ValueError("the segmentation is empty (no voxel of any label): a DICOM SEG needs at least one segment "
                         "with voxels; check the input and the model, or draw the segments before exporting")
    if empty:
        log.warning("left out of the DICOM SEG and SR, no voxels: %s", ", ".join(empty))
    return out


def build_segmentation(labels: np.ndarray, geometry: Geometry, source: SourceSeries, card: ModelCard, *,
                       checkpoint_sha256: str, edited: bool = False, probabilities: np.ndarray | None = None):
    """A ``highdicom.seg.Segmentation`` of `labels` referencing every instance of `source`.

    Args:
        labels: integer label map ``(Z, Y, X)`` on `geometry` (the source series' grid).
        geometry: where `labels` is; each source instance is matched to its slice by position.
        source: the source series (:func:`~medseg.dicom.source.read_source`).
        card: the model card (names, colors, terminology, model name).
        checkpoint_sha256: SHA-256 (hex) of the checkpoint file: the algorithm version.
        edited: the mask was corrected by hand: algorithm type SEMIAUTOMATIC instead of AUTOMATIC.
        probabilities: ``(K, Z, Y, X)`` class probabilities (index == label id): a FRACTIONAL SEG of them.

    Raises:
        ValueError: `source` is not the grid of `labels`, or no label has voxels.
    """
    import highdicom as hd
    from pydicom.uid import generate_uid

    slices = source.slices(geometry, labels.shape)
    chosen = segment_labels(labels, card)
    descriptions = [_description(n, label, card, checkpoint_sha256, edited) for n, label in enumerate(chosen, 1)]
    if probabilities is None:
        remap = np.zeros(int(labels.max()) + 1, dtype=np.uint16 if len(chosen) > 255 else np.uint8)
        for n, label in enumerate(chosen, 1):
            remap[label.id] = n
        pixels, kind = remap[labels[slices]], "BINARY"
    else:
        pixels = np.stack([probabilities[label.id][slices] for label in chosen], axis=-1).astype(np.float32)
        pixels, kind = np.clip(pixels, 0.0, 1.0), "FRACTIONAL"
    return hd.seg.Segmentation(
        source_images=list(source.datasets), pixel_array=pixels, segmentation_type=kind,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=_lo(card.name), software_versions=f"MedSeg {__version__}", device_serial_number="1",
        series_description=_lo(f"MedSeg {card.name}" + (" (edited)" if edited else "")),
        content_label="MEDSEG", content_description=_lo(printable(card.summary)))


def _description(number: int, label: Label, card: ModelCard, sha256: str, edited: bool):
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    term = label.terminology or {}
    category = _code(term.get("category")) or hd.sr.CodedConcept(*_TISSUE)
    kind = _code(term.get("type")) or hd.sr.CodedConcept(*_TISSUE)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=_lo(printable(card.name)), family=codes.cid7162.ArtificialIntelligence, version=sha256[:_LO],
        source=MANUFACTURER, parameters={"engine": f"MedSeg {__version__}", "architecture": card.architecture})
    description = hd.seg.SegmentDescription(
        segment_number=number, segment_label=_lo(printable(label.name)), segmented_property_category=category,
        segmented_property_type=kind, algorithm_type="SEMIAUTOMATIC" if edited else "AUTOMATIC",
        algorithm_identification=algorithm, tracking_uid=generate_uid(), tracking_id=_lo(printable(label.name)),
        display_color=hd.color.CIELabColor.from_rgb(*label.color))
    modifier = _code(term.get("typeModifier"))
    if modifier is not None:
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [modifier]
    return description


_TISSUE = ("85756007", "SCT", "Tissue")


def _code(code: dict[str, str] | None):
    import highdicom as hd

    if not code or not code.get("code"):
        return None
    return hd.sr.CodedConcept(value=code["code"], scheme_designator=code["scheme"], meaning=_lo(code["meaning"]))


def _lo(text: str) -> str:
    """`text` cut to a DICOM LO value (64 characters, no backslash)."""
    return str(text).replace("\\", "/")[:_LO]


def dataset_bytes(dataset) -> bytes:
    """The DICOM file (preamble, file meta, data set) of `dataset`, e.g. for ``OutputSet.write_bytes``."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def source_frames(labels: np.ndarray, geometry: Geometry, source: SourceSeries) -> Sequence[int]:
    """The slice of `labels` of each source instance (the SEG's frame order before empty frames are left out)."""
    return source.slices(geometry, labels.shape)
