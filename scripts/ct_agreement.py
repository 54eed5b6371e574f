#!/usr/bin/env python3
"""An abdominal CT model on CT it never saw, through ``medseg segment`` itself (the same code path, in process).

    .venv/bin/python scripts/ct_agreement.py --model runs/abdominal-ct-organs/best.safetensors \\
        [--shared ../shared/data] [--out scripts/results/ct_agreement.md] [--json FILE] [--threads 2]

Cases (from ``../shared/data/examples``, see its README):

(a) TotalSegmentator's example CT (raw HU, stored RAS: another voxel order than BTCV's LPS), compared per organ with
    TotalSegmentator's own map ``example_seg.nii.gz``. That map is a model's output, so the numbers are AGREEMENT
    between two models, not accuracy. The map was made from ``example_ct_sm.nii.gz``, whose voxels are the TOP 30 of
    the 112 slices of ``example_ct.nii.gz`` (k 82-111) although its header gives it the full CT's origin (the bottom
    slice): both inputs are segmented, and the prediction on the full CT is compared on the slices whose voxels are
    the map's (found by content, not by the inconsistent header), so organs the 30 slices cut are compared where
    both maps have them. Label ids are mapped BY NAME: a model label and a TotalSegmentator v2 class (``class_map
    ["total"]`` of totalsegmentator/map_to_binary.py, listed below) match when their words agree, ignoring order,
    case, ``_`` and a plural ``s`` ("right kidney" = "kidney_right", "portal and splenic veins" =
    "portal_vein_and_splenic_vein").
(b) The 20-slice DICOM series ``dicom_repaired/`` (no reference: volumes and timing), and the original ``dicom/``
    whose SOP/Study/Series UIDs are empty: segmented too (what happens is recorded, and whether its labels equal the
    repaired series'), and asked for a DICOM SEG, which needs the UIDs.
(c) MSD Task09 ``spleen_2`` (cropped CT, manual spleen label): Dice, HD95 and volumes of the model's spleen.

Dice and HD95 are ``medseg.metrics.score_label`` (MONAI's definitions; HD95 in mm, undefined when a mask is empty).
Writes a Markdown report (``--out``) and optionally the numbers as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from medseg.catalog import resolve_checkpoint
from medseg.checkpoint import read_card
from medseg.cli import main as medseg_main
from medseg.cli_export import _resample_nearest, checkpoint_sha256
from medseg.geometry import Geometry
from medseg.io import read_image
from medseg.metrics import score_label

REPO = Path(__file__).resolve().parents[1]
# TotalSegmentator v2 "total" task, class id -> name (totalsegmentator/map_to_binary.py, class_map["total"]).
TOTALSEG_V2 = dict(enumerate((
    "spleen kidney_right kidney_left gallbladder liver stomach pancreas adrenal_gland_right adrenal_gland_left "
    "lung_upper_lobe_left lung_lower_lobe_left lung_upper_lobe_right lung_middle_lobe_right lung_lower_lobe_right "
    "esophagus trachea thyroid_gland small_bowel duodenum colon urinary_bladder prostate kidney_cyst_left "
    "kidney_cyst_right sacrum vertebrae_S1 vertebrae_L5 vertebrae_L4 vertebrae_L3 vertebrae_L2 vertebrae_L1 "
    "vertebrae_T12 vertebrae_T11 vertebrae_T10 vertebrae_T9 vertebrae_T8 vertebrae_T7 vertebrae_T6 vertebrae_T5 "
    "vertebrae_T4 vertebrae_T3 vertebrae_T2 vertebrae_T1 vertebrae_C7 vertebrae_C6 vertebrae_C5 vertebrae_C4 "
    "vertebrae_C3 vertebrae_C2 vertebrae_C1 heart aorta pulmonary_vein brachiocephalic_trunk subclavian_artery_right "
    "subclavian_artery_left common_carotid_artery_right common_carotid_artery_left brachiocephalic_vein_left "
    "brachiocephalic_vein_right atrial_appendage_left superior_vena_cava inferior_vena_cava "
    "portal_vein_and_splenic_vein iliac_artery_left iliac_artery_right iliac_vena_left iliac_vena_right humerus_left "
    "humerus_right scapula_left scapula_right clavicula_left clavicula_right femur_left femur_right hip_left "
    "hip_right spinal_cord gluteus_maximus_left gluteus_maximus_right gluteus_medius_left gluteus_medius_right "
    "gluteus_minimus_left gluteus_minimus_right autochthon_left autochthon_right iliopsoas_left iliopsoas_right "
    "brain skull rib_left_1 rib_left_2 rib_left_3 rib_left_4 rib_left_5 rib_left_6 rib_left_7 rib_left_8 rib_left_9 "
    "rib_left_10 rib_left_11 rib_left_12 rib_right_1 rib_right_2 rib_right_3 rib_right_4 rib_right_5 rib_right_6 "
    "rib_right_7 rib_right_8 rib_right_9 rib_right_10 rib_right_11 rib_right_12 sternum costal_cartilages"
).split(), start=1))


def words(name: str) -> frozenset[str]:
    """A label name's words, lower case, without a plural s: the key names are matched on."""
    out = set()
    for w in re.split(r"[\s_\-]+", name.strip().lower()):
        if w:
            out.add(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
    return frozenset(out)


def match_by_name(model_labels: dict[int, str], classes: dict[int, str]) -> dict[int, int | None]:
    """Model label id -> the class id whose name has the same words (None when no class has them)."""
    by_words = {words(name): cid for cid, name in classes.items()}
    return {lid: by_words.get(words(name)) for lid, name in model_labels.items()}


def segment(model: str, inputs: list[Path], folder: Path, args, extra: tuple[str, ...] = ()) -> dict:
    """``medseg segment`` in process: exit code, its error line, seconds, labels (on the input grid), report."""
    out, report = folder / "labels.nii.gz", folder / "report.json"
    argv = ["segment", *map(str, inputs), "--model", model, "--output", str(out), "--report", str(report),
            "--device", args.device, "--no-progress", *extra]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    stdout, stderr = io.StringIO(), io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = medseg_main(argv)
    seconds = time.perf_counter() - t
    errors = [line for line in stderr.getvalue().splitlines() if "error:" in line]
    result = {"exit_code": code, "seconds": seconds, "error": errors[-1] if errors else None, "labels": None,
              "geometry": None, "report": None}
    if code == 0:
        labels, geometry = read_image(out)
        result.update(labels=labels.astype(np.int16), geometry=geometry, report=json.loads(report.read_text()))
    return result


def compare(pred: np.ndarray, ref: np.ndarray, geometry: Geometry, pairs: dict[int, int | None],
            names: dict[int, str]) -> list[dict]:
    """Per model label: the reference class it maps to, Dice, HD95, both volumes."""
    rows = []
    for lid, cid in pairs.items():
        row = {"label": names[lid], "reference_class": None if cid is None else TOTALSEG_V2.get(cid, str(cid))}
        if cid is None:
            rows.append(row)
            continue
        s = score_label(pred == lid, ref == cid, geometry)
        if not s.volume_pred_ml and not s.volume_ref_ml:  # absent from both: nothing to agree on
            row.update(dice=None, hd95_mm=None, volume_model_ml=0.0, volume_reference_ml=0.0, absent=True)
            rows.append(row)
            continue
        row.update(dice=s.dice, hd95_mm=s.hd95_mm, volume_model_ml=s.volume_pred_ml,
                   volume_reference_ml=s.volume_ref_ml)
        rows.append(row)
    return rows


def slice_offset(full: Path, part: Path) -> int | None:
    """The first slice k of `full` from which `part`'s voxels are `full`'s (same in-plane grid), or None."""
    a, _ = read_image(full)
    b, _ = read_image(part)
    if a.shape[1:] != b.shape[1:] or b.shape[0] > a.shape[0]:
        return None
    return next((k for k in range(a.shape[0] - b.shape[0] + 1) if np.array_equal(a[k:k + b.shape[0]], b)), None)


def totalsegmentator_case(model: str, names: dict[int, str], base: Path, work: Path, args) -> dict:
    seg, seg_geometry = read_image(base / "example_seg.nii.gz")
    seg = seg.astype(np.int16)
    pairs = match_by_name(names, TOTALSEG_V2)
    out = {"pairs": {names[k]: (None if v is None else TOTALSEG_V2[v]) for k, v in pairs.items()}, "runs": {}}
    for name in ("example_ct.nii.gz", "example_ct_sm.nii.gz"):
        folder = work / name.split(".")[0]
        folder.mkdir()
        run = segment(model, [base / name], folder, args)
        entry = {"exit_code": run["exit_code"], "error": run["error"], "seconds": run["seconds"]}
        if run["labels"] is not None:
            sm = base / "example_ct_sm.nii.gz"
            offset = None if name == sm.name else slice_offset(base / name, sm)
            pred = (run["labels"][offset:offset + seg.shape[0]] if offset is not None else
                    _resample_nearest(run["labels"], run["geometry"], tuple(seg.shape), seg_geometry))
            entry["slices_compared"] = None if offset is None else [offset, offset + seg.shape[0] - 1]
            entry.update(shape=list(run["labels"].shape), warnings=run["report"].get("warnings", []),
                         rows=compare(pred, seg, seg_geometry, pairs, names))
        out["runs"][name] = entry
    return out


def dicom_case(model: str, names: dict[int, str], base: Path, work: Path, args) -> dict:
    out = {}
    for name in ("dicom_repaired", "dicom"):
        folder = work / name
        folder.mkdir()
        run = segment(model, [base / name], folder, args)
        entry = {"exit_code": run["exit_code"], "error": run["error"], "seconds": run["seconds"]}
        if run["labels"] is not None:
            voxel_ml = run["geometry"].voxel_volume_ml
            entry.update(shape=list(run["labels"].shape), warnings=run["report"].get("warnings", []),
                         volumes_ml={names[i]: float((run["labels"] == i).sum()) * voxel_ml for i in names},
                         _labels=run["labels"])
        seg_dir = work / f"{name}_seg"
        seg_dir.mkdir()
        seg_run = segment(model, [base / name], seg_dir, args, ("--dicom-seg", str(seg_dir / "seg.dcm")))
        entry["dicom_seg"] = {"exit_code": seg_run["exit_code"], "error": seg_run["error"],
                              "written": (seg_dir / "seg.dcm").is_file()}
        out[name] = entry
    good, bad = out["dicom_repaired"].pop("_labels", None), out["dicom"].pop("_labels", None)
    out["broken_equals_repaired"] = None if good is None or bad is None else bool(np.array_equal(good, bad))
    return out


def spleen_case(model: str, names: dict[int, str], base: Path, work: Path, args) -> dict:
    folder = work / "spleen"
    folder.mkdir()
    run = segment(model, [base / "spleen_2_ct.nii.gz"], folder, args)
    out = {"exit_code": run["exit_code"], "error": run["error"], "seconds": run["seconds"]}
    spleen = [lid for lid, name in names.items() if words(name) == words("spleen")]
    if run["labels"] is None or not spleen:
        return out
    truth, geometry = read_image(base / "spleen_2_label.nii.gz")
    s = score_label(run["labels"] == spleen[0], truth > 0, geometry)
    out.update(dice=s.dice, hd95_mm=s.hd95_mm, volume_model_ml=s.volume_pred_ml, volume_reference_ml=s.volume_ref_ml,
               warnings=run["report"].get("warnings", []))
    return out


def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _refs(items: list[str], seen: list[str]) -> str:
    """Warnings as numbers into the report's list of them (each text listed once)."""
    refs = []
    for text in items:
        if text not in seen:
            seen.append(text)
        refs.append(f"[{seen.index(text) + 1}]")
    return " ".join(refs) or "none"


def markdown(result: dict) -> str:
    lines = [f"# `{result['model']}` on CT it never saw", "",
             f"Checkpoint `{result['checkpoint']}` (SHA-256 {result['sha256'][:12]}...), card: {result['card_note']}.",
             f"Measured {result['date']} by `scripts/ct_agreement.py` through `medseg segment` (default options), "
             f"{result['device']}, {result['machine']}.", ""]
    ts = result["totalsegmentator"]
    lines += ["## (a) TotalSegmentator example CT: agreement with TotalSegmentator's map", "",
              "`example_seg.nii.gz` is TotalSegmentator v2's output on `example_ct_sm.nii.gz` (30 slices at 3 mm), "
              "not a manual reference: the figures say how far two models agree, not how accurate either is. "
              "`example_ct.nii.gz` (raw HU, stored RAS, 112 slices) holds the same voxels as its slices 82-111, "
              "although `example_ct_sm`'s header puts them at the full CT's origin; its prediction is compared on "
              "the slices whose voxels are the map's (found by content). Label ids mapped by name.", ""]
    runs = ts["runs"]
    warnings: list[str] = []
    stems = [k.split(".")[0] for k in runs]
    lines += ["| organ | TotalSegmentator class | " + " | ".join(
        f"Dice ({k}) | HD95 mm ({k}) | mL model / TS ({k})" for k in stems) + " |",
        "|" + "---|" * (2 + 3 * len(runs))]
    first = next(iter(runs.values()))
    for i, row in enumerate(first.get("rows", [])):
        cells = [row["label"], f"`{row['reference_class']}`" if row["reference_class"] else "none"]
        for entry in runs.values():
            r = entry.get("rows", [{}] * (i + 1))[i]
            if r.get("absent"):
                cells += ["absent in both", "", "0 / 0"]
            else:
                cells += [_f(r.get("dice")), _f(r.get("hd95_mm"), 1),
                          f"{_f(r.get('volume_model_ml'), 1)} / {_f(r.get('volume_reference_ml'), 1)}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for name, entry in runs.items():
        if entry["exit_code"]:
            lines.append(f"- `{name}`: exit {entry['exit_code']}: {entry['error']}")
            continue
        dice = [r["dice"] for r in entry["rows"] if r.get("dice") is not None and r.get("volume_reference_ml")]
        lines.append(f"- `{name}`: {entry['seconds']:.1f} s; mean Dice over the {len(dice)} organs in "
                     f"TotalSegmentator's map: {np.mean(dice):.3f}; engine warnings: "
                     f"{_refs(entry['warnings'], warnings)}")
    dc = result["dicom"]
    lines += ["", "## (b) The 20-slice DICOM series", "",
              "| series | exit | seconds | DICOM SEG (--dicom-seg) | engine warnings |", "|---|---|---|---|---|"]
    for name in ("dicom_repaired", "dicom"):
        e = dc[name]
        seg = e["dicom_seg"]
        seg_text = "written" if seg["written"] else f"refused (exit {seg['exit_code']}): {seg['error']}"
        note = _refs(e.get("warnings", []), warnings) if e["exit_code"] == 0 else e["error"]
        lines.append(f"| `{name}/` | {e['exit_code']} | {e['seconds']:.1f} | {seg_text} | {note} |")
    if dc["broken_equals_repaired"] is not None:
        lines.append(f"\nLabels of `dicom/` identical to those of `dicom_repaired/`: {dc['broken_equals_repaired']}.")
    if "volumes_ml" in dc["dicom_repaired"]:
        present = {k: v for k, v in dc["dicom_repaired"]["volumes_ml"].items() if v > 0 and k != "background"}
        lines.append("Volumes on `dicom_repaired/` (mL; 20 slices of 2 mm, organs cut by the field of view): "
                     + (", ".join(f"{k} {v:.1f}" for k, v in present.items()) or "none") + ".")
    sp = result["spleen"]
    lines += ["", "## (c) MSD spleen_2 (manual spleen label)", ""]
    if sp["exit_code"]:
        lines.append(f"exit {sp['exit_code']}: {sp['error']}")
    else:
        lines += ["| Dice | HD95 mm | volume model mL | volume manual mL | seconds | engine warnings |",
                  "|---|---|---|---|---|---|",
                  f"| {_f(sp.get('dice'))} | {_f(sp.get('hd95_mm'), 1)} | {_f(sp.get('volume_model_ml'), 1)} | "
                  f"{_f(sp.get('volume_reference_ml'), 1)} | {sp['seconds']:.1f} | "
                  f"{_refs(sp.get('warnings', []), warnings)} |"]
    if warnings:
        lines += ["", "Engine warnings (`SegmentationResult.warnings`):", ""]
        lines += [f"{n}. {text}" for n, text in enumerate(warnings, start=1)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint path or bundled model name")
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data", help="the shared data folder")
    p.add_argument("--out", type=Path, default=REPO / "scripts" / "results" / "ct_agreement.md")
    p.add_argument("--json", type=Path, help="also write the numbers as JSON")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--machine", default="2 CPU cores",
                   help="what the machine was doing (written into the report)")
    args = p.parse_args(argv)
    checkpoint = resolve_checkpoint(args.model)
    card = read_card(checkpoint)
    names = {label.id: label.name for label in card.foreground_labels}
    examples = args.shared / "examples"
    epochs = card.training.get("epochs")
    result = {"model": card.name, "checkpoint": str(args.model), "sha256": checkpoint_sha256(checkpoint),
              "card_note": f"{epochs} epoch(s) trained" if epochs else "no epoch count",
              "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "device": f"{args.device}" + (f", {args.threads} threads" if args.threads else ""),
              "machine": f"{platform.processor() or platform.machine()}, {args.machine}"}
    with tempfile.TemporaryDirectory(prefix="ct-agreement-") as tmp:
        work = Path(tmp)
        result["totalsegmentator"] = totalsegmentator_case(str(checkpoint), names, examples / "totalsegmentator",
                                                           work, args)
        result["dicom"] = dicom_case(str(checkpoint), names, examples / "totalsegmentator", work, args)
        result["spleen"] = spleen_case(str(checkpoint), names, examples / "spleen", work, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(result))
    print(f"wrote {args.out}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
