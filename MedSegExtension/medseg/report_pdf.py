"""A PDF report a clinician reads at a glance: who, what was segmented, how large, by which model, and its limits.

Layout by reportlab (platypus: paragraphs, tables, page footer), figures by matplotlib (its object API and Agg
canvas only: no pyplot, no global backend). Contents, in order: patient and study identifiers (from the DICOM
header when the input is a DICOM series), whether the mask was edited, warnings (input unlike the training data),
the volume table (volume, the volume interval when there is one, largest diameter), key images through each
segment's centroid, what the model is (name, summary, training data, validation Dice, intended use and limits
from its card), and on every page a line saying that it is not a diagnosis. Every text from a model card or a
DICOM header is passed through :func:`medseg.text.printable` and escaped before reportlab's paragraph markup sees it.

Key images are shown in the radiological convention. The arrays are first brought to the ``LPS`` voxel order
(:func:`medseg.orientation.reorientation`: index axes i, j, k point to the patient's left, posterior, superior),
whatever order they were stored in, and then sliced so that

=========  ==================  ===================
plane      rows (top->bottom)  columns (left->right)
=========  ==================  ===================
axial      anterior->posterior  right->left
coronal    superior->inferior  right->left
sagittal   superior->inferior  anterior->posterior
=========  ==================  ===================

i.e. the patient's right is on the image's left in axial and coronal images (as if facing the patient, seen
from the feet), with the orientation letters on the image edges and a scale bar in millimetres; pixels are
drawn with their real aspect (spacing). An oblique grid is shown in the planes of its nearest axis-aligned
orientation (the letters are then those of the nearest patient axes; the page says so).

Fonts: DejaVu Sans, shipped with matplotlib, is embedded, so Latin, Greek and Cyrillic names print; other
scripts (CJK) print as empty boxes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from .card import ModelCard
from .edits import EditStats
from .geometry import Geometry
from .measure import LabelMeasurement
from .orientation import reorientation
from .outputs import OutputSet
from .text import printable

__all__ = ["DISPLAY_ORIENTATION", "DisplayVolume", "PdfReport", "Plane", "dicom_identifiers", "display_window",
           "figure_rgb", "key_image_figure", "pdf_bytes", "write_pdf"]

DISPLAY_ORIENTATION = "LPS"
IDENTIFIER_TAGS = {"PatientName": "0010|0010", "PatientID": "0010|0020", "StudyDate": "0008|0020",
                   "Modality": "0008|0060", "StudyDescription": "0008|1030"}
_CHARSETS = {"ISO_IR 100": "latin_1", "ISO_IR 101": "iso8859_2", "ISO_IR 109": "iso8859_3", "ISO_IR 110": "iso8859_4",
             "ISO_IR 144": "iso8859_5", "ISO_IR 127": "iso8859_6", "ISO_IR 126": "iso8859_7", "ISO_IR 138": "iso8859_8",
             "ISO_IR 148": "iso8859_9", "ISO_IR 192": "utf_8", "GB18030": "gb18030", "GBK": "gbk"}
NOT_A_DIAGNOSIS = ("Not a diagnosis: produced automatically by research software; contours and volumes must be "
                   "checked by a qualified clinician.")
_LETTER_COLOR, _SCALE_COLOR = "#ffd700", "#00e5ff"
MAX_ROWS_WITH_ABSENT = 12  # above this many labels, the table lists the labels found; the absent ones in one line


# ---------------------------------------------------------------------------------------------- identifiers


def dicom_identifiers(folder: str | os.PathLike[str]) -> dict[str, str]:
    """PatientName, PatientID, StudyDate, Modality, StudyDescription of the largest DICOM series in `folder`.

    Read from the first file's header by SimpleITK (GDCM) and decoded with its SpecificCharacterSet (the single
    byte ISO 8859 sets, UTF-8, GB18030/GBK; others keep replacement characters). Absent or empty tags are left
    out; a folder without DICOM files gives an empty dict.
    """
    import SimpleITK as sitk

    series = [sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
              for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))]
    if not series:
        return {}
    reader = sitk.ImageFileReader()
    reader.SetFileName(max(series, key=len)[0])
    reader.ReadImageInformation()
    charset = reader.GetMetaData("0008|0005").strip() if reader.HasMetaDataKey("0008|0005") else ""
    found = {}
    for name, tag in IDENTIFIER_TAGS.items():
        if reader.HasMetaDataKey(tag):
            value = printable(_decode(reader.GetMetaData(tag), charset)).strip()
            if value:
                found[name] = value
    return found


def _decode(value: str, charset: str) -> str:
    """GDCM's text (undecodable bytes as surrogate escapes) decoded with the DICOM character set."""
    raw = value.encode("utf-8", "surrogateescape")
    codec = _CHARSETS.get(charset.split("\\")[-1].strip(), "utf_8")
    return raw.decode(codec, "replace")


def _person_name(value: str) -> str:
    """DICOM ``Family^Given^Middle^Prefix^Suffix`` -> ``Family, Given Middle``."""
    parts = [p.strip() for p in value.split("=")[0].split("^")]
    given = " ".join(p for p in parts[1:3] if p)
    return f"{parts[0]}, {given}" if parts[0] and given else parts[0] or given


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


# ---------------------------------------------------------------------------------------------- key images


@dataclass(frozen=True)
class Plane:
    """One key image as displayed: arrays indexed (row, column) from the top-left corner.

    Attributes:
        name: ``axial``, ``coronal`` or ``sagittal``.
        image, labels, overlay: the 2D slices (overlay None when there is none).
        pixel_mm: (row, column) size of a pixel in mm.
        letters: patient directions at the (top, bottom, left, right) edges.
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    overlay: np.ndarray | None
    pixel_mm: tuple[float, float]
    letters: tuple[str, str, str, str]


@dataclass(frozen=True)
class DisplayVolume:
    """Image, labels and overlay brought to the ``LPS`` voxel order (see the module notes)."""

    image: np.ndarray
    labels: np.ndarray
    overlay: np.ndarray | None
    geometry: Geometry
    oblique: bool

    @classmethod
    def from_arrays(cls, image: np.ndarray, labels: np.ndarray, geometry: Geometry,
                    overlay: np.ndarray | None = None) -> DisplayVolume:
        """From `(Z, Y, X)` arrays on `geometry`, in any voxel order."""
        if image.shape != labels.shape or (overlay is not None and overlay.shape != labels.shape):
            raise ValueError(f"image {image.shape}, labels {labels.shape} and overlay "
                             f"{None if overlay is None else overlay.shape} must be on the same grid")
        turn = reorientation(geometry, labels.shape, DISPLAY_ORIENTATION)
        direction = np.asarray(turn.geometry.direction)
        oblique = not np.allclose(np.abs(direction), np.eye(3), atol=1e-3)
        return cls(turn.apply(image), turn.apply(labels), None if overlay is None else turn.apply(overlay),
                   turn.geometry, oblique)

    def index_of(self, point_lps: Sequence[float]) -> tuple[int, int, int]:
        """Nearest voxel `(k, j, i)` of an LPS point, clipped to the grid."""
        m = self.geometry.matrix
        ijk = np.linalg.solve(m[:3, :3], np.asarray(point_lps, dtype=float) - m[:3, 3])
        kji = np.rint(ijk[::-1]).astype(int)
        return tuple(int(np.clip(v, 0, n - 1)) for v, n in zip(kji, self.labels.shape, strict=True))

    def planes(self, point_lps: Sequence[float]) -> list[Plane]:
        """Axial, coronal and sagittal planes through the voxel nearest `point_lps` (radiological display)."""
        k, j, i = self.index_of(point_lps)
        sx, sy, sz = self.geometry.spacing
        cuts = [("axial", lambda a: a[k], (sy, sx), ("A", "P", "R", "L")),
                ("coronal", lambda a: a[::-1, j, :], (sz, sx), ("S", "I", "R", "L")),
                ("sagittal", lambda a: a[::-1, :, i], (sz, sy), ("S", "I", "A", "P"))]
        return [Plane(name, cut(self.image), cut(self.labels), None if self.overlay is None else cut(self.overlay),
                      pixel, letters) for name, cut, pixel, letters in cuts]


def _scale_length(width_mm: float) -> float:
    """The largest of 1, 2, 5, 10, 20, 50, 100, 200 mm that is at most a quarter of `width_mm`."""
    steps = [s for s in (1, 2, 5, 10, 20, 50, 100, 200) if s <= width_mm / 4]
    return float(steps[-1]) if steps else width_mm / 4


def _view_window(plane: Plane, label_id: int, min_mm: float = 60.0) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) mm: the segment with a margin, at least `min_mm` wide, within the slice."""
    rows_mm, cols_mm = plane.pixel_mm
    height, width = plane.labels.shape[0] * rows_mm, plane.labels.shape[1] * cols_mm
    where = np.argwhere(plane.labels == label_id)
    if len(where) == 0:
        return 0.0, width, 0.0, height
    lo, hi = where.min(0) * (rows_mm, cols_mm), (where.max(0) + 1) * (rows_mm, cols_mm)
    center, half = (lo + hi) / 2, np.maximum((hi - lo) * 0.8, min_mm / 2)
    y0, x0 = np.maximum(center - half, 0)
    y1, x1 = np.minimum(center + half, (height, width))
    return float(x0), float(x1), float(y0), float(y1)


def _draw_plane(ax, plane: Plane, label_id: int, colors: Mapping[int, tuple[int, int, int]],
                window: tuple[float, float]) -> object | None:
    rows_mm, cols_mm = plane.pixel_mm
    h, w = plane.image.shape
    extent = (0, w * cols_mm, h * rows_mm, 0)
    ax.imshow(plane.image, cmap="gray", vmin=window[0], vmax=window[1], extent=extent, interpolation="bilinear")
    heat = None
    if plane.overlay is not None:
        shown = np.ma.masked_less(np.clip(plane.overlay, 0, 1), 0.05)
        heat = ax.imshow(shown, cmap="inferno", vmin=0, vmax=1, alpha=0.55, extent=extent, interpolation="bilinear")
    xs, ys = (np.arange(w) + 0.5) * cols_mm, (np.arange(h) + 0.5) * rows_mm
    for value, color in colors.items():
        if value and np.any(plane.labels == value):
            ax.contour(xs, ys, (plane.labels == value).astype(float), levels=[0.5],
                       colors=[tuple(c / 255 for c in color)], linewidths=1.6 if value == label_id else 0.7)
    x0, x1, y0, y1 = _view_window(plane, label_id)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)
    ax.set_axis_off()
    ax.set_facecolor("black")
    top, bottom, left, right = plane.letters
    for text, x, y, ha, va in ((top, 0.5, 0.98, "center", "top"), (bottom, 0.5, 0.02, "center", "bottom"),
                               (left, 0.02, 0.5, "left", "center"), (right, 0.98, 0.5, "right", "center")):
        ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, color=_LETTER_COLOR, fontsize=9, fontweight="bold")
    bar = _scale_length(x1 - x0)
    bx, by = x0 + 0.06 * (x1 - x0), y1 - 0.07 * (y1 - y0)
    ax.plot([bx, bx + bar], [by, by], color=_SCALE_COLOR, linewidth=2.5, solid_capstyle="butt")
    ax.text(bx + bar / 2, by - 0.02 * (y1 - y0), f"{bar:g} mm", color=_SCALE_COLOR, fontsize=7, ha="center",
            va="bottom")
    ax.set_title(plane.name, fontsize=8, color="#333333", pad=2)
    return heat


def key_image_figure(display: DisplayVolume, measurement: LabelMeasurement,
                     colors: Mapping[int, tuple[int, int, int]], overlay_name: str = "", width_in: float = 6.9,
                     window: tuple[float, float] | None = None):
    """A matplotlib Figure with the axial, coronal and sagittal planes through the segment's centroid.

    The segment's contour is drawn thick, the other segments' thin, each in its label color; the overlay (if the
    display has one) as a heat map above 0.05, with its color bar named `overlay_name`; gray levels over
    `window` (default: the volume's 1st to 99.5th percentile, :func:`display_window`).
    """
    from matplotlib.figure import Figure

    planes = display.planes(measurement.centroid_lps)
    window = window or display_window(display.image)
    fig = Figure(figsize=(width_in, 2.35), dpi=130, facecolor="white")
    axes = fig.subplots(1, 3, gridspec_kw={"wspace": 0.04})
    heat = None
    for ax, plane in zip(axes, planes, strict=True):
        heat = _draw_plane(ax, plane, measurement.label_id, colors, window) or heat
    fig.subplots_adjust(left=0.005, right=0.92 if heat is not None else 0.995, top=0.9, bottom=0.01)
    if heat is not None:
        bar = fig.colorbar(heat, ax=list(axes), fraction=0.025, pad=0.01)
        bar.ax.tick_params(labelsize=6)
        bar.set_label(printable(overlay_name), fontsize=7)
    return fig


def display_window(image: np.ndarray) -> tuple[float, float]:
    """Gray levels shown: the 1st to 99.5th percentile of the volume (never an empty range)."""
    lo, hi = (float(v) for v in np.percentile(image, [1, 99.5]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def figure_rgb(fig) -> np.ndarray:
    """The figure rendered by Agg as an `(H, W, 3)` uint8 array (what goes into the PDF)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _figure_png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------- the document


@dataclass(frozen=True)
class PdfReport:
    """What goes into the PDF.

    Attributes:
        image: `(Z, Y, X)` intensities (the first channel); labels: the label map on the same grid.
        geometry: their grid; card: the model; measurements: per label (``medseg.measure``).
        overlay: a `(Z, Y, X)` map in [0, 1] (uncertainty or Grad-CAM) and `overlay_name` saying which.
        identifiers: patient/study identifiers (:func:`dicom_identifiers`), empty when the input is not DICOM.
        source: the input, as the user named it.
        edited: the mask was edited by a user after the model produced it (True), is the model's output (False),
            or may have been edited (None: a saved segmentation exported later).
        warnings: messages for the reader (input unlike the training data, ...).
        max_key_images: key images for at most this many segments, the largest first.
        edits: per label, the AI mask against the edited one (:func:`medseg.edits.compare_masks`), to say how much
            each edited segment changed.
    """

    image: np.ndarray
    labels: np.ndarray
    geometry: Geometry
    card: ModelCard
    measurements: Sequence[LabelMeasurement]
    overlay: np.ndarray | None = None
    overlay_name: str = ""
    identifiers: Mapping[str, str] = field(default_factory=dict)
    source: str = ""
    edited: bool | None = False
    warnings: Sequence[str] = ()
    max_key_images: int = 3
    edits: Sequence[EditStats] = ()


def _edit_line(stats) -> str:
    """How much one segment was edited: its AI and edited volumes, mL added and removed, Dice between them."""
    return (f"&nbsp;&nbsp;{_text(stats.name, 80)}: AI {stats.ai_volume_ml:.2f} mL, edited "
            f"{stats.corrected_volume_ml:.2f} mL (+{stats.added_ml:.2f} / -{stats.removed_ml:.2f} mL; Dice "
            f"{stats.dice:.3f} between the two)")


def _text(value: object, limit: int = 600) -> str:
    """Card or header text made safe for a reportlab Paragraph: printable, bounded, markup escaped."""
    text = printable(value)
    return escape(text if len(text) <= limit else text[: limit - 1] + "…")


def _fonts() -> tuple[str, str]:
    """Register DejaVu Sans (matplotlib's) once; fall back to Helvetica."""
    import matplotlib
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if "MedSegSans" in pdfmetrics.getRegisteredFontNames():
        return "MedSegSans", "MedSegSans-Bold"
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    try:
        pdfmetrics.registerFont(TTFont("MedSegSans", str(folder / "DejaVuSans.ttf")))
        pdfmetrics.registerFont(TTFont("MedSegSans-Bold", str(folder / "DejaVuSans-Bold.ttf")))
    except Exception:  # a matplotlib without its fonts: Latin-1 only
        return "Helvetica", "Helvetica-Bold"
    return "MedSegSans", "MedSegSans-Bold"


def _styles(regular: str, bold: str) -> dict:
    from reportlab.lib.styles import ParagraphStyle

    base = ParagraphStyle("body", fontName=regular, fontSize=8.5, leading=11)
    return {"body": base,
            "small": ParagraphStyle("small", parent=base, fontSize=7.5, leading=9.5),
            "title": ParagraphStyle("title", parent=base, fontName=bold, fontSize=15, leading=19),
            "h": ParagraphStyle("h", parent=base, fontName=bold, fontSize=10.5, leading=14, spaceBefore=6,
                                spaceAfter=2, keepWithNext=1),
            "cell": ParagraphStyle("cell", parent=base, fontSize=8, leading=10),
            "warn": ParagraphStyle("warn", parent=base, fontName=bold, textColor="#9a1b1b"),
            "alert": ParagraphStyle("alert", parent=base, fontSize=7.5, leading=9.5, textColor="#9a1b1b",
                                    spaceBefore=2)}


def _grid_table(rows: list[list], widths: list[float], header: bool = True, font: str = "Helvetica"):
    from reportlab.lib import colors
    from reportlab.platypus import Table, TableStyle

    table = Table(rows, colWidths=widths, repeatRows=1 if header else 0)
    style = [("FONT", (0, 0), (-1, -1), font, 8), ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
             ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#cccccc")),
             ("TOPPADDING", (0, 0), (-1, -1), 1), ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]
    if header:
        style += [("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8edf3"))]
    table.setStyle(TableStyle(style))
    return table


def _identifier_rows(report: PdfReport, s: dict) -> list:
    from reportlab.platypus import Paragraph

    ids = report.identifiers
    if not ids:
        note = "not available: the input is not a DICOM series" + (f" ({_text(report.source, 200)})"
                                                                     if report.source else "")
        return [Paragraph(f"<b>Patient / study:</b> {note}", s["body"])]
    fields = [("Patient", _person_name(ids.get("PatientName", ""))), ("Patient ID", ids.get("PatientID", "")),
              ("Study date", _date(ids.get("StudyDate", ""))), ("Modality", ids.get("Modality", "")),
              ("Study", ids.get("StudyDescription", ""))]
    cells = [Paragraph(f"<b>{name}:</b> {_text(value, 120) or '-'}", s["cell"]) for name, value in fields
             if value or name != "Study"]
    return [_grid_table([cells[:3], cells[3:] + [""] * (6 - len(cells))], [190, 150, 150], header=False)]


def _interval_heading(measurements: Sequence[LabelMeasurement]) -> tuple[str, str] | None:
    """(column heading, note) of the volume interval column, or None when no label has an interval."""
    with_interval = [m for m in measurements if m.volume_interval_ml is not None]
    if not with_interval:
        return None
    levels = {getattr(m, "volume_interval_level", None) for m in with_interval} - {None}
    if levels:
        level = f"{100 * max(levels):g} %"
        return (f"{level} interval (mL)", f"{level} interval: the model card's calibrated interval of the volume; "
                "a label without calibration shows its TTA range.")
    return ("TTA range (mL)", "TTA range: the lowest and highest volume over the test-time augmentation (mirrored) "
            "passes; not a calibrated interval.")


def _volume_table(report: PdfReport, s: dict, bold: str) -> list:
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph

    colors_by_id = {label.id: label.color for label in report.card.labels}
    interval = _interval_heading(report.measurements)
    head = ["", "Segment", "Volume (mL)"] + ([interval[0]] if interval else []) + ["Largest diam. (mm)"]
    rows = [head]
    many = len(report.measurements) > MAX_ROWS_WITH_ABSENT
    shown = [m for m in report.measurements if m.voxel_count or not many]
    for m in shown:
        span = ("-" if m.volume_interval_ml is None else
                f"{m.volume_interval_ml[0]:.2f} - {m.volume_interval_ml[1]:.2f}")
        diameter = "-" if m.largest_diameter_mm is None else f"{m.largest_diameter_mm:.1f}"
        rows.append(["", Paragraph(_text(m.name, 80), s["cell"]), f"{m.volume_ml:.2f}"]
                    + ([span] if interval else []) + [diameter])
    widths = [10, 215, 80] + ([110] if interval else []) + [100]
    table = _grid_table(rows, widths, font=s["cell"].fontName)
    table.setStyle([("FONT", (0, 0), (-1, 0), bold, 8), ("ALIGN", (2, 0), (-1, -1), "RIGHT")]
                   + [("BACKGROUND", (0, n), (0, n), colors.Color(*(c / 255 for c in colors_by_id.get(m.label_id,
                                                                                                  (128,) * 3))))
                      for n, m in enumerate(shown, start=1)])
    out = [table]
    if interval:
        out.append(Paragraph(interval[1], s["small"]))
    absent = [_text(m.name, 80) for m in report.measurements if m.voxel_count == 0]
    if absent and many:
        out.append(Paragraph(f"Not found (0 mL): {', '.join(absent)}.", s["small"]))
    elif absent:
        out.append(Paragraph("A volume of 0 means the model found no voxel of that segment.", s["small"]))
    return out


def _key_images(report: PdfReport, s: dict, width_pt: float) -> list:
    """The heading, then one block per segment (the heading kept on the page of the first)."""
    from reportlab.lib.utils import ImageReader
    from reportlab.platypus import Image, KeepTogether, Paragraph

    heading = Paragraph("Key images", s["h"])
    present = sorted((m for m in report.measurements if m.voxel_count > 0), key=lambda m: -m.volume_ml)
    if not present:
        return [heading, Paragraph("No segment was found: no key images.", s["body"])]
    display = DisplayVolume.from_arrays(report.image, report.labels, report.geometry, report.overlay)
    colors = {label.id: label.color for label in report.card.labels}
    window = display_window(display.image)
    out = []
    for m in present[: report.max_key_images]:
        png = _figure_png(key_image_figure(display, m, colors, report.overlay_name, window=window))
        w, h = ImageReader(io.BytesIO(png)).getSize()
        out.append(KeepTogether(([] if out else [heading])
                                + [Paragraph(f"<b>{_text(m.name, 80)}</b>: {m.volume_ml:.2f} mL", s["body"]),
                                   Image(io.BytesIO(png), width=width_pt, height=width_pt * h / w)]))
    notes = ["Radiological convention: the patient's right is on the image's left (axial, coronal); planes through "
             "each segment's centroid; thick contour: that segment; thin: the others."]
    if report.overlay is not None:
        notes.append(f"Heat map: {_text(report.overlay_name, 80)}.")
    if display.oblique:
        notes.append("The image grid is oblique: planes and letters are those of the nearest patient axes.")
    if len(present) > report.max_key_images:
        notes.append(f"Key images of the {report.max_key_images} largest of {len(present)} segments; all are in "
                     f"the table.")
    out.append(Paragraph(" ".join(notes), s["small"]))
    return out


def _dice_text(card: ModelCard) -> str:
    """Validation Dice per label (and the mean) from the card's metrics, or a dash."""
    metrics = card.metrics if isinstance(card.metrics, Mapping) else {}
    per_label = metrics.get("dice") if isinstance(metrics.get("dice"), Mapping) else {}
    parts = [f"{_text(name, 60)} {value:.3f}" for name, value in per_label.items()
             if isinstance(value, int | float) and not isinstance(value, bool)]
    mean = metrics.get("mean_dice")
    if isinstance(mean, int | float) and not isinstance(mean, bool):
        parts.append(f"mean {mean:.3f}")
    cases = metrics.get("validation_cases")
    suffix = f" ({cases} validation cases)" if isinstance(cases, int) and not isinstance(cases, bool) else ""
    return "; ".join(parts) + suffix if parts else "not given in the model card"


def _training_text(card: ModelCard) -> str:
    training = card.training if isinstance(card.training, Mapping) else {}
    parts = [_text(training.get(key), 200) for key in ("dataset", "license") if training.get(key)]
    split = training.get("split")
    if isinstance(split, Mapping) and isinstance(split.get("train_cases"), int):
        parts.append(f"{split['train_cases']} training cases")
    return "; ".join(parts) or "not given in the model card"


def _model_rows(report: PdfReport, s: dict) -> list:
    from reportlab.platypus import Paragraph

    card = report.card
    rows = [("Model", f"{_text(card.name, 100)} ({_text(card.architecture, 40)}): {_text(card.summary, 300)}"),
            ("Training data", _training_text(card)),
            ("Validation Dice", _dice_text(card)),
            ("Intended use and limits", _text(card.description, 900) or "not given in the model card")]
    return [Paragraph(f"<b>{name}:</b> {value}", s["body"]) for name, value in rows]


def _footer(regular: str):
    def draw(canvas, doc) -> None:
        canvas.saveState()
        canvas.setFont(regular, 7.5)
        canvas.setFillColorRGB(0.6, 0.1, 0.1)
        canvas.drawString(doc.leftMargin, 22, NOT_A_DIAGNOSIS)
        canvas.setFillColorRGB(0.3, 0.3, 0.3)
        canvas.drawRightString(doc.pagesize[0] - doc.rightMargin, 12, f"MedSeg report, page {doc.page}")
        canvas.restoreState()
    return draw


def pdf_bytes(report: PdfReport) -> bytes:
    """The PDF document (A4) as bytes."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer

    regular, bold = _fonts()
    s = _styles(regular, bold)
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=14 * mm, rightMargin=14 * mm, topMargin=12 * mm,
                            bottomMargin=14 * mm, title="MedSeg segmentation report", author="MedSeg",
                            subject=printable(report.card.name))
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    edited = {True: "edited by a user after the model produced it; the volumes are those of the edited mask.",
              False: "as produced by the model, not edited.",
              None: "exported from a saved segmentation that may have been edited after the model produced it; the "
                    "volumes are those of the saved mask."}[report.edited]
    story = [Paragraph("Segmentation report", s["title"]),
             Paragraph(f"MedSeg, {made}. {_text(NOT_A_DIAGNOSIS)}", s["warn"]), Spacer(1, 4),
             *_identifier_rows(report, s), Spacer(1, 3), Paragraph(f"<b>Mask:</b> {edited}", s["body"]),
             *[Paragraph(_edit_line(e), s["body"]) for e in report.edits if e.edited],
             *[Paragraph(f"Warning: {_text(w, 400)}", s["alert"]) for w in report.warnings],
             Paragraph("Volumes", s["h"]), *_volume_table(report, s, bold),
             *_key_images(report, s, doc.width),
             Paragraph("The model", s["h"]), *_model_rows(report, s)]
    doc.build(story, onFirstPage=_footer(regular), onLaterPages=_footer(regular))
    return buffer.getvalue()


def write_pdf(path: str | os.PathLike[str], report: PdfReport, *, outputs: OutputSet | None = None) -> None:
    """Write the PDF atomically, or into `outputs` (a run's output set)."""
    data = pdf_bytes(report)
    if outputs is not None:
        outputs.write_bytes(path, data)
        return
    with OutputSet() as single:
        single.write_bytes(path, data)

