""""Save as a training case": a corrected result into a local corrections folder for ``medseg finetune``.

The folder has the Medical Segmentation Decathlon layout that ``medseg train`` and ``medseg finetune`` read:

- ``imagesTr/<case>.nii.gz``: the source volume, voxel for voxel;
- ``labelsTr/<case>.nii.gz``: the corrected mask (the segments as they are now, label values = the model's ids;
  segments the user added that the model does not have are left out, with a warning);
- ``predictionsTr/<case>.nii.gz``: the AI's original mask (kept with the result, :mod:`MedSegLib.corrections`);
- ``provenance/<case>.json``: model name, checkpoint SHA-256, date, and the edit statistics
  (``medseg.edits.compare_masks``);
- ``dataset.json``: labels, channel, and the list of cases, updated with each new case.

Every file of one case and the updated ``dataset.json`` are renamed into place together
(:class:`medseg.outputs.OutputSet`): a failure leaves the folder as it was.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
from pathlib import Path

import slicer
import vtk

from medseg.card import ModelCard
from medseg.edits import compare_masks
from medseg.geometry import Geometry
from medseg.io import write_image
from medseg.outputs import OutputSet, safe_slug
from medseg.text import printable

from .corrections import ai_labels
from .dicom_export import _model
from .i18n import tr as _
from .segmentation import labelmap_from_segmentation, segment_labels, source_volume
from .volumes import matrix_from_vtk

__all__ = ["save_training_case"]

log = logging.getLogger(__name__)
SUBFOLDERS = ("imagesTr", "labelsTr", "predictionsTr", "provenance")


def _dataset(folder: Path, card: ModelCard) -> dict:
    """The folder's ``dataset.json`` (a new one for an empty folder); its labels must be the model's."""
    labels = {str(lb.id): lb.name for lb in card.labels}
    path = folder / "dataset.json"
    if not path.is_file():
        return {"name": f"MedSeg corrections ({card.name})", "description": "cases corrected in 3D Slicer",
                "modality": {str(i): c.name for i, c in enumerate(card.inputs)}, "labels": labels,
                "license": "local clinical data: not for redistribution",
                "source": "MedSeg \"Save as a training case\"",
                "numTraining": 0, "training": []}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(_("{path} cannot be read ({error}); fix it or pick another corrections folder").format(
            path=path, error=exc)) from None
    if meta.get("labels") != labels:
        raise ValueError(_("{path} holds cases with labels {found}, but model {model} has {labels}: pick a "
                           "corrections folder for this model").format(path=path, found=meta.get("labels"),
                                                                       model=printable(card.name), labels=labels))
    return meta


def _case_name(folder: Path, name: str) -> str:
    base, n = safe_slug(name) or "case", 1
    case = base
    while (folder / "imagesTr" / f"{case}.nii.gz").exists():
        n += 1
        case = f"{base}_{n}"
    return case


def save_training_case(scene, segmentation_node, folder: str | os.PathLike[str], volume_node=None,
                       card: ModelCard | None = None, checkpoint_sha256: str | None = None,
                       case_name: str | None = None, now: dt.datetime | None = None,
                       model: str | None = None) -> dict[str, Path]:
    """Save the result's image, corrected mask, AI mask and provenance as one case of a corrections folder.

    Args:
        scene: the MRML scene (kept for symmetry with the other bridge calls; nodes are read, none is added).
        segmentation_node: a MedSeg result (with its AI mask kept), possibly edited.
        folder: the corrections folder (created if missing).
        volume_node: the source volume (None: the result's own).
        card, checkpoint_sha256: the model's card and checkpoint hash (None: read from the bundled model or
            checkpoint the result names).
        case_name: the case's file name (None: the source volume's name; ``_2``, ``_3`` added if taken).
        now: the date recorded (None: now, UTC).
        model: the bundled model's name or the checkpoint path that made the result (None: the name the result
            records, which only finds a bundled model); its card must be the one that made the result.

    Returns:
        ``{"image"|"label"|"prediction"|"provenance"|"dataset": path}``.

    Raises:
        ValueError: not a MedSeg result, no AI mask, a multi-channel model, or a folder for another model.
        OutputError: a file could not be written; nothing was changed.
    """
    del scene
    card, sha256 = _model(segmentation_node, model, card, checkpoint_sha256, False)
    if len(card.inputs) != 1:
        raise ValueError(_("model {model} takes {channels} channels; saving training cases supports "
                           "single-channel models only").format(model=printable(card.name), channels=len(card.inputs)))
    volume_node = source_volume(segmentation_node, volume_node)
    ai = ai_labels(segmentation_node, volume_node)
    if ai is None:
        raise ValueError(_("{name!r} has no AI mask kept with it (a result from an older MedSeg, or not a result): "
                           "segment the volume again, correct it, then save it").format(
            name=segmentation_node.GetName()))
    ids = {lb.id for lb in card.labels}
    pairs = segment_labels(segmentation_node)
    extra = [label.name for _sid, label in pairs if label.id not in ids]
    if extra:
        log.warning("segments %s are not labels of model %s: left out of the training case", extra, card.name)
    pairs = [(sid, label) for sid, label in pairs if label.id in ids]
    corrected = labelmap_from_segmentation(segmentation_node, volume_node, [sid for sid, _label in pairs],
                                           [label.id for _sid, label in pairs])
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    geometry = Geometry.from_ijk_to_ras(matrix_from_vtk(ijk_to_ras))
    image = slicer.util.arrayFromVolume(volume_node)
    stats = compare_masks(ai, corrected, geometry, {lb.id: lb.name for lb in card.labels})
    folder = Path(folder)
    meta = _dataset(folder, card)
    case = _case_name(folder, case_name or volume_node.GetName())
    now = now or dt.datetime.now(dt.UTC)
    provenance = {"case": case, "model": card.name, "checkpoint_sha256": sha256,
                  "date": now.isoformat(timespec="seconds"), "source_volume": volume_node.GetName(),
                  "segmentation": segmentation_node.GetName(), "edited": any(s.edited for s in stats),
                  "edits": [dataclasses.asdict(s) for s in stats], "left_out_segments": extra}
    meta["training"] = [*meta.get("training", []),
                        {"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"}]
    meta["numTraining"] = len(meta["training"])
    paths = {"image": folder / "imagesTr" / f"{case}.nii.gz", "label": folder / "labelsTr" / f"{case}.nii.gz",
             "prediction": folder / "predictionsTr" / f"{case}.nii.gz",
             "provenance": folder / "provenance" / f"{case}.json", "dataset": folder / "dataset.json"}
    for sub in SUBFOLDERS:
        (folder / sub).mkdir(parents=True, exist_ok=True)
    with OutputSet() as outputs:
        write_image(paths["image"], image, geometry, outputs=outputs)
        write_image(paths["label"], corrected.astype("uint8"), geometry, outputs=outputs)
        write_image(paths["prediction"], ai.astype("uint8"), geometry, outputs=outputs)
        outputs.write_text(paths["provenance"], json.dumps(provenance, indent=1, default=str) + "\n")
        outputs.write_text(paths["dataset"], json.dumps(meta, indent=1) + "\n")
    log.info("saved training case %s into %s", case, folder)
    return paths
