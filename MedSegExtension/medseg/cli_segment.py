"""``medseg segment``: files in, a Slicer segmentation, maps and a JSON report out."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from .card import Label, ModelCard
from .catalog import resolve_checkpoint
from .checkpoint import read_card
from .cli_export import DicomExport, add_dicom_arguments, checkpoint_sha256, dicom_plan, read_dicom_source, write_dicom
from .cli_report import add_report_arguments, report_plan, write_report_files
from .inference import SegmentationResult, Segmenter, SegmentOptions
from .io import SEGMENTATION_EXTENSION, WRITE_EXTENSIONS, read_channels, write_image, write_json, write_segmentation
from .outputs import OutputSet, unique_slugs
from .postprocess import PostprocessOptions
from .render import overview, write_png
from .text import printable

__all__ = ["add_segment_parser", "cmd_segment"]

_POSTPROCESS = ("largest", "fill-holes", "none")


def add_segment_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment", help="segment a volume with a model",
        description="Segment a 3D volume (NIfTI, NRRD, MHA or a DICOM series folder). Give one input per channel "
                    "in the model card's order (medseg info MODEL lists them). Outputs are on the input's grid and "
                    "all or nothing: written together at the end, none (and no old file replaced) after an error or "
                    "Ctrl-C. Exit codes: 0 done, 2 error, 1 unexpected error (-v: traceback), 130 Ctrl-C.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="volume file or DICOM folder, one per channel")
    p.add_argument("--model", required=True, help="a bundled model's name (medseg models) or a checkpoint path "
                   "(name.safetensors, ./name)")
    p.add_argument("--output", required=True, help="label output: .seg.nrrd (Slicer segmentation) or .nii.gz/.nrrd")
    p.add_argument("--probabilities", metavar="FILE", help="probability map(s); one file per foreground label "
                   "(the label name is added before the extension when there are several)")
    p.add_argument("--uncertainty", metavar="FILE", help="normalised entropy map in [0, 1] (with --tta also "
                   "FILE_tta_variance: variance over the flips of the chosen label's probability)")
    p.add_argument("--activation", metavar="FILE", help="Grad-CAM map in [0, 1] of --activation-class")
    p.add_argument("--activation-class", metavar="NAME", help="label name or id for --activation "
                   "(default: the first foreground label)")
    p.add_argument("--activation-layer", metavar="MODULE", help="network module for Grad-CAM (default: the last "
                   "decoder block)")
    p.add_argument("--report", metavar="FILE", help="JSON report: per-label volumes, surface, diameter, ..., and "
                   "the regions to review (uncertain voxels near the boundaries) with each segment's confidence")
    p.add_argument("--overview", metavar="PNG", help="picture: axial, coronal and sagittal slices with the mask, "
                   "and below it the Grad-CAM (with --activation) or the entropy (with --uncertainty)")
    p.add_argument("--roi", nargs=6, type=int, metavar=("I0", "I1", "J0", "J1", "K0", "K1"),
                   help="segment only this half-open index box; the result is pasted back into the full grid")
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (8 passes in 3D)")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap in [0, 1) (default 0.5)")
    p.add_argument("--batch-size", type=int, help="windows per forward (default 1 on CPU, 4 on GPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto: fp16 autocast on CUDA, bf16 on CPUs with native bfloat16, else fp32")
    p.add_argument("--threads", type=int, help="CPU threads (default: one per physical core)")
    add_postprocess_arguments(p)
    add_dicom_arguments(p)
    add_report_arguments(p)
    p.add_argument("--prune-level", type=int, choices=(1, 2, 3, 4), help="UNet++: run the pruned sub-network")
    p.add_argument("--accurate", action="store_true", help="UNet++: average the deep-supervision heads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_segment)


def add_postprocess_arguments(p: argparse.ArgumentParser) -> None:
    """``--postprocess`` and ``--min-island-ml`` (segment and evaluate)."""
    p.add_argument("--postprocess", nargs="+", choices=_POSTPROCESS,
                   help="largest: keep the largest connected component per label; fill-holes: fill cavities; "
                        "none: no post-processing. Without this flag and --min-island-ml the model card's default "
                        "applies (medseg info MODEL shows it); with either, exactly what they say")
    p.add_argument("--min-island-ml", type=float, help="drop islands smaller than this (mL)")


def postprocess_options(args: argparse.Namespace) -> PostprocessOptions | None:
    """The :class:`PostprocessOptions` of parsed :func:`add_postprocess_arguments` flags; None when neither flag
    was given (the model card's default applies)."""
    steps, island = args.postprocess, args.min_island_ml
    if steps is None and island is None:
        return None
    steps = steps or []
    if "none" in steps and (len(steps) > 1 or island):
        given = f"--postprocess {' '.join(steps)}" + (f" --min-island-ml {island:g}" if island else "")
        raise ValueError(f"{given}: 'none' turns post-processing off; give it alone, or only the steps to run "
                         f"({', '.join(_POSTPROCESS[:-1])}, --min-island-ml)")
    return PostprocessOptions(largest_component="largest" in steps, fill_holes="fill-holes" in steps,
                              min_island_ml=0.0 if island is None else island)


def _check_output_paths(args: argparse.Namespace) -> None:
    """Refuse unsupported extensions and missing folders before any work is done."""
    out = args.output
    if not (out.endswith(SEGMENTATION_EXTENSION) or out.endswith(WRITE_EXTENSIONS)):
        raise ValueError(f"--output {out!r}: use {SEGMENTATION_EXTENSION} (Slicer segmentation) or one of "
                         f"{', '.join(WRITE_EXTENSIONS)} (label map)")
    for flag in ("probabilities", "uncertainty", "activation"):
        path = getattr(args, flag)
        if path and not path.endswith(WRITE_EXTENSIONS):
            raise ValueError(f"--{flag} {path!r}: use one of {', '.join(WRITE_EXTENSIONS)}")
    if args.overview and not args.overview.lower().endswith(".png"):
        raise ValueError(f"--overview {args.overview!r}: the overview is a .png picture")
    _check_output_folders([out, args.probabilities, args.uncertainty, args.activation, args.report, args.overview,
                           args.dicom_seg, args.dicom_sr])


def _check_output_folders(paths) -> None:
    """Refuse an output whose folder does not exist (None entries are skipped)."""
    for path in paths:
        if path and not Path(path).resolve().parent.is_dir():
            raise FileNotFoundError(f"output folder of {str(path)!r} does not exist; create it first")


def _output_plan(args: argparse.Namespace, card: ModelCard) -> dict[str, Path]:
    """Every file the run will write, keyed by what the user knows it as (its flag, and the label of a per-label
    probability map, whose file name gets the label's safe slug, never its raw name)."""
    plan = {"--output": args.output}
    if args.probabilities:
        labels = card.foreground_labels
        slugs = unique_slugs({label.id: label.name for label in labels})
        for label in labels:
            plan[_probability_key(label, labels)] = (args.probabilities if len(labels) == 1 else
                                                     _with_suffix(args.probabilities, "_" + slugs[label.id]))
    if args.uncertainty:
        plan["--uncertainty"] = args.uncertainty
        if args.tta:
            plan["--uncertainty's TTA variance"] = _with_suffix(args.uncertainty, "_tta_variance")
    for flag in ("activation", "report", "overview"):
        if getattr(args, flag):
            plan[f"--{flag}"] = getattr(args, flag)
    plan.update(dicom_plan(args))
    plan.update(report_plan(args, card))
    return {key: Path(path) for key, path in plan.items()}


def _probability_key(label: Label, labels: list[Label]) -> str:
    return "--probabilities" if len(labels) == 1 else f"--probabilities (label {label.id} {label.name!r})"


def _check_plan(plan: dict[str, Path], inputs: list[Path]) -> None:
    """Before any work: no output is a folder, an input (or inside a DICOM folder input), or another output."""
    seen: dict[str, str] = {}
    for key, path in plan.items():
        if path.is_dir():
            raise ValueError(f"{key} {path} is a folder; give a file name inside it (e.g. {path / path.name}"
                             f"{_extension(str(path))})")
        resolved = _same_key(path)
        if resolved in seen:
            raise ValueError(f"{seen[resolved]} and {key} both write {path}; give each output its own file name")
        seen[resolved] = key
        for source in inputs:
            if _same_key(source) == resolved or (source.exists() and path.exists() and os.path.samefile(source, path)):
                raise ValueError(f"{key} {path} is the input {source}: it would be overwritten; write the output "
                                 f"to another file")
            if source.is_dir() and Path(resolved).is_relative_to(source.resolve()):
                raise ValueError(f"{key} {path} is inside the input folder {source}: a file written there would "
                                 f"be mixed into the DICOM series; write the output to another folder")


def _same_key(path: Path) -> str:
    return os.path.normcase(str(path.resolve()))


def _extension(name: str) -> str:
    return next((ext for ext in (SEGMENTATION_EXTENSION, *WRITE_EXTENSIONS) if name.endswith(ext)), ".nii.gz")


class _ProgressBar:
    """A one-line progress bar on stderr; :meth:`close` ends an unfinished line so that an error starts its own."""

    def __init__(self, enabled: bool):
        self.enabled, self.start, self.open = enabled, time.perf_counter(), False

    def __call__(self, fraction: float, message: str) -> None:
        if not self.enabled:
            return
        filled = int(30 * fraction)
        elapsed = time.perf_counter() - self.start
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {100 * fraction:5.1f}% {message:<16} "
                         f"{elapsed:5.1f}s elapsed, ETA {eta:5.1f}s")
        self.open = fraction < 1
        if not self.open:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.open:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.open = False


def _with_suffix(path: str, suffix: str) -> str:
    for ext in (".nii.gz", *WRITE_EXTENSIONS):
        if path.endswith(ext):
            return path[: -len(ext)] + suffix + ext
    return path + suffix


def _options(args: argparse.Namespace, segmenter: Segmenter) -> SegmentOptions:
    activation = ()
    if args.activation:
        name = args.activation_class or segmenter.card.foreground_labels[0].name
        activation = (int(name) if name.isdigit() else name,)
    return SegmentOptions(
        overlap=args.overlap, tta=args.tta, batch_size=args.batch_size, precision=args.precision,
        probabilities=bool(args.probabilities or args.seg_fractional),
        uncertainty=bool(args.uncertainty or args.pdf), activation_classes=activation,  # --pdf: its heat map
        activation_layer=args.activation_layer, roi=tuple(args.roi) if args.roi else None,
        postprocess=postprocess_options(args),
        prune_level=args.prune_level, accurate=args.accurate, review=bool(args.report))


def _write_outputs(args: argparse.Namespace, result: SegmentationResult, image: np.ndarray, plan: dict[str, Path],
                   outputs: OutputSet) -> None:
    """Write every planned file into `outputs` (renamed into place together when the set is committed)."""
    geometry = result.geometry
    if args.output.endswith(SEGMENTATION_EXTENSION):
        write_segmentation(plan["--output"], result.labels, geometry, result.card.labels, outputs=outputs)
    else:
        write_image(plan["--output"], result.labels, geometry, outputs=outputs)
    if args.probabilities:
        labels = result.card.foreground_labels
        for label in labels:
            write_image(plan[_probability_key(label, labels)], result.probabilities[label.id], geometry,
                        outputs=outputs)
    if args.uncertainty:
        write_image(plan["--uncertainty"], result.entropy, geometry, outputs=outputs)
        if result.tta_variance is not None:
            write_image(plan["--uncertainty's TTA variance"], result.tta_variance, geometry, outputs=outputs)
    if args.activation:
        (cam,) = result.activations.values()
        write_image(plan["--activation"], cam.astype(np.float32), geometry, outputs=outputs)
    if args.report:
        write_json(plan["--report"], {"inputs": [str(p) for p in args.inputs], **result.report()}, outputs=outputs)
    if args.overview:
        heat = next(iter(result.activations.values()), result.entropy)
        colors = {label.id: label.color for label in result.card.labels}
        write_png(plan["--overview"], overview(image[0], result.labels, geometry, colors, heat), outputs=outputs)


def _write_report(args: argparse.Namespace, result: SegmentationResult, image: np.ndarray, plan: dict[str, Path],
                  outputs: OutputSet) -> None:
    """--pdf (heat map: the Grad-CAM when asked for, else the uncertainty) and --meshes, into `outputs`."""
    cam = next(iter(result.activations.items()), None)
    overlay, name = ((cam[1], f"Grad-CAM of {cam[0]}") if cam is not None else
                     (result.entropy, "uncertainty (normalised entropy)"))
    write_report_files(plan, outputs, image=image[0], labels=result.labels, geometry=result.geometry,
                       card=result.card, measurements=result.measurements, source=args.inputs[0], overlay=overlay,
                       overlay_name=name if overlay is not None else "", edited=False, warnings=result.warnings)


def _dicom_export(args: argparse.Namespace, plan: dict[str, Path], checkpoint: Path) -> DicomExport | None:
    """With --dicom-seg: the first input's source series (a DICOM folder with its UIDs), read before any work."""
    if "--dicom-seg" not in plan:
        return None
    source = read_dicom_source(args.inputs[0])
    return DicomExport(source, read_card(checkpoint), checkpoint_sha256(checkpoint), edited=False)


class _WarningCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _collected_warnings():
    """The messages of every warning the engine logs meanwhile (they are printed as well)."""
    collector, logger = _WarningCollector(), logging.getLogger(__package__)
    logger.addHandler(collector)
    try:
        yield collector.messages
    finally:
        logger.removeHandler(collector)


def cmd_segment(args: argparse.Namespace) -> int:
    """Check every output path, segment, then write all outputs together (none on any failure or Ctrl-C)."""
    _check_output_paths(args)
    checkpoint = resolve_checkpoint(args.model)
    plan = _output_plan(args, read_card(checkpoint))
    _check_plan(plan, [Path(p) for p in args.inputs] + [checkpoint])
    dicom = _dicom_export(args, plan, checkpoint)
    segmenter = Segmenter(args.model, device=args.device, threads=args.threads)
    options = _options(args, segmenter)
    with OutputSet() as outputs:
        for path in plan.values():
            outputs.reserve(path)  # an unwritable folder fails now, not after the inference
        with _collected_warnings() as warnings:  # read-time ones too (no UIDs, duplicate slices): into the report
            channels, geometry = read_channels(args.inputs)
            if dicom is not None:
                dicom.source.slices(geometry, channels.shape[1:])  # the series that was read, before any work
            progress = _ProgressBar(not args.no_progress)
            try:
                result = segmenter.segment(channels, geometry, options, progress=progress)
            finally:
                progress.close()
        result.warnings = list(dict.fromkeys([*warnings, *result.warnings]))
        _write_outputs(args, result, channels, plan, outputs)
        _write_report(args, result, channels, plan, outputs)
        if dicom is not None:
            write_dicom(plan, outputs, dicom, result.labels, result.geometry, result.measurements,
                        result.probabilities if args.seg_fractional else None)
    for path in outputs.committed:
        print(f"wrote {path}")
    for m in result.measurements:
        print(f"  {printable(m.name):<28} {m.volume_ml:10.3f} mL  ({m.voxel_count} voxels){_interval_text(m)}")
    card_steps = postprocess_steps(result.postprocessing)
    if result.postprocessing.get("source") == "card" and card_steps.active:
        print(f"  post-processing: {card_steps.describe()} (the model card's default; --postprocess none: off)")
    return 0


def postprocess_steps(record: dict) -> PostprocessOptions:
    """The steps of a result's ``postprocessing`` record (``SegmentationResult.postprocessing``)."""
    return PostprocessOptions.from_dict({k: record[k] for k in ("largest_component", "fill_holes", "min_island_ml")})


def _interval_text(m) -> str:
    """The volume line's interval: the calibrated "90 % interval", or the uncalibrated "TTA range"."""
    if m.volume_interval_ml is None:
        return ""
    lo, hi = m.volume_interval_ml
    what = "TTA range" if m.volume_interval_level is None else f"{m.volume_interval_level * 100:g} % interval"
    return f"  {what} {lo:.3f}-{hi:.3f} mL"
