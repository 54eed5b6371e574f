"""``--pdf`` and ``--meshes``, shared by ``medseg segment`` and ``medseg export``: plan, check, write.

Both go through the run's :class:`~medseg.outputs.OutputSet` with every other output (all or nothing). Their
paths are added to the run's plan, so the command's checks (no output is a folder, an input, inside a DICOM
input folder, or another output) cover them. ``--meshes DIR`` writes ``<slug>.stl`` and ``<slug>.obj`` for every
foreground label of the model (names by :func:`~medseg.outputs.unique_slugs`); a label that was not found gets
files without triangles, so that a folder never mixes two runs' meshes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .card import ModelCard
from .geometry import Geometry
from .measure import LabelMeasurement
from .outputs import OutputSet

__all__ = ["add_report_arguments", "report_plan", "source_identifiers", "write_report_files"]


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    """``--pdf FILE`` and ``--meshes DIR``."""
    p.add_argument("--pdf", metavar="FILE", help="PDF report (1-2 pages): patient/study identifiers (DICOM input), "
                   "volume table, key images with the contours and the uncertainty (or --activation) heat map in "
                   "radiological convention, the model and its limits")
    p.add_argument("--meshes", metavar="DIR", help="existing folder for one closed, smoothed surface per label as "
                   "<label>.stl and <label>.obj, in LPS millimetres (3D Slicer's default for STL)")


def report_plan(args: argparse.Namespace, card: ModelCard) -> dict[str, Path]:
    """The files of ``--pdf`` and ``--meshes``, keyed by what the user knows them as; checked before any work."""
    plan: dict[str, Path] = {}
    pdf, meshes = getattr(args, "pdf", None), getattr(args, "meshes", None)
    if pdf:
        if not pdf.lower().endswith(".pdf"):
            raise ValueError(f"--pdf {pdf!r}: the report is a .pdf file")
        if not Path(pdf).resolve().parent.is_dir():
            raise FileNotFoundError(f"output folder of {pdf!r} does not exist; create it first")
        plan["--pdf"] = Path(pdf)
    if meshes:
        _require_meshes()
        folder = Path(meshes)
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else "does not exist; create it first"
            raise FileNotFoundError(f"--meshes {meshes!r} {what} (the folder gets one .stl and .obj per label)")
        from .meshes import mesh_paths

        paths = mesh_paths(folder, card.labels)
        for label in card.foreground_labels:
            stl, obj = paths[label.id]
            plan[f"--meshes (label {label.id} {label.name!r}) STL"] = stl
            plan[f"--meshes (label {label.id} {label.name!r}) OBJ"] = obj
    if pdf:
        _require_report()
    return plan


def _require_report() -> None:
    try:
        import matplotlib  # noqa: F401
        import reportlab  # noqa: F401
    except ImportError:
        raise ValueError("--pdf needs the packages reportlab and matplotlib: pip install 'medseg[report]'") from None


def _require_meshes() -> None:
    try:
        import skimage  # noqa: F401
        import trimesh  # noqa: F401
    except ImportError:
        raise ValueError("--meshes needs the packages scikit-image and trimesh: pip install 'medseg[meshes]'") \
            from None


def source_identifiers(path: str | Path) -> dict[str, str]:
    """Patient/study identifiers of a DICOM folder input; empty for a file."""
    if not Path(path).is_dir():
        return {}
    from .report_pdf import dicom_identifiers

    return dicom_identifiers(path)


def write_report_files(plan: dict[str, Path], outputs: OutputSet, *, image: np.ndarray, labels: np.ndarray,
                       geometry: Geometry, card: ModelCard, measurements: Sequence[LabelMeasurement],
                       source: str, overlay: np.ndarray | None = None, overlay_name: str = "",
                       edited: bool | None = False, warnings: Sequence[str] = (),
                       edits: Sequence = ()) -> None:
    """Write the planned PDF and meshes into `outputs` (nothing when neither was asked for).

    Args:
        image: the first input channel `(Z, Y, X)`; labels: the label map on its grid.
        source: the input as the user gave it (a DICOM folder gives the patient/study identifiers).
        overlay: an uncertainty or Grad-CAM map in [0, 1], named by `overlay_name`.
        edited: the mask was changed by a user after the model made it; None: it may have been (``export``).
        edits: per label, the AI's mask against this one (``medseg.edits.compare_masks``), for the PDF's lines on
            how much each edited segment changed.
    """
    if "--pdf" in plan:
        from .report_pdf import PdfReport, write_pdf

        report = PdfReport(image, labels, geometry, card, list(measurements), overlay=overlay,
                           overlay_name=overlay_name, identifiers=source_identifiers(source), source=str(source),
                           edited=edited, warnings=tuple(warnings), edits=tuple(edits))
        write_pdf(plan["--pdf"], report, outputs=outputs)
    mesh_keys = [key for key in plan if key.startswith("--meshes ")]
    if mesh_keys:
        from .meshes import label_meshes, write_meshes

        folder = plan[mesh_keys[0]].parent
        write_meshes(folder, label_meshes(labels, geometry, card.labels), card.labels, outputs=outputs)
