"""``medseg segment``: files in, a Slicer segmentation, maps and a JSON report out."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .inference import SegmentationResult, Segmenter, SegmentOptions
from .io import SEGMENTATION_EXTENSION, WRITE_EXTENSIONS, read_channels, write_image, write_json, write_segmentation
from .postprocess import PostprocessOptions
from .render import overview, write_png

__all__ = ["add_segment_parser", "cmd_segment"]

_POSTPROCESS = ("largest", "fill-holes")


def add_segment_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment", help="segment a volume with a model",
        description="Segment a 3D volume (NIfTI, NRRD, MHA or a DICOM series folder). Give one input per channel "
                    "in the model card's order (medseg info MODEL lists them). Outputs are on the input's grid.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="volume file or DICOM folder, one per channel")
    p.add_argument("--model", required=True, help="bundled model name or .safetensors checkpoint")
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
    p.add_argument("--report", metavar="FILE", help="JSON report: per-label volumes, surface, diameter, ...")
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
    p.add_argument("--prune-level", type=int, choices=(1, 2, 3, 4), help="UNet++: run the pruned sub-network")
    p.add_argument("--accurate", action="store_true", help="UNet++: average the deep-supervision heads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_segment)


def add_postprocess_arguments(p: argparse.ArgumentParser) -> None:
    """``--postprocess`` and ``--min-island-ml`` (segment and evaluate)."""
    p.add_argument("--postprocess", nargs="*", default=[], choices=_POSTPROCESS,
                   help="largest: keep the largest connected component per label; fill-holes: fill cavities")
    p.add_argument("--min-island-ml", type=float, default=0.0, help="drop islands smaller than this (mL)")


def postprocess_options(args: argparse.Namespace) -> PostprocessOptions:
    """The :class:`PostprocessOptions` of parsed :func:`add_postprocess_arguments` flags."""
    return PostprocessOptions(largest_component="largest" in args.postprocess,
                              fill_holes="fill-holes" in args.postprocess, min_island_ml=args.min_island_ml)


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
    for path in (out, args.probabilities, args.uncertainty, args.activation, args.report, args.overview):
        if path and not Path(path).resolve().parent.is_dir():
            raise FileNotFoundError(f"output folder of {path!r} does not exist; create it first")


def _progress_bar(enabled: bool):
    start = time.perf_counter()

    def show(fraction: float, message: str) -> None:
        if not enabled:
            return
        filled = int(30 * fraction)
        elapsed = time.perf_counter() - start
        eta = elapsed / fraction - elapsed if fraction > 0 else 0.0
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {100 * fraction:5.1f}% {message:<16} "
                         f"{elapsed:5.1f}s elapsed, ETA {eta:5.1f}s")
        if fraction >= 1:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


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
        probabilities=bool(args.probabilities), uncertainty=bool(args.uncertainty), activation_classes=activation,
        activation_layer=args.activation_layer, roi=tuple(args.roi) if args.roi else None,
        postprocess=postprocess_options(args),
        prune_level=args.prune_level, accurate=args.accurate)


def _write_outputs(args: argparse.Namespace, result: SegmentationResult, image: np.ndarray) -> list[str]:
    written = []
    if args.output.endswith(SEGMENTATION_EXTENSION):
        written.append(str(write_segmentation(args.output, result.labels, result.geometry, result.card.labels)))
    else:
        written.append(str(write_image(args.output, result.labels, result.geometry)))
    if args.probabilities:
        labels = result.card.foreground_labels
        for label in labels:
            path = args.probabilities if len(labels) == 1 else _with_suffix(
                args.probabilities, "_" + label.name.replace(" ", "_"))
            written.append(str(write_image(path, result.probabilities[label.id], result.geometry)))
    if args.uncertainty:
        written.append(str(write_image(args.uncertainty, result.entropy, result.geometry)))
        if result.tta_variance is not None:
            path = _with_suffix(args.uncertainty, "_tta_variance")
            written.append(str(write_image(path, result.tta_variance, result.geometry)))
    if args.activation:
        (cam,) = result.activations.values()
        written.append(str(write_image(args.activation, cam.astype(np.float32), result.geometry)))
    if args.report:
        write_json(args.report, {"inputs": [str(p) for p in args.inputs], **result.report()})
        written.append(args.report)
    if args.overview:
        heat = next(iter(result.activations.values()), result.entropy)
        colors = {label.id: label.color for label in result.card.labels}
        write_png(args.overview, overview(image[0], result.labels, result.geometry, colors, heat))
        written.append(args.overview)
    return written


def cmd_segment(args: argparse.Namespace) -> int:
    _check_output_paths(args)
    segmenter = Segmenter(args.model, device=args.device, threads=args.threads)
    options = _options(args, segmenter)
    channels, geometry = read_channels(args.inputs)
    result = segmenter.segment(channels, geometry, options, progress=_progress_bar(not args.no_progress))
    for path in _write_outputs(args, result, channels):
        print(f"wrote {path}")
    for m in result.measurements:
        print(f"  {m.name:<28} {m.volume_ml:10.3f} mL  ({m.voxel_count} voxels)")
    return 0
