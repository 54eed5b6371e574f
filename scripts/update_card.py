#!/usr/bin/env python3
"""Rewrite the model card of a checkpoint in place, leaving its tensors byte for byte as they are.

    .venv/bin/python scripts/update_card.py Resources/Models/hippocampus-unet3d.safetensors \\
        --set orientation='"RAS"' [--set metrics.evaluation.cases=42 ...] [--output COPY.safetensors]

Each ``--set KEY=VALUE`` takes a JSON value (a string needs its quotes: ``'"RAS"'``; ``null`` removes the
key); a dotted KEY reaches into objects (``training.license``). The new card is validated, the weights are
loaded into the network the card describes (``strict``), and the file is replaced atomically (a temporary
file in the same folder, renamed over it): a failure leaves the old file untouched. Only the safetensors
header changes; the tensor bytes are copied unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from medseg.card import ModelCard
from medseg.checkpoint import CARD_KEY
from medseg.models import build_model

__all__ = ["parse_setting", "update_card"]


def parse_setting(text: str) -> tuple[str, Any]:
    """``KEY=JSON`` -> (KEY, value); ValueError names the setting and the fix."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--set {text!r}: expected KEY=JSON_VALUE, for example orientation='\"RAS\"'")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--set {text!r}: the value is not JSON ({exc}); quote strings: {key}='\"{value}\"'") from None


def _apply(card: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = card
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {key}: {part!r} is not an object in the card; set it as a whole")
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The safetensors header (JSON) and the offset where the tensor bytes start."""
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path} is too short to be a safetensors file")
        (size,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: the safetensors header is not JSON ({exc}); is it a safetensors file?") from None
    if CARD_KEY not in header.get("__metadata__", {}):
        raise ValueError(f"{path} has no MedSeg model card (metadata key {CARD_KEY!r}); write one with medseg import")
    return header, 8 + size


def _write(path: Path, out: Path, header: dict[str, Any], data_start: int) -> Path:
    """Write `header` and `path`'s tensor bytes to a temporary beside `out`; returns the temporary."""
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # the tensor bytes stay 8-byte aligned, as safetensors writes them
    if len(blob) % 256 == 0x80:  # a first byte 0x80 looks like a pickle to older engines' file sniffing
        blob += b" " * 8
    fd, tmp = tempfile.mkstemp(prefix=out.name, suffix=".tmp", dir=out.parent)
    with os.fdopen(fd, "wb") as dst, path.open("rb") as src:
        dst.write(struct.pack("<Q", len(blob)) + blob)
        src.seek(data_start)
        while chunk := src.read(1 << 20):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return Path(tmp)


def update_card(path: str | os.PathLike[str], settings: dict[str, Any],
                output: str | os.PathLike[str] | None = None) -> ModelCard:
    """Set card fields of the checkpoint `path` (dotted keys; None removes), written to `output` (default: `path`).

    Raises:
        ValueError: the file has no card, a key cannot be set, the new card is invalid, or the weights do not load
            into the network it describes. Nothing is written then.
    """
    path = Path(path)
    out = Path(output) if output is not None else path
    header, data_start = _read_header(path)
    card = json.loads(header["__metadata__"][CARD_KEY])
    for key, value in settings.items():
        _apply(card, key, value)
    new = ModelCard.from_dict(card, source=f"the updated card of {path}")
    header["__metadata__"][CARD_KEY] = new.to_json()
    tmp = _write(path, out, header, data_start)
    try:
        model = build_model(new.architecture, **new.architecture_args)
        model.load_state_dict(load_file(str(tmp)), strict=True)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return new


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a MedSeg .safetensors checkpoint")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=JSON",
                   help="a card field and its JSON value (repeatable)")
    p.add_argument("--output", type=Path, help="write a copy there instead of replacing the checkpoint")
    args = p.parse_args(argv)
    try:
        if not args.checkpoint.is_file():
            raise FileNotFoundError(f"{args.checkpoint} does not exist; give a .safetensors checkpoint")
        settings = dict(parse_setting(s) for s in args.settings)
        if not settings:
            raise ValueError("nothing to change; give at least one --set KEY=JSON_VALUE")
        card = update_card(args.checkpoint, settings, args.output)
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    changed = ", ".join(f"{k}={json.dumps(v)}" for k, v in settings.items())
    print(f"{args.output or args.checkpoint}: card {card.name!r} updated ({changed}); tensors unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
