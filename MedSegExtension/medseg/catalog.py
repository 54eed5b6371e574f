"""Bundled models and sample data shipped in the extension's ``Resources/`` folder.

``Resources/`` is the repository's top-level folder in a source tree and ``<module dir>/Resources`` once
CMake has installed the module into Slicer; both are searched.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .card import ModelCard
from .checkpoint import read_card

__all__ = ["CatalogEntry", "bundled_models", "resolve_checkpoint", "resources_dir"]

log = logging.getLogger(__name__)
_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


def resources_dir() -> Path:
    """The extension's Resources folder (installed layout first, then the source tree)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "Resources", here.parent.parent / "Resources"):
        if (candidate / "Models").is_dir():
            return candidate
    raise FileNotFoundError(f"no Resources/Models folder beside {here}; reinstall MedSeg or run from its source tree")


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    path: Path
    card: ModelCard


def bundled_models(directory: str | os.PathLike[str] | None = None) -> list[CatalogEntry]:
    """Every valid checkpoint in ``Resources/Models`` (an invalid one is logged and skipped), sorted by name."""
    folder = Path(directory) if directory is not None else resources_dir() / "Models"
    entries = []
    for path in sorted(folder.glob("*.safetensors")):
        try:
            card = read_card(path)
        except ValueError as exc:
            log.warning("skipping bundled model %s: %s", path.name, exc)
            continue
        entries.append(CatalogEntry(card.name, path, card))
    return sorted(entries, key=lambda e: e.name)


def resolve_checkpoint(name_or_path: str | os.PathLike[str]) -> Path:
    """A bundled model's name or a checkpoint path -> the checkpoint's path.

    Raises:
        FileNotFoundError: a path that does not exist.
        KeyError: a name that is not bundled; the message lists the bundled names.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    looks_like_path = path.suffix in _SUFFIXES or os.sep in text or "/" in text
    if path.is_file():
        return path
    if looks_like_path:
        raise FileNotFoundError(f"checkpoint file {text!r} does not exist; check the path")
    entries = bundled_models()
    for entry in entries:
        if entry.name == text:
            return entry.path
    names = ", ".join(e.name for e in entries) or "none bundled yet"
    raise KeyError(f"unknown model {text!r}: give a checkpoint path or a bundled model name ({names})")
