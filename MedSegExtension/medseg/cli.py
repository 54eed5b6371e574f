"""The ``medseg`` command line: the same engine as the Slicer module, for researchers and scripts."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Sequence

from . import __version__
from .card import ModelCard
from .catalog import bundled_models, resolve_checkpoint
from .checkpoint import import_state_dict, parameter_count, read_card
from .cli_evaluate import add_evaluate_parser
from .cli_export import add_export_parser
from .cli_segment import add_segment_parser
from .cli_send import add_send_parser
from .cli_serve import add_serve_parser
from .models import ARCHITECTURES
from .outputs import OutputError
from .postprocess import card_default
from .text import printable
from .train.cli import add_train_parser
from .train.finetune import add_finetune_parser

__all__ = ["main"]


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc else ""


def _architectures() -> list[dict[str, str]]:
    return [{"name": name, "class": cls.__name__, "summary": _first_line(cls.__doc__)}
            for name, cls in ARCHITECTURES.items()]


def _bundled() -> list[dict[str, object]]:
    return [{"name": e.name, "path": str(e.path), "architecture": e.card.architecture,
             "summary": e.card.summary, "labels": [label.name for label in e.card.foreground_labels],
             "metrics": e.card.metrics} for e in bundled_models()]


def cmd_models(args: argparse.Namespace) -> int:
    data = {"architectures": _architectures(), "bundled_models": _bundled()}
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print("Architectures (build with medseg train, or import weights with medseg import):")
    for a in data["architectures"]:
        print(f"  {a['name']:<16} {a['summary']}")
    print("Bundled models (use by name):")
    if not data["bundled_models"]:
        print("  (none bundled yet)")
    for m in data["bundled_models"]:
        print(printable(f"  {m['name']:<24} {m['architecture']:<14} {m['summary']}"))
    return 0


def _describe(card: ModelCard, params: int) -> str:
    args = ", ".join(f"{k}={v}" for k, v in card.architecture_args.items())
    lines = [f"{card.name}: {card.summary}", f"  architecture: {card.architecture}({args}), {params:,} parameters",
             "  inputs: " + ", ".join(f"{c.name} ({c.modality}, {c.normalization.kind})" for c in card.inputs),
             "  labels: " + ", ".join(f"{label.id} {label.name}" for label in card.labels),
             f"  spacing (mm, x y z): {card.spacing or 'input spacing'}; patch size: {card.patch_size}; "
             f"orientation: {card.orientation or 'not recorded (volumes fed as stored)'}",
             f"  training: {json.dumps(card.training)}", f"  metrics: {json.dumps(card.metrics)}",
             f"  calibration: {json.dumps(card.calibration) if card.calibration else 'none'}",
             f"  post-processing by default: {card_default(card).describe()} (medseg segment --postprocess "
             f"overrides it)",
             *([f"  ensemble: mean logits of {', '.join(card.ensemble)}"] if card.ensemble else []),
             *([f"  runs as: {json.dumps(card.inference)}"] if card.inference else []),
             f"  engine version {card.engine_version}, card format {card.format_version}"]
    return "\n".join(printable(line) for line in lines)  # card text: no escape sequences reach the terminal


def cmd_info(args: argparse.Namespace) -> int:
    path = resolve_checkpoint(args.checkpoint)
    card = read_card(path)
    if args.json:
        print(card.to_json(indent=2))  # json.dumps escapes every control character
        return 0
    print(_describe(card, parameter_count(card, str(path))))  # counted on the meta device: nothing allocated
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    with open(args.card, encoding="utf-8") as f:
        card = ModelCard.from_json(f.read(), source=args.card)
    out = import_state_dict(args.state_dict, card, args.output)
    print(f"wrote {out}")
    return 0


def cmd_import_nnunet(args: argparse.Namespace) -> int:
    from .nnunet import import_nnunet

    folds = None if not args.folds else ("all" if args.folds == ["all"] else args.folds)
    done = import_nnunet(args.results_folder, args.output, args.configuration, folds, args.checkpoint)
    print(f"wrote {done.path} ({done.card.architecture}, {len(done.folds)} fold(s): {', '.join(done.folds)})")
    return 0


def _fold(text: str) -> int | str:
    if text == "all":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"a fold is a number (0-4) or 'all', got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medseg", description="U-Net family segmentation: models, checkpoints, "
                                     "inference. The engine behind the MedSeg 3D Slicer extension.")
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("models", help="list architectures and bundled models",
                       description="List the registered architectures and the bundled, ready-to-use models.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("info", help="print a checkpoint's model card",
                       description="Print the model card of a checkpoint file or bundled model.")
    p.add_argument("checkpoint", help="a bundled model's name (medseg models) or a checkpoint path "
                   "(name.safetensors, ./name)")
    p.add_argument("--json", action="store_true", help="print the card as JSON")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("import", help="convert a plain PyTorch state dict into a MedSeg checkpoint",
                       description="Convert a plain PyTorch state dict (loaded with weights_only=True, never "
                                   "unpickling code) into a self-describing .safetensors checkpoint. The card "
                                   "names the architecture explicitly.")
    p.add_argument("state_dict", help=".pt/.pth file holding model.state_dict()")
    p.add_argument("--card", required=True, help="model card JSON (architecture, arguments, inputs, labels, ...)")
    p.add_argument("--output", required=True, help="the .safetensors file to write")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("import-nnunet", help="convert an nnU-Net v2 results folder into a MedSeg checkpoint",
                       description="Convert a model trained with nnU-Net v2 (its results folder: plans.json, "
                                   "dataset.json, fold_N/checkpoint_final.pth) into one .safetensors checkpoint that "
                                   "MedSeg runs as nnU-Net's predictor does; several folds are averaged. Checkpoints "
                                   "are read with weights_only=True (never unpickling code).")
    p.add_argument("results_folder", help="nnUNet_results/DatasetXXX_Name/Trainer__Plans__configuration")
    p.add_argument("--configuration", help="nnU-Net configuration (default: from the folder name, else 3d_fullres)")
    p.add_argument("--folds", nargs="+", type=_fold, metavar="FOLD",
                   help="folds to average, e.g. 0 1 2 3 4, or 'all' for fold_all (default: every fold_N present)")
    p.add_argument("--checkpoint", choices=("final", "best"), default="final", help="checkpoint_final or _best")
    p.add_argument("--output", required=True, help="the .safetensors file to write")
    p.set_defaults(func=cmd_import_nnunet)
    add_segment_parser(sub)
    add_evaluate_parser(sub)
    add_export_parser(sub)
    add_train_parser(sub)
    add_finetune_parser(sub)
    add_send_parser(sub)
    add_serve_parser(sub)
    return parser


EXIT_ERROR = 2  # a problem the user can fix: input, output, model, device, memory (as argparse's usage errors)
EXIT_BUG = 1  # an unexpected exception: a bug in medseg; the traceback is printed with -v
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; every failure ends in one ``medseg COMMAND: error: ...`` line on stderr.

    Exit codes: 0 done, 2 an error the message explains (bad input or output path, unwritable folder,
    full disk, model or device problem), 1 an unexpected error (a bug; ``-v`` prints its traceback),
    130 interrupted by Ctrl-C. Outputs are written all together at the end, so after any non-zero exit
    no output file is new or replaced.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"medseg {args.command}: interrupted (Ctrl-C); outputs are only written when a run completes",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the command line's last resort: one line, the traceback with -v
        message, code = _error_message(exc)
        if args.verbose:
            traceback.print_exc()
        print(f"medseg {args.command}: error: {printable(message)}", file=sys.stderr)
        return code


def _error_message(exc: Exception) -> tuple[str, int]:
    """One line and the exit code for an exception that ended a command."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0]), EXIT_ERROR
    if isinstance(exc, (ValueError, MemoryError, OutputError)) or (isinstance(exc, OSError) and not exc.strerror):
        return str(exc), EXIT_ERROR
    if isinstance(exc, OSError):  # raised by the system: "[Errno 13] Permission denied: 'x'"
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot access{where}: {exc.strerror}; check the path, its permissions and the free space", EXIT_ERROR
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)[:300]
    if isinstance(exc, RuntimeError):  # PyTorch's or ITK's: a device, memory, model or file failure
        return (f"the run failed: {first}; if it ran out of memory use --roi, a smaller --batch-size or "
                f"--device cpu; run with -v for the traceback"), EXIT_ERROR
    return (f"unexpected {type(exc).__name__}: {first}; this is a bug in medseg: run again with -v for the traceback "
            f"and report it"), EXIT_BUG
