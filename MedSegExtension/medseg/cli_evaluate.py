"""``medseg evaluate``: a model against reference labels, per case and per label."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

from .cli_segment import add_postprocess_arguments, postprocess_options
from .inference import Segmenter, SegmentOptions
from .io import READ_EXTENSIONS, read_channels, read_image, write_json
from .metrics import DEFAULT_NSD_TOLERANCE_MM, score_label
from .outputs import OutputSet
from .postprocess import card_default

__all__ = ["add_evaluate_parser", "cmd_evaluate"]


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score a model against reference labels",
        description="Segment every image of --images and score it against the label map of the same name in "
                    "--labels (nnU-Net's case_0000 channel suffixes are understood): Dice, IoU, HD95 (MONAI's: the "
                    "larger directed 95th percentile), average symmetric surface distance and normalised surface "
                    "Dice (NSD) in mm, volume predicted vs reference in mL. HD95 and ASD are undefined when the "
                    "prediction or the reference of a label is empty, NSD when both are (0 when one is): such cases "
                    "are left out of that metric's mean and counted as n_undefined beside it.")
    p.add_argument("--model", required=True, help="a bundled model's name (medseg models) or a checkpoint path "
                   "(name.safetensors, ./name)")
    p.add_argument("--images", required=True, type=Path, help="folder of images")
    p.add_argument("--labels", required=True, type=Path, help="folder of reference label maps")
    p.add_argument("--cases", nargs="+", help="only these case ids (file names without extension)")
    p.add_argument("--split", type=Path, help="a training run's split.json: evaluate its validation cases")
    p.add_argument("--json", type=Path, help="write the summary and per-case scores as JSON")
    p.add_argument("--csv", type=Path, help="write one row per case and label as CSV")
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation")
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--nsd-tolerance-mm", type=_tolerance, default=DEFAULT_NSD_TOLERANCE_MM,
                   help=f"distance (mm) within which a surface point counts as agreeing, for the normalised surface "
                        f"Dice (default {DEFAULT_NSD_TOLERANCE_MM:g})")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--prune-level", type=int, choices=(1, 2, 3, 4), help="UNet++: pruned sub-network")
    p.add_argument("--accurate", action="store_true", help="UNet++: average the heads")
    add_postprocess_arguments(p)
    p.set_defaults(func=cmd_evaluate)


def _tolerance(text: str) -> float:
    value = float(text)
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text}: give a distance in mm >= 0, e.g. 1")
    return value


def _case_id(path: Path) -> str:
    name = path.name
    for ext in READ_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _cases(args: argparse.Namespace) -> list[tuple[str, list[Path], Path]]:
    """(case id, channel files, label file) for every case to evaluate, channels in _0000, _0001 order."""
    if not args.images.is_dir() or not args.labels.is_dir():
        raise FileNotFoundError(f"--images {args.images} and --labels {args.labels} must both be folders")
    groups: dict[str, list[Path]] = {}
    for path in sorted(args.images.iterdir()):
        cid = _case_id(path)
        if cid == path.name or path.name.startswith("."):
            continue
        base = cid[:-5] if len(cid) > 5 and cid[-5] == "_" and cid[-4:].isdigit() else cid
        groups.setdefault(base, []).append(path)
    wanted = args.cases or (json.loads(args.split.read_text())["validation"] if args.split else sorted(groups))
    missing = [c for c in wanted if c not in groups]
    if missing:
        raise FileNotFoundError(f"no image for case(s) {missing[:5]} in {args.images}")
    out = []
    for cid in wanted:
        labels = [p for p in args.labels.iterdir() if _case_id(p) == cid]
        if not labels:
            raise FileNotFoundError(f"case {cid!r}: no label map named {cid}.<ext> in {args.labels}")
        out.append((cid, groups[cid], labels[0]))
    return out


SUMMARY_METRICS = ("dice", "iou", "hd95_mm", "asd_mm", "nsd", "volume_error_ml", "abs_volume_error_ml")
UNDEFINED_POLICY = ("hd95_mm and asd_mm are null for a case whose prediction or reference of that label is empty, "
                    "nsd when both are (0 when one is); each mean is over the n cases where the metric is defined, "
                    "n_undefined counts the others; dice and iou are always defined (1 when both masks are empty, "
                    "0 when one is)")


def _summary(per_case: list[dict], names: list[str], nsd_tolerance_mm: float) -> dict:
    """Per label: each metric's mean over the cases where it is defined, with `n` (cases in that mean) and
    `n_undefined` (cases left out: HD95 and ASD when the prediction or the reference is empty, NSD when both are)."""
    labels = {}
    for name in names:
        rows = [{**c["labels"][name], "abs_volume_error_ml": abs(c["labels"][name]["volume_error_ml"])}
                for c in per_case]
        values = {key: [r[key] for r in rows if r[key] is not None] for key in SUMMARY_METRICS}
        labels[name] = {key: float(np.mean(v)) if v else None for key, v in values.items()}
        labels[name]["n"] = {key: len(v) for key, v in values.items()}
        labels[name]["n_undefined"] = {key: len(rows) - len(v) for key, v in values.items()}
    mean_dice = float(np.mean([labels[n]["dice"] for n in names])) if names else None
    return {"cases": len(per_case), "nsd_tolerance_mm": nsd_tolerance_mm, "undefined_policy": UNDEFINED_POLICY,
            "labels": labels, "mean_dice": mean_dice, "per_case": per_case}


def _print_summary(summary: dict) -> None:
    """The table: each mean with the number of cases it is over, and '(k undefined)' where cases were left out."""
    def cell(s: dict, key: str, digits: int) -> str:
        mean = "n/a" if s[key] is None else f"{s[key]:.{digits}f}"
        missing = s["n_undefined"][key]
        return f"{mean} (n={s['n'][key]}{f', {missing} undefined' if missing else ''})"

    for name, s in summary["labels"].items():
        print(f"{name:<28} dice {cell(s, 'dice', 4)}  hd95 {cell(s, 'hd95_mm', 2)} mm  "
              f"nsd@{summary['nsd_tolerance_mm']:g}mm {cell(s, 'nsd', 4)}  "
              f"|volume error| {s['abs_volume_error_ml']:.3f} mL")
    print(f"mean dice {summary['mean_dice']:.4f} over {summary['cases']} cases")


def _write_csv(path: Path, per_case: list[dict], outputs: OutputSet) -> None:
    rows = [{"case": c["case"], "label": name, **scores} for c in per_case for name, scores in c["labels"].items()]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["case", "label"])  # no foreground label
    writer.writeheader()
    writer.writerows(rows)
    outputs.write_text(path, text.getvalue())


def _reserve_outputs(args: argparse.Namespace, outputs: OutputSet) -> None:
    """Before any work: --json and --csv are two files in existing folders; their temporaries are created now."""
    plan = {f"--{flag}": getattr(args, flag) for flag in ("json", "csv") if getattr(args, flag)}
    if len(plan) == 2 and plan["--json"].resolve() == plan["--csv"].resolve():
        raise ValueError(f"--json and --csv both write {args.json}; give each its own file name")
    for key, path in plan.items():
        if path.is_dir():
            raise ValueError(f"{key} {path} is a folder; give a file name inside it (e.g. {path / 'evaluation'}"
                             f"{'.json' if key == '--json' else '.csv'})")
        if not path.resolve().parent.is_dir():
            raise FileNotFoundError(f"output folder of {key} {path} does not exist; create it first")
        outputs.reserve(path)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate; the JSON and CSV files are written together at the end, or neither on any failure."""
    with OutputSet() as outputs:
        _reserve_outputs(args, outputs)
        _evaluate(args, outputs)
    return 0


def _evaluate(args: argparse.Namespace, outputs: OutputSet) -> None:
    cases = _cases(args)
    chosen = postprocess_options(args)
    segmenter = Segmenter(args.model, device=args.device)
    used = chosen if chosen is not None else card_default(segmenter.card)
    options = SegmentOptions(overlap=args.overlap, tta=args.tta, precision=args.precision, measure=False,
                             prune_level=args.prune_level, accurate=args.accurate, postprocess=used)
    foreground = segmenter.card.foreground_labels
    per_case = []
    for n, (cid, images, label_path) in enumerate(cases, 1):
        channels, geometry = read_channels(images)
        reference, _ = read_image(label_path)
        if reference.shape != channels.shape[1:]:
            raise ValueError(f"case {cid!r}: label map {label_path} has shape {reference.shape}, the image "
                             f"{channels.shape[1:]}; give the label map on the image's grid")
        result = segmenter.segment(channels, geometry, options)
        scores = {label.name: score_label(result.labels == label.id, reference == label.id, geometry,
                                          args.nsd_tolerance_mm).to_dict() for label in foreground}
        per_case.append({"case": cid, "seconds": result.info["seconds"]["inference"], "labels": scores})
        dice = " ".join(f"{s['dice']:.3f}" for s in scores.values())
        print(f"[{n}/{len(cases)}] {cid}: dice {dice}", file=sys.stderr)
    summary = _summary(per_case, [label.name for label in foreground], args.nsd_tolerance_mm)
    _print_summary(summary)
    print(f"post-processing: {used.describe()}" + (" (the model card's default)" if chosen is None else ""))
    if args.json:
        run = {"tta": args.tta, "overlap": args.overlap, "precision": args.precision, "prune_level": args.prune_level,
               "accurate": args.accurate,
               "postprocessing": {**used.to_dict(), "source": "card" if chosen is None else "options"},
               "nsd_tolerance_mm": args.nsd_tolerance_mm}
        write_json(args.json, {"model": str(segmenter.path), "options": run, **summary}, outputs=outputs)
    if args.csv:
        _write_csv(args.csv, per_case, outputs)
