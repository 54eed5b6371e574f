#!/usr/bin/env python3
"""Time and peak memory of each export step (DICOM SEG, SR, PDF, meshes) and of the whole export.

Two cases:

- ``ct20``: the shared 20-slice CT series ``examples/totalsegmentator/dicom_repaired`` (512 x 512 x 20) with a
  multi-organ label map: ``examples/totalsegmentator/example_seg.nii.gz`` (TotalSegmentator, 117 classes; it is
  not on the series' grid and does not overlap it in space, so its array is stretched in index space, nearest
  neighbour, onto the series' 512 x 512 x 20 grid). Its segmentation time is measured here: the README's
  benchmark U-Net (16-256 channels, random weights, 118 classes, ROI 96^3, overlap 0.5) segmenting the series.
- ``synthetic``: a CT series written here with pydicom (512 x 512 x 300, 0.8 x 0.8 x 1 mm, CT Image Storage,
  uncompressed int16, generated UIDs) and a label map of 105 ellipsoid blobs. Its segmentation time is not
  measured (the 105-class network needs about 6 minutes here): the README's measured 342 s for 512 x 512 x 300
  with 105 classes (MedSeg bf16, CPU) is used, unless ``--segment-synthetic`` measures it.

Every step runs in its own child process (a fresh interpreter of this script). A child first loads what the step
needs (untimed: the label map, image and source headers; for the SR also the SEG it refers to), then times the
step and samples its resident set size every 5 ms: ``peak_rss_gib`` is the process' peak during the step,
``step_rss_gib`` the peak minus the resident size before the step. Steps: ``read_source`` (DICOM headers, sorted and
checked: ``medseg.dicom.read_source``), ``read_image`` (the pixels, ``medseg.io.read_image``), ``measure``
(``medseg.measure.measure_labels``, which the SR and the PDF use), ``seg`` (``build_segmentation`` + encoding to
bytes), ``sr``, ``pdf`` (``pdf_bytes``), ``meshes`` (``label_meshes`` + STL and OBJ bytes), and ``export``: all of
them in one process through the CLI's own writers (``write_dicom``, ``write_report_files`` into an ``OutputSet``
in a temporary folder), which is what ``medseg segment --dicom-seg --dicom-sr --pdf --meshes`` adds after the
segmentation.

    .venv/bin/python scripts/benchmark_export.py
    .venv/bin/python scripts/benchmark_export.py --cases ct20 --no-segment
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MedSegExtension"))
sys.path.insert(0, str(ROOT / "scripts"))
from benchmark_inference import PeakRSS, _segmenter  # noqa: E402  (the peer benchmark's memory sampler and U-Net)

SHARED = Path(os.environ.get("MEDSEG_SHARED_DATA", ROOT.parent / "shared" / "data"))
CT_SERIES = SHARED / "examples/totalsegmentator/dicom_repaired"
CT_LABELS = SHARED / "examples/totalsegmentator/example_seg.nii.gz"
SYNTHETIC_SHAPE = (300, 512, 512)  # (z, y, x)
SYNTHETIC_SPACING = (0.8, 0.8, 1.0)  # (x, y, z) mm
SYNTHETIC_LABELS = 105
README_SEGMENT_SECONDS = 342.0  # README performance table: 512x512x300, 105 classes, MedSeg bf16, CPU
STEPS = ("read_source", "read_image", "measure", "seg", "sr", "pdf", "meshes", "export")
SEG_TARGET_SECONDS, SEG_TARGET_GIB, EXPORT_TARGET_FRACTION = 20.0, 2.0, 0.25


# ------------------------------------------------------------------------------------------------- inputs


def _card(n_labels: int, name: str):
    from medseg.card import ModelCard

    labels = [{"id": 0, "name": "background", "color": [0, 0, 0]}]
    rng = np.random.default_rng(0)
    for i in range(1, n_labels + 1):
        labels.append({"id": i, "name": f"structure {i}", "color": [int(c) for c in rng.integers(40, 255, 3)],
                       "terminology": {"category": {"scheme": "SCT", "code": "123037004",
                                                    "meaning": "Anatomical Structure"},
                                       "type": {"scheme": "SCT", "code": "85756007", "meaning": "Tissue"}}})
    return ModelCard.from_dict({
        "name": name, "summary": "export benchmark (random label names)", "architecture": "unet",
        "architecture_args": {"spatial_dims": 3, "in_channels": 1, "num_classes": n_labels + 1},
        "patch_size": [96, 96, 96], "training": {"dataset": "none", "license": "none"},
        "inputs": [{"name": "CT", "modality": "CT", "normalization": {"kind": "none"}}], "labels": labels})


def _save_case(folder: Path, series: Path, labels: np.ndarray, image: np.ndarray, geometry, n_labels: int) -> None:
    np.save(folder / "labels.npy", labels)
    np.save(folder / "image.npy", image)
    (folder / "case.json").write_text(json.dumps({
        "series": str(series), "n_labels": n_labels, "spacing": list(geometry.spacing),
        "origin": list(geometry.origin), "direction": [list(r) for r in geometry.direction]}))


def prepare_ct20(folder: Path) -> dict:
    """The shared series and example_seg stretched (nearest, index space) onto its grid."""
    import SimpleITK as sitk

    from medseg.io import read_image

    image, geometry = read_image(CT_SERIES)
    seg = sitk.ReadImage(str(CT_LABELS))
    seg = sitk.DICOMOrient(seg, "LPS")  # the series' axes (identity direction); then stretch in index space
    seg.SetOrigin((0.0, 0.0, 0.0))
    seg.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    size = seg.GetSize()
    target = image.shape[::-1]
    seg.SetSpacing([1.0] * 3)  # index space: the reference's voxels cover the same index extent
    reference = sitk.Image(list(target), seg.GetPixelID())
    reference.SetSpacing([s / t for s, t in zip(size, target, strict=True)])
    reference.SetOrigin([(s / t - 1.0) / 2 for s, t in zip(size, target, strict=True)])  # voxel centres
    labels = sitk.GetArrayFromImage(sitk.Resample(seg, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    labels = labels.astype(np.uint8)
    n_labels = int(labels.max())
    _save_case(folder, CT_SERIES, labels, image, geometry, n_labels)
    return {"series": str(CT_SERIES), "shape_zyx": list(image.shape), "labels_present": int(len(np.unique(labels)) - 1),
            "label_source": f"{CT_LABELS.name} stretched (nearest, index space) onto the series' grid"}


def synthetic_volumes(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like int16 volume (air, a body ellipse, noise) and 105 ellipsoid blobs inside the body."""
    z, y, x = SYNTHETIC_SHAPE
    yy, xx = np.ogrid[:y, :x]
    body = ((yy - y / 2) / (0.42 * y)) ** 2 + ((xx - x / 2) / (0.46 * x)) ** 2 <= 1.0
    labels = np.zeros(SYNTHETIC_SHAPE, dtype=np.uint8)
    hu = np.full(SYNTHETIC_SHAPE, -1000, dtype=np.int16)
    hu[:, body] = 30
    centres = [(cz, cy, cx) for cz in np.linspace(50, z - 50, 3) for cy in np.linspace(140, y - 140, 5)
               for cx in np.linspace(95, x - 95, 7)]
    for n, (cz, cy, cx) in enumerate(centres[:SYNTHETIC_LABELS], 1):
        rz, ry, rx = rng.uniform([18, 10, 10], [45, 26, 28])
        cz, cy, cx = cz + rng.uniform(-5, 5), cy + rng.uniform(-5, 5), cx + rng.uniform(-5, 5)
        box = tuple(slice(max(0, int(c - r)), min(s, int(c + r) + 2))
                    for c, r, s in zip((cz, cy, cx), (rz, ry, rx), SYNTHETIC_SHAPE, strict=True))
        kk, jj, ii = np.ogrid[box]
        inside = ((kk - cz) / rz) ** 2 + ((jj - cy) / ry) ** 2 + ((ii - cx) / rx) ** 2 <= 1.0
        labels[box][inside] = n
        hu[box][inside] = int(rng.integers(-100, 300))
    for k in range(z):  # noise slice by slice: no float copy of the whole volume
        hu[k] += rng.normal(0, 12, (y, x)).astype(np.int16)
    return hu, labels


def write_series(folder: Path, hu: np.ndarray) -> None:
    """One CT Image Storage file per slice: patient/study/series headers, generated UIDs, int16 pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    sx, sy, sz = SYNTHETIC_SPACING
    origin = (-sx * SYNTHETIC_SHAPE[2] / 2, -sy * SYNTHETIC_SHAPE[1] / 2, -sz * SYNTHETIC_SHAPE[0])
    for k in range(hu.shape[0]):
        uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, uid
        meta.TransferSyntaxUID, meta.ImplementationClassUID = ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber, ds.Modality, ds.Manufacturer = "BENCH0001", "CT", "MedSeg benchmark"
        ds.ReferringPhysicianName, ds.StudyDescription = "", "Synthetic export benchmark"
        ds.SeriesDescription, ds.PatientName, ds.PatientID = "Synthetic CT 512x512x300", "Benchmark^Synthetic", "BENCH"
        ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
        ds.BodyPartExamined, ds.SliceThickness, ds.KVP = "ABDOMEN", f"{sz:g}", "120"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = "1", 1, k + 1, 1
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [f"{origin[0]:g}", f"{origin[1]:g}", f"{origin[2] + k * sz:g}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = f"{origin[2] + k * sz:g}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.PixelSpacing = [f"{sy:g}", f"{sx:g}"]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.PixelData = np.ascontiguousarray(hu[k]).tobytes()
        ds.save_as(folder / f"CT{k + 1:04d}.dcm", enforce_file_format=True)


def prepare_synthetic(folder: Path) -> dict:
    from medseg.io import read_image

    t = time.perf_counter()
    hu, labels = synthetic_volumes(np.random.default_rng(0))
    series = folder / "series"
    series.mkdir()
    write_series(series, hu)
    del hu
    image, geometry = read_image(series)
    if image.shape != labels.shape:
        raise RuntimeError(f"the written series reads back as {image.shape}, expected {labels.shape}")
    _save_case(folder, series, labels, image, geometry, SYNTHETIC_LABELS)
    return {"series": "synthetic (written here)", "shape_zyx": list(labels.shape),
            "spacing_xyz_mm": list(SYNTHETIC_SPACING), "labels_present": int(len(np.unique(labels)) - 1),
            "prepare_seconds": round(time.perf_counter() - t, 1)}


# ------------------------------------------------------------------------------------------------- child steps


def _load(folder: Path, what: set[str]) -> dict:
    from medseg.geometry import Geometry

    info = json.loads((folder / "case.json").read_text())
    geometry = Geometry(tuple(info["spacing"]), tuple(info["origin"]), tuple(tuple(r) for r in info["direction"]))
    out = {"series": Path(info["series"]), "geometry": geometry, "card": _card(info["n_labels"], folder.name),
           "labels": np.load(folder / "labels.npy")}
    if "image" in what:
        out["image"] = np.load(folder / "image.npy")
    if "source" in what:
        from medseg.dicom import read_source

        out["source"] = read_source(out["series"])
    if "measurements" in what:
        from medseg.measure import measure_labels

        out["measurements"] = measure_labels(out["labels"], geometry, out["card"].labels, image=out["image"])
    return out


NEEDS = {"read_source": set(), "read_image": set(), "measure": {"image"}, "seg": {"source"},
         "sr": {"image", "source", "measurements"}, "pdf": {"image", "measurements"}, "meshes": set(), "export": set()}
SHA = "0" * 64  # the checkpoint's hash in the SEG (any 64 hex digits; no checkpoint file here)


def run_step(step: str, folder: Path) -> dict:
    """Load the step's inputs, then time it and sample its memory; returns the measurement (and sizes)."""
    d = _load(folder, NEEDS[step])
    seg_dataset = None
    if step == "sr":
        from medseg.dicom import build_segmentation

        seg_dataset = build_segmentation(d["labels"], d["geometry"], d["source"], d["card"], checkpoint_sha256=SHA)
    extra: dict = {}
    with PeakRSS() as rss:
        t = time.perf_counter()
        extra = STEP_FUNCTIONS[step](d, seg_dataset)
        seconds = time.perf_counter() - t
    return {"seconds": round(seconds, 3), "peak_rss_gib": round(rss.peak / 2**30, 3),
            "step_rss_gib": round((rss.peak - rss.base) / 2**30, 3), **extra}


def _read_source(d, _):
    from medseg.dicom import read_source

    return {"instances": len(read_source(d["series"]).datasets)}


def _read_image(d, _):
    from medseg.io import read_image

    return {"shape": list(read_image(d["series"])[0].shape)}


def _measure(d, _):
    from medseg.measure import measure_labels

    return {"labels": len(measure_labels(d["labels"], d["geometry"], d["card"].labels, image=d["image"]))}


def _seg(d, _):
    from medseg.dicom import build_segmentation, dataset_bytes

    seg = build_segmentation(d["labels"], d["geometry"], d["source"], d["card"], checkpoint_sha256=SHA)
    return {"segments": len(seg.SegmentSequence), "frames": int(seg.NumberOfFrames),
            "bytes": len(dataset_bytes(seg))}


def _sr(d, seg):
    from medseg.dicom import build_measurement_report, dataset_bytes

    sr = build_measurement_report(seg, d["measurements"], d["source"], d["card"])
    return {"bytes": len(dataset_bytes(sr))}


def _pdf(d, _):
    from medseg.report_pdf import PdfReport, pdf_bytes

    report = PdfReport(d["image"], d["labels"], d["geometry"], d["card"], d["measurements"], source=str(d["series"]))
    return {"bytes": len(pdf_bytes(report))}


def _meshes(d, _):
    from medseg.meshes import label_meshes, obj_bytes, stl_bytes

    meshes = label_meshes(d["labels"], d["geometry"], d["card"].labels)
    size = sum(len(stl_bytes(m)) + len(obj_bytes(m)) for m in meshes)
    return {"meshes": sum(1 for m in meshes if len(m.faces)), "bytes": size}


def _export(d, _):
    """What ``medseg segment``/``export`` do after the label map exists, with the CLI's writers, into files."""
    from medseg.cli_export import DicomExport, read_dicom_source, write_dicom
    from medseg.cli_report import write_report_files
    from medseg.io import read_image
    from medseg.measure import measure_labels
    from medseg.meshes import mesh_paths
    from medseg.outputs import OutputSet

    card, labels = d["card"], d["labels"]
    with tempfile.TemporaryDirectory(prefix="medseg-export-bench-") as tmp:
        out = Path(tmp)
        (out / "meshes").mkdir()
        plan = {"--dicom-seg": out / "seg.dcm", "--dicom-sr": out / "sr.dcm", "--pdf": out / "report.pdf"}
        for label_id, (stl, obj) in mesh_paths(out / "meshes", card.labels).items():
            plan[f"--meshes (label {label_id}) STL"], plan[f"--meshes (label {label_id}) OBJ"] = stl, obj
        source = read_dicom_source(d["series"])
        image, geometry = read_image(d["series"])
        measurements = measure_labels(labels, geometry, card.labels, image=image)
        with OutputSet() as outputs:
            for path in plan.values():
                outputs.reserve(path)
            write_dicom(plan, outputs, DicomExport(source, card, SHA, edited=False), labels, geometry, measurements)
            write_report_files(plan, outputs, image=image, labels=labels, geometry=geometry, card=card,
                               measurements=measurements, source=str(d["series"]))
        return {"files": len(outputs.committed), "bytes": sum(p.stat().st_size for p in outputs.committed)}


STEP_FUNCTIONS = {"read_source": _read_source, "read_image": _read_image, "measure": _measure, "seg": _seg,
                  "sr": _sr, "pdf": _pdf, "meshes": _meshes, "export": _export}


def run_segment(folder: Path, classes: int) -> dict:
    """The README benchmark U-Net (random weights, `classes` classes) segmenting the case's image."""
    from medseg.inference import SegmentOptions

    d = _load(folder, {"image"})
    segmenter = _segmenter(classes, "cpu")
    with PeakRSS() as rss:
        t = time.perf_counter()
        segmenter.segment(d["image"], d["geometry"], SegmentOptions())
        seconds = time.perf_counter() - t
    return {"seconds": round(seconds, 3), "peak_rss_gib": round(rss.peak / 2**30, 3),
            "step_rss_gib": round((rss.peak - rss.base) / 2**30, 3), "classes": classes}


# ------------------------------------------------------------------------------------------------- parent


def _child(job: dict, timeout: float) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(job)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def bench_case(name: str, folder: Path, args) -> dict:
    print(f"[{name}] preparing ...", file=sys.stderr, flush=True)
    case = prepare_ct20(folder) if name == "ct20" else prepare_synthetic(folder)
    case["steps"] = {}
    for step in STEPS:
        result = _child({"kind": "step", "step": step, "folder": str(folder)}, args.step_timeout)
        case["steps"][step] = result
        print(f"[{name}] {step}: {result}", file=sys.stderr, flush=True)
    segment = None
    if name == "ct20" and args.segment:
        segment = _child({"kind": "segment", "folder": str(folder), "classes": 118}, args.step_timeout)
        case["segmentation"] = {**segment, "source": "measured here: README benchmark U-Net, 118 classes, bf16"}
    elif name == "synthetic" and args.segment_synthetic:
        segment = _child({"kind": "segment", "folder": str(folder), "classes": SYNTHETIC_LABELS + 1}, 900)
        case["segmentation"] = {**segment, "source": "measured here: README benchmark U-Net, 106 classes, bf16"}
    elif name == "synthetic":
        segment = {"seconds": README_SEGMENT_SECONDS}
        case["segmentation"] = {"seconds": README_SEGMENT_SECONDS, "source": "README performance table (512x512x300, "
                                "105 classes, MedSeg bf16, CPU, 2026-11-21); not measured in this run"}
    case["targets"] = _targets(name, case, segment)
    print(f"[{name}] targets: {case['targets']}", file=sys.stderr, flush=True)
    return case


def _targets(name: str, case: dict, segment: dict | None) -> dict:
    out = {}
    seg, export = case["steps"].get("seg", {}), case["steps"].get("export", {})
    if name == "synthetic" and "seconds" in seg:
        out["seg_under_20_s"] = seg["seconds"] < SEG_TARGET_SECONDS
        out["seg_under_2_gib"] = seg["peak_rss_gib"] < SEG_TARGET_GIB
    if segment and "seconds" in segment and "seconds" in export:
        out["export_over_segmentation"] = round(export["seconds"] / segment["seconds"], 3)
        out["export_under_quarter_of_segmentation"] = export["seconds"] < EXPORT_TARGET_FRACTION * segment["seconds"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Writes JSON to --output; progress goes to stderr. Takes about 5-10 "
                                            "minutes on 2 CPU cores.")
    parser.add_argument("--cases", default="ct20,synthetic", help="comma-separated: ct20, synthetic")
    parser.add_argument("--output", default=str(ROOT / "scripts/results/benchmark_export.json"), help="JSON file")
    parser.add_argument("--no-segment", dest="segment", action="store_false",
                        help="do not measure the segmentation time of the ct20 case (about a minute)")
    parser.add_argument("--segment-synthetic", action="store_true",
                        help="measure the synthetic case's segmentation too (about 6 minutes) instead of using the "
                             "README's figure")
    parser.add_argument("--step-timeout", type=float, default=300.0, help="seconds allowed for one step's child")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        job = json.loads(args.child)
        folder = Path(job["folder"])
        result = run_step(job["step"], folder) if job["kind"] == "step" else run_segment(folder, job["classes"])
        print(json.dumps(result))
        return
    import torch

    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": platform.processor() or
           platform.machine(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "load_average_before": _load_average(), "cases": {}}
    for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if name not in ("ct20", "synthetic"):
            parser.error(f"unknown case {name!r}: use ct20 and/or synthetic")
        with tempfile.TemporaryDirectory(prefix=f"medseg-bench-{name}-") as tmp:
            folder = Path(tmp) / name
            folder.mkdir()
            out["cases"][name] = bench_case(name, folder, args)
    out["load_average_after"] = _load_average()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
