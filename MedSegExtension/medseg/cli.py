"""The ``medseg`` command line: the same engine as the Slicer module, for researchers and scripts."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .card import ModelCard
from .catalog import bundled_models, resolve_checkpoint
from .checkpoint import import_state_dict, read_card
from .cli_evaluate import add_evaluate_parser
from .cli_segment import add_segment_parser
from .models import ARCHITECTURES, build_model
from .train.cli import add_train_parser

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
        print(f"  {m['name']:<24} {m['architecture']:<14} {m['summary']}")
    return 0


def _describe(card: ModelCard, params: int) -> str:
    args = ", ".join(f"{k}={v}" for k, v in card.architecture_args.items())
    lines = [f"{card.name}: {card.summary}", f"  architecture: {card.architecture}({args}), {params:,} parameters",
             "  inputs: " + ", ".join(f"{c.name} ({c.modality}, {c.normalization.kind})" for c in card.inputs),
             "  labels: " + ", ".join(f"{label.id} {label.name}" for label in card.labels),
             f"  spacing (mm, x y z): {card.spacing or 'input spacing'}; patch size: {card.patch_size}",
             f"  training: {json.dumps(card.training)}", f"  metrics: {json.dumps(card.metrics)}",
             f"  engine version {card.engine_version}, card format {card.format_version}"]
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    card = read_card(resolve_checkpoint(args.checkpoint))
    if args.json:
        print(card.to_json(indent=2))
        return 0
    model = build_model(card.architecture, **card.architecture_args)
    print(_describe(card, sum(p.numel() for p in model.parameters())))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    with open(args.card, encoding="utf-8") as f:
        card = ModelCard.from_json(f.read(), source=args.card)
    out = import_state_dict(args.state_dict, card, args.output)
    print(f"wrote {out}")
    return 0


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
    p.add_argument("checkpoint", help="bundled model name or .safetensors path")
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
    add_segment_parser(sub)
    add_evaluate_parser(sub)
    add_train_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, KeyError, MemoryError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"medseg {args.command}: error: {message}", file=sys.stderr)
        return 2
