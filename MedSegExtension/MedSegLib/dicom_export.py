"""The panel's Export step: DICOM SEG, DICOM SR (TID 1500), a PDF report and surface meshes of a result as it is now.

The segmentation is taken as the user left it (after any correction in the Segment Editor): its segments are
merged into one label map on the source volume's own voxel grid (:func:`MedSegLib.segmentation.labelmap_from_
segmentation`; where segments overlap, the later one wins, as in Save), then mapped (nearest neighbour) onto the grid
of the source DICOM series as the engine reads it, measured again by the engine (``medseg.measure.measure_labels``,
with the model's soft volume and volume interval kept from the segments' tags, as the table does) and written by the
engine's own writers (``medseg.dicom``, ``medseg.report_pdf``, ``medseg.meshes``) through one
``medseg.outputs.OutputSet``: every file is built in memory first, then all are renamed into place together, or
none is.

Where the source files come from: a volume loaded by Slicer's DICOM module carries the node attribute
``DICOM.instanceUIDs`` (space-separated SOP Instance UIDs); each is looked up in Slicer's DICOM database
(``slicer.dicomDatabase.fileForInstance``; passed in as `dicom_database`, so tests give a plain object of the same
shape) and the files are linked (copied where links are not allowed) into a temporary folder holding only that
series. An explicit `source_folder` is used instead when given (its series must then contain the volume's instances,
when the volume names them).

Names, colors and codes are the segments' (a segment the user added gets the next free label id and, without a
terminology, SCT Tissue); the algorithm identification is the model's card and checkpoint. Algorithm type:
SEMIAUTOMATIC when :mod:`MedSegLib.corrections` finds an edit (or cannot tell: a result without its AI mask), else
AUTOMATIC. Segments without voxels are left out of the SEG and SR (as the engine does; logged); a result with no
voxel at all is refused. With the AI mask at hand, the SR says per segment whether it was edited and, for an edited
one, its AI volume, the mL added and removed and Dice/HD95 between the two (``medseg.dicom.sr``), as the PDF does.

Nothing here changes the scene. Sending to a PACS is left to Slicer's own DICOM module.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
import vtk

from medseg.card import Label, ModelCard
from medseg.geometry import Geometry
from medseg.measure import LabelMeasurement, measure_labels
from medseg.outputs import OutputSet, safe_slug
from medseg.text import printable

from .corrections import edit_stats, result_edited
from .i18n import tr as _
from .segmentation import MODEL_ATTRIBUTE, labelmap_from_segmentation, model_values, segment_labels, source_volume
from .volumes import matrix_from_vtk

__all__ = ["INSTANCE_UIDS_ATTRIBUTE", "ExportedFiles", "export_result"]

log = logging.getLogger(__name__)

INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"  # set by Slicer's DICOM scalar volume plugin on the volume node


@dataclass(frozen=True)
class ExportedFiles:
    """The files written by :func:`export_result` (None / empty for those not asked for)."""

    dicom_seg: Path | None
    dicom_sr: Path | None
    pdf: Path | None
    meshes: tuple[Path, ...]
    edited: bool

    @property
    def paths(self) -> list[Path]:
        return [p for p in (self.dicom_seg, self.dicom_sr, self.pdf) if p is not None] + list(self.meshes)


def export_result(scene, segmentation_node, output_folder: str | os.PathLike[str], *, dicom_seg: bool = True,
                  dicom_sr: bool = True, pdf: bool = True, meshes: bool = True,
                  source_folder: str | os.PathLike[str] | None = None, dicom_database=None,
                  model: str | None = None, card: ModelCard | None = None,
                  checkpoint_sha256: str | None = None) -> ExportedFiles:
    """Write the chosen files of `segmentation_node` (as it is now) into `output_folder`, all or nothing.

    Args:
        scene: the MRML scene (read only).
        segmentation_node: a MedSeg result (its ``MedSeg.SourceVolume`` reference names the volume).
        output_folder: an existing folder; files are ``<name>_SEG.dcm``, ``<name>_SR.dcm``, ``<name>_report.pdf``
            and ``<name>_meshes/<segment>.stl|.obj`` (``<name>``: the segmentation's name, made file-safe).
        dicom_seg, dicom_sr, pdf, meshes: which files to write (the SR needs the SEG).
        source_folder: the folder of the source DICOM series (default: the volume's instances found in
            `dicom_database`).
        dicom_database: an object with ``fileForInstance(uid) -> path`` (default: ``slicer.dicomDatabase``).
        model: the result's model, a bundled name or a checkpoint path (default: the result's ``MedSeg.Model``,
            a bundled model's name).
        card: the model card itself, instead of `model` (tests, scripts).
        checkpoint_sha256: SHA-256 of the checkpoint, the SEG's algorithm version (required with `card`).

    Raises:
        ValueError: nothing asked for, an SR without a SEG, no source series, a volume not loaded from DICOM and no
            folder, empty UIDs, missing instance files, an unknown model, an empty segmentation (named, with the fix).
        FileNotFoundError: `output_folder` does not exist.
        OutputError: a file cannot be written (then none is).
    """
    del scene  # the nodes hold every reference needed; kept in the signature for the logic facade's callers
    wanted_dicom = dicom_seg or dicom_sr
    _check_request(segmentation_node, output_folder, dicom_seg, dicom_sr, pdf, meshes)
    volume = source_volume(segmentation_node)
    card, sha256 = _model(segmentation_node, model, card, checkpoint_sha256, wanted_dicom)
    with _source_series(volume, source_folder, dicom_database) as folder:
        from medseg.io import read_image

        image, geometry = read_image(folder)
        source = _read_source(folder) if wanted_dicom else None
        _check_instances(volume, source, source_folder)
        pairs = segment_labels(segmentation_node)
        specs = [label for _sid, label in pairs]
        labels = _labels_on_source_grid(segmentation_node, volume, pairs, image.shape, geometry)
        measurements = _measure(segmentation_node, pairs, labels, geometry, image)
        stats = edit_stats(segmentation_node, volume)
        edited = True if stats is None else result_edited(segmentation_node, stats)
        export_card = _export_card(card, specs)
        base = safe_slug(segmentation_node.GetName())
        folder_out = Path(output_folder)
        files: dict[Path, bytes] = {}
        seg_path = sr_path = pdf_path = None
        if wanted_dicom:
            seg_path, sr_path = _dicom_files(files, folder_out, base, dicom_sr, labels, geometry, source, export_card,
                                             sha256, edited, measurements, None if stats is None else stats.values())
        if pdf:
            pdf_path = _pdf_file(files, folder_out / f"{base}_report.pdf", image, labels, geometry, export_card,
                                 measurements, folder, None if stats is None else edited, (stats or {}).values())
        mesh_paths = _mesh_files(files, folder_out / f"{base}_meshes", labels, geometry, specs) if meshes else []
    _write_all(files, folder_out / f"{base}_meshes" if meshes else None)
    log.info("exported %s", ", ".join(str(p) for p in files))
    return ExportedFiles(seg_path, sr_path, pdf_path, tuple(mesh_paths), edited)


# ---------------------------------------------------------------------------------------------- checks


def _check_request(segmentation_node, output_folder, dicom_seg, dicom_sr, pdf, meshes) -> None:
    name = segmentation_node.GetName()
    if not (dicom_seg or dicom_sr or pdf or meshes):
        raise ValueError(_("nothing to export from {name!r}: tick DICOM SEG, DICOM SR, PDF or meshes").format(
            name=name))
    if dicom_sr and not dicom_seg:
        raise ValueError(_("the DICOM SR of {name!r} refers to the segments of its DICOM SEG: tick DICOM SEG "
                           "too").format(name=name))
    if not Path(output_folder).is_dir():
        raise FileNotFoundError(_("output folder {folder!r} does not exist; pick an existing folder").format(
            folder=os.fspath(output_folder)))
    if dicom_seg:
        _require_highdicom()


def _require_highdicom() -> None:
    try:
        import highdicom  # noqa: F401
        import pydicom  # noqa: F401
    except ImportError:
        raise ValueError(_("DICOM SEG and SR need the packages highdicom and pydicom: pip install 'medseg[dicom]' "
                           "(in Slicer: the MedSeg panel's dependency installer), or untick them")) from None


def _model(segmentation_node, model: str | None, card: ModelCard | None, sha256: str | None,
           dicom: bool) -> tuple[ModelCard, str]:
    """The result's model card and checkpoint hash: given, or read from `model` or the bundled model the result
    names."""
    if card is not None:
        if dicom and not sha256:
            raise ValueError(_("exporting {name!r} with a given model card needs its checkpoint's SHA-256 (the "
                               "DICOM SEG's algorithm version): pass checkpoint_sha256").format(
                name=segmentation_node.GetName()))
        return card, sha256 or ""
    name = model or segmentation_node.GetAttribute(MODEL_ATTRIBUTE)
    if not name:
        raise ValueError(_("segmentation {name!r} is not a MedSeg result (no {attribute} attribute): segment the "
                           "volume with MedSeg first").format(name=segmentation_node.GetName(),
                                                              attribute=MODEL_ATTRIBUTE))
    from medseg.catalog import resolve_checkpoint
    from medseg.checkpoint import read_card
    from medseg.cli_export import checkpoint_sha256

    try:
        checkpoint = resolve_checkpoint(name)
    except (KeyError, FileNotFoundError):
        raise ValueError(_("model {model!r} of {name!r} is neither a bundled model nor a checkpoint file: add its "
                           "checkpoint to the MedSeg panel's model list").format(
            model=printable(name), name=segmentation_node.GetName())) from None
    card = read_card(checkpoint)
    made_by = segmentation_node.GetAttribute(MODEL_ATTRIBUTE)
    if made_by and card.name != made_by:
        raise ValueError(_("checkpoint {checkpoint} is model {model!r}, but {name!r} was made by {made_by!r}: pick "
                           "that model's checkpoint").format(checkpoint=checkpoint, model=printable(card.name),
                                                             name=segmentation_node.GetName(),
                                                             made_by=printable(made_by)))
    return card, checkpoint_sha256(checkpoint)


# ---------------------------------------------------------------------------------------------- source series


@contextmanager
def _source_series(volume, source_folder, dicom_database):
    """The folder holding exactly the volume's source series (a temporary one of links when from the database)."""
    if source_folder is not None:
        if not Path(source_folder).is_dir():
            raise ValueError(_("source folder {folder!r} of volume {volume!r} does not exist; pick the folder of the "
                               "DICOM series the volume was loaded from").format(folder=os.fspath(source_folder),
                                                                                 volume=volume.GetName()))
        yield Path(source_folder)
        return
    files = _instance_files(volume, dicom_database)
    with tempfile.TemporaryDirectory(prefix="medseg-export-") as tmp:
        for n, path in enumerate(files):
            target = Path(tmp) / f"{n:06d}.dcm"
            try:
                os.symlink(path, target)
            except OSError:  # Windows without the symlink privilege
                shutil.copyfile(path, target)
        yield Path(tmp)


def _instance_files(volume, dicom_database) -> list[str]:
    name = volume.GetName()
    attribute = volume.GetAttribute(INSTANCE_UIDS_ATTRIBUTE)
    if attribute is None:
        raise ValueError(_("volume {volume!r} was not loaded from DICOM (it has no {attribute}): load the series "
                           "with Slicer's DICOM module, or give the folder of its DICOM series").format(
            volume=name, attribute=INSTANCE_UIDS_ATTRIBUTE))
    uids = attribute.split()
    if not uids:
        raise ValueError(_("volume {volume!r} has an empty {attribute}: load the series again with Slicer's DICOM "
                           "module, or give the folder of its DICOM series").format(
            volume=name, attribute=INSTANCE_UIDS_ATTRIBUTE))
    database = dicom_database if dicom_database is not None else getattr(slicer, "dicomDatabase", None)
    if database is None:
        raise ValueError(_("no DICOM database to find the files of volume {volume!r}: give the folder of its DICOM "
                           "series").format(volume=name))
    files, missing = [], []
    for uid in uids:
        path = database.fileForInstance(uid)
        (files if path and Path(path).is_file() else missing).append(path or uid)
    if missing:
        raise ValueError(_("{missing} of the {total} DICOM files of volume {volume!r} are not in the DICOM database "
                           "or were moved (first: {first}); import the series into the DICOM database again, or "
                           "give the folder of its DICOM series").format(missing=len(missing), total=len(uids),
                                                                          volume=name, first=missing[0]))
    return files


def _read_source(folder: Path):
    from medseg.dicom import read_source

    return read_source(folder)


def _check_instances(volume, source, source_folder) -> None:
    """With a given folder, the volume's own instances (when it names them) must be in the folder's series."""
    if source is None or source_folder is None:
        return
    uids = set((volume.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split())
    found = {str(ds.SOPInstanceUID) for ds in source.datasets}
    if uids and not uids <= found:
        raise ValueError(_("the DICOM series in {folder!r} is not the one volume {volume!r} was loaded from "
                           "({missing} of its instances are missing); pick that series' folder").format(
            folder=os.fspath(source_folder), volume=volume.GetName(), missing=len(uids - found)))


# ---------------------------------------------------------------------------------------------- label map


def _volume_geometry(volume) -> Geometry:
    """The volume's own voxel grid (as loaded from its files; a parent transform is not part of the DICOM)."""
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return Geometry.from_ijk_to_ras(matrix_from_vtk(matrix))


def _labels_on_source_grid(segmentation_node, volume, pairs, shape, geometry: Geometry) -> np.ndarray:
    """The segments merged into one label map on the volume's grid, then mapped (nearest) onto the series' grid."""
    from medseg.cli_export import _resample_nearest

    on_volume = labelmap_from_segmentation(segmentation_node, volume, [sid for sid, _label in pairs],
                                           [label.id for _sid, label in pairs])
    labels = _resample_nearest(on_volume, _volume_geometry(volume), tuple(shape), geometry)
    if on_volume.any() and not labels.any():
        raise ValueError(_("segmentation {name!r} does not overlap the DICOM series of volume {volume!r}; give the "
                           "series the volume was loaded from").format(name=segmentation_node.GetName(),
                                                                       volume=volume.GetName()))
    return labels


def _measure(segmentation_node, pairs, labels, geometry, image) -> list[LabelMeasurement]:
    """The engine's measurements of the label map, with the model's soft volume and interval from the tags."""
    segmentation = segmentation_node.GetSegmentation()
    out = []
    specs = [label for _sid, label in pairs]
    for (sid, _label), m in zip(pairs, measure_labels(labels, geometry, specs, image=image), strict=True):
        soft, interval = model_values(segmentation.GetSegment(sid))
        out.append(dataclasses.replace(m, soft_volume_ml=soft, volume_interval_ml=interval))
    return out


def _export_card(card: ModelCard, specs: list[Label]) -> ModelCard:
    """The card with the segments' names, colors and codes by label id (ids 0..n-1 kept whole)."""
    by_id = {label.id: label for label in card.labels}
    by_id.update({label.id: label for label in specs})
    top = max(by_id)
    labels = tuple(by_id.get(i, Label(i, f"unused {i}")) for i in range(top + 1))
    return dataclasses.replace(card, labels=labels)


# ---------------------------------------------------------------------------------------------- files


def _dicom_files(files, folder, base, with_sr, labels, geometry, source, card, sha256, edited, measurements,
                 edits=None):
    from medseg.dicom import build_measurement_report, build_segmentation, dataset_bytes

    seg = build_segmentation(labels, geometry, source, card, checkpoint_sha256=sha256, edited=edited)
    seg_path = folder / f"{base}_SEG.dcm"
    files[seg_path] = dataset_bytes(seg)
    if not with_sr:
        return seg_path, None
    sr_path = folder / f"{base}_SR.dcm"
    files[sr_path] = dataset_bytes(build_measurement_report(seg, measurements, source, card, edited=edited,
                                                            edits=None if edits is None else list(edits)))
    return seg_path, sr_path


def _pdf_file(files, path, image, labels, geometry, card, measurements, source_folder, edited, edits=()) -> Path:
    try:
        from medseg.report_pdf import PdfReport, dicom_identifiers, pdf_bytes
    except ImportError as exc:
        raise ValueError(_("the PDF report needs the package {package}: pip install 'medseg[report]', or untick "
                           "PDF").format(package=exc.name)) from None
    report = PdfReport(image, labels, geometry, card, list(measurements), identifiers=dicom_identifiers(source_folder),
                       source="DICOM series", edited=edited, edits=tuple(edits))
    files[path] = pdf_bytes(report)
    return path


def _mesh_files(files, folder, labels, geometry, specs) -> list[Path]:
    try:
        from medseg.meshes import label_meshes, mesh_paths, obj_bytes, stl_bytes
    except ImportError as exc:
        raise ValueError(_("the surface meshes need the package {package}: pip install 'medseg[meshes]', or untick "
                           "meshes").format(package=exc.name)) from None
    paths = mesh_paths(folder, specs)
    out = []
    for mesh in label_meshes(labels, geometry, specs):
        stl, obj = paths[mesh.label_id]
        files[stl], files[obj] = stl_bytes(mesh), obj_bytes(mesh)
        out += [stl, obj]
    return out


def _write_all(files: dict[Path, bytes], mesh_folder: Path | None) -> None:
    """Every file renamed into place together; a meshes folder made here is removed again on failure."""
    made = mesh_folder is not None and not mesh_folder.exists()
    if made:
        mesh_folder.mkdir()
    try:
        with OutputSet() as outputs:
            for path in files:
                outputs.reserve(path)
            for path, data in files.items():
                outputs.write_bytes(path, data)
    except BaseException:
        if made:
            shutil.rmtree(mesh_folder, ignore_errors=True)
        raise
