"""``medseg export``: DICOM SEG and SR from an existing ``.seg.nrrd`` and its source DICOM series; and the DICOM
output flags that ``medseg segment`` shares with it.

Choices:
- The ``.seg.nrrd`` is resampled (nearest neighbour, SimpleITK) onto the source series' grid, so a file that
  Slicer cropped to its segments (a sub-grid) comes back voxel for voxel; voxels outside it are background.
- Its segments are matched to the model's labels by name (case-insensitive): Slicer may renumber label values
  when it saves, names stay. Names, colors and codes in the DICOM files are the model card's; a segment with a
  name the model does not have is refused.
- Edited or not cannot be read from a file, so ``medseg export`` writes SEMIAUTOMATIC (a person may have changed
  it) unless ``--unedited`` says the file is MedSeg's output unchanged (then AUTOMATIC), or ``--ai-labels`` gives
  the AI's original label map saved with the result (``<name>_ai.nii.gz``, written by the panel's Save): then both
  are compared on the source grid (``medseg.edits.compare_masks``), the algorithm type follows (AUTOMATIC when no
  voxel changed), and the SR and PDF say per segment whether and how much it was edited.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .card import ModelCard
from .catalog import resolve_checkpoint
from .checkpoint import read_card
from .cli_report import add_report_arguments, report_plan, write_report_files
from .edits import any_edited, compare_masks
from .geometry import Geometry
from .io import SEGMENTATION_EXTENSION, read_image, read_segmentation
from .measure import LabelMeasurement, measure_labels
from .outputs import OutputSet
from .text import printable

__all__ = ["DicomExport", "add_dicom_arguments", "add_export_parser", "checkpoint_sha256", "cmd_export",
           "dicom_plan", "read_dicom_source", "write_dicom"]

log = logging.getLogger(__name__)


def add_dicom_arguments(p: argparse.ArgumentParser) -> None:
    """``--dicom-seg``, ``--dicom-sr`` and ``--seg-fractional`` (segment and export)."""
    p.add_argument("--dicom-seg", metavar="FILE", help="DICOM SEG (.dcm) of the labels, referencing the source DICOM "
                   "series (the input must be a DICOM folder)")
    p.add_argument("--dicom-sr", metavar="FILE", help="DICOM SR (TID 1500 measurement report, .dcm): per segment "
                   "volume (mL), largest diameter, mean intensity and the volume interval; needs --dicom-seg")
    p.add_argument("--seg-fractional", action="store_true", help="write the SEG as FRACTIONAL probability maps "
                   "instead of BINARY masks")


def dicom_plan(args: argparse.Namespace) -> dict[str, Path]:
    """The DICOM files asked for, keyed by flag; refuse an SR without a SEG and --seg-fractional without a SEG."""
    if args.dicom_sr and not args.dicom_seg:
        raise ValueError(f"--dicom-sr {args.dicom_sr!r}: the SR's measurements reference the segments of a DICOM SEG; "
                         f"give --dicom-seg FILE too")
    if args.seg_fractional and not args.dicom_seg:
        raise ValueError("--seg-fractional sets the type of the DICOM SEG: give --dicom-seg FILE too")
    return {f"--{flag.replace('_', '-')}": Path(getattr(args, flag)) for flag in ("dicom_seg", "dicom_sr")
            if getattr(args, flag)}


def read_dicom_source(path: str | Path):
    """The source series of a DICOM output (headers checked, UIDs present), read before any work."""
    _require_highdicom()
    from .dicom import read_source

    return read_source(path)


def _require_highdicom() -> None:
    try:
        import highdicom  # noqa: F401
        import pydicom  # noqa: F401
    except ImportError:
        raise ValueError("DICOM SEG and SR need the packages highdicom and pydicom: pip install 'medseg[dicom]'") \
            from None


def checkpoint_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a checkpoint file: the algorithm version written into the DICOM SEG."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DicomExport:
    """What a DICOM SEG and SR are made of, besides the label map: source, model, checkpoint hash, edited."""

    def __init__(self, source, card: ModelCard, sha256: str, edited: bool, edits: list | None = None):
        self.source, self.card, self.sha256, self.edited = source, card, sha256, edited
        self.edits = edits  # medseg.edits.EditStats per label when the AI's mask is known (the SR says how much)


def write_dicom(plan: dict[str, Path], outputs: OutputSet, export: DicomExport, labels: np.ndarray,
                geometry: Geometry, measurements: list[LabelMeasurement],
                probabilities: np.ndarray | None = None) -> None:
    """Build the SEG (and the SR) and write them into `outputs` (renamed into place with the run's other files)."""
    from .dicom import build_measurement_report, build_segmentation, dataset_bytes

    if "--dicom-seg" not in plan:
        return
    seg = build_segmentation(labels, geometry, export.source, export.card, checkpoint_sha256=export.sha256,
                             edited=export.edited, probabilities=probabilities)
    outputs.write_bytes(plan["--dicom-seg"], dataset_bytes(seg))
    if "--dicom-sr" in plan:
        sr = build_measurement_report(seg, measurements, export.source, export.card, edited=export.edited,
                                      edits=export.edits)
        outputs.write_bytes(plan["--dicom-sr"], dataset_bytes(sr))


# ---------------------------------------------------------------------------------------------- medseg export


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="DICOM SEG and SR from a .seg.nrrd and its source DICOM series",
        description="Make a DICOM SEG and a DICOM SR (TID 1500) from an existing Slicer segmentation (.seg.nrrd, "
                    "for example one corrected in Slicer) and the DICOM series it was made from. The segmentation is "
                    "resampled (nearest) onto the series' grid; its segments are matched to the model's labels by "
                    "name. Outputs are all or nothing. Exit codes: 0 done, 2 error, 1 unexpected error.")
    p.add_argument("segmentation", metavar="SEG.seg.nrrd", help="the segmentation to export")
    p.add_argument("--source", required=True, metavar="DICOM_DIR", help="folder of the source DICOM series")
    p.add_argument("--model", required=True, help="the model that made it (bundled name or checkpoint path): names, "
                   "colors, codes and the algorithm identification")
    p.add_argument("--unedited", action="store_true", help="the file is MedSeg's output unchanged: algorithm type "
                   "AUTOMATIC (default SEMIAUTOMATIC: it may have been corrected)")
    p.add_argument("--ai-labels", metavar="FILE", help="the AI's original label map saved with the result "
                   "(<name>_ai.nii.gz): the SR and PDF then say per segment whether and how much it was edited, and "
                   "the algorithm type is AUTOMATIC when nothing changed")
    add_dicom_arguments(p)
    add_report_arguments(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """Check the outputs and the source, map the segmentation onto the source grid, write SEG and SR together."""
    from .cli_segment import _check_output_folders, _check_plan

    if args.seg_fractional:
        raise ValueError("--seg-fractional needs the class probabilities, which a .seg.nrrd does not hold; use "
                         "medseg segment DICOM_DIR --dicom-seg FILE --seg-fractional")
    from .dicom import require_dicom_folder

    require_dicom_folder(args.source, "--source")
    plan = dicom_plan(args)
    if not plan and not (args.pdf or args.meshes):
        raise ValueError("nothing to write: give --dicom-seg FILE (and --dicom-sr FILE), --pdf FILE or --meshes DIR")
    _check_output_folders(list(plan.values()))
    if not str(args.segmentation).endswith(SEGMENTATION_EXTENSION):
        raise ValueError(f"{args.segmentation}: give a Slicer segmentation ({SEGMENTATION_EXTENSION})")
    checkpoint = resolve_checkpoint(args.model)
    card = read_card(checkpoint)
    plan.update(report_plan(args, card))
    if args.ai_labels and args.unedited:
        raise ValueError(f"--ai-labels {args.ai_labels} and --unedited: give one; with the AI's label map, whether "
                         f"the segmentation was edited is measured")
    _check_plan(plan, [Path(args.segmentation), Path(args.source), checkpoint]
                + ([Path(args.ai_labels)] if args.ai_labels else []))
    source = read_dicom_source(args.source) if "--dicom-seg" in plan else None
    image, geometry = read_image(args.source)
    labels = _labels_on_grid(args.segmentation, card, image.shape, geometry)
    measurements = measure_labels(labels, geometry, card.labels, image=image)
    edits = None
    if args.ai_labels:
        ai = _ai_labels_on_grid(args.ai_labels, card, image.shape, geometry)
        edits = compare_masks(ai, labels, geometry, [(lb.id, lb.name) for lb in card.foreground_labels])
    edited = any_edited(edits) if edits is not None else not args.unedited
    export = DicomExport(source, card, checkpoint_sha256(checkpoint), edited=edited, edits=edits)
    with OutputSet() as outputs:
        for path in plan.values():
            outputs.reserve(path)
        write_dicom(plan, outputs, export, labels, geometry, measurements)
        write_report_files(plan, outputs, image=image, labels=labels, geometry=geometry, card=card,
                           measurements=measurements, source=args.source,
                           edited=edited if edits is not None else (None if edited else False), edits=edits or ())
    for path in outputs.committed:
        print(f"wrote {path}")
    for m in measurements:
        if m.voxel_count:
            print(f"  {printable(m.name):<28} {m.volume_ml:10.3f} mL  ({m.voxel_count} voxels)")
    return 0


def _labels_on_grid(path: str, card: ModelCard, shape: tuple[int, ...], geometry: Geometry) -> np.ndarray:
    """The segmentation's label map with the card's label ids, resampled (nearest) onto the source grid."""
    labels, seg_geometry, segments = read_segmentation(path)
    by_name = {label.name.casefold(): label for label in card.foreground_labels}
    remap = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.uint16)
    for segment in segments:
        label = by_name.get(segment.name.casefold())
        if label is None:
            raise ValueError(f"{path}: segment {printable(segment.name)!r} is not a label of model {card.name} "
                             f"({', '.join(printable(x.name) for x in card.foreground_labels)}); rename it in Slicer "
                             f"or remove it, then export again")
        if segment.id < remap.size:
            remap[segment.id] = label.id
    mapped = remap[labels]
    out = _resample_nearest(mapped, seg_geometry, shape, geometry)
    if mapped.any() and not out.any():
        raise ValueError(f"{path} does not overlap the source series: none of its segments' voxels lie inside the "
                         f"series' volume; give the series it was made from")
    return out


def _ai_labels_on_grid(path: str, card: ModelCard, shape: tuple[int, ...], geometry: Geometry) -> np.ndarray:
    """The AI's original label map (the model's label ids), resampled (nearest) onto the source grid."""
    values, ai_geometry = read_image(path)
    ai = values.astype(np.int64)
    extra = sorted(set(np.unique(ai).tolist()) - {lb.id for lb in card.labels})
    if extra or not np.array_equal(ai, values):
        raise ValueError(f"--ai-labels {path}: values {extra[:10] or 'not integers'} are not label ids of model "
                         f"{card.name} (0..{len(card.labels) - 1}); give the <name>_ai.nii.gz saved with this result")
    out = _resample_nearest(ai.astype(np.uint16), ai_geometry, shape, geometry)
    if ai.any() and not out.any():
        raise ValueError(f"--ai-labels {path} does not overlap the source series; give the AI label map saved with "
                         f"this result")
    return out


def _resample_nearest(labels: np.ndarray, src: Geometry, shape: tuple[int, ...], dst: Geometry) -> np.ndarray:
    if labels.shape == tuple(shape) and src == dst:
        return labels
    image = src.to_sitk(labels)
    reference = dst.to_sitk(np.zeros(shape, dtype=labels.dtype))
    log.info("resampling the segmentation (nearest) onto the source series' grid")
    out = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID())
    return sitk.GetArrayFromImage(out)

