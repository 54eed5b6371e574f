"""Bundled models and sample data shipped in the extension's ``Resources/`` folder.

``Resources/`` is the repository's top-level folder in a source tree and ``<module dir>/Resources`` once
CMake has installed the module into Slicer; a wheel of the engine carries ``Models/`` and ``Samples/`` inside the
package as ``medseg/resources/`` (setup.py copies them at build time). All three are searched.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .card import ModelCard
from .checkpoint import read_card

__all__ = ["CatalogEntry", "bundled_models", "is_bare_name", "resolve_checkpoint", "resources_dir"]

log = logging.getLogger(__name__)
_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


def resources_dir() -> Path:
    """The folder holding ``Models/`` and ``Samples/``: a wheel install's own copy, then the extension's Resources
    installed beside the module in Slicer, then the source tree's."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "resources", here.parent / "Resources", here.parent.parent / "Resources"):
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


def is_bare_name(name_or_path: str | os.PathLike[str]) -> bool:
    """True for a string that can only be a bundled model's name: no folder separator, no checkpoint suffix
    (``.safetensors``, ``.pt``, ...), not ``~``, ``.`` or ``..``. A ``Path`` object is always a path."""
    if not isinstance(name_or_path, str):
        return False
    text = name_or_path
    separators = [s for s in (os.sep, os.altsep, "/") if s]
    return (bool(text) and not any(s in text for s in separators) and text not in (".", "..")
            and not text.startswith("~") and not text.lower().endswith(_SUFFIXES))


def resolve_checkpoint(name_or_path: str | os.PathLike[str]) -> Path:
    """A bundled model's name or a checkpoint path -> the checkpoint's path.

    A bare name (see :func:`is_bare_name`) only ever means a bundled model, even when a file of that name is in
    the current folder: a file is named by a path (``./name``) or by its suffix (``name.safetensors``), so a
    stray file can never silently replace a bundled model.

    Raises:
        FileNotFoundError: a path that does not exist.
        KeyError: a bare name that is not bundled; the message lists the bundled names.
    """
    text = os.fspath(name_or_path)
    if not is_bare_name(name_or_path):
        path = Path(text).expanduser()
        if path.is_file():
            return path
        raise FileNotFoundError(f"checkpoint file {text!r} does not exist; check the path")
    entries = bundled_models()
    local = Path(text).is_file()
    for entry in entries:
        if entry.name == text:
            if local:
                log.info("%r is the bundled model; the file of that name in %s is used only as ./%s", text,
                         Path.cwd(), text)
            return entry.path
    names = ", ".join(e.name for e in entries) or "none bundled yet"
    hint = f"; to use the file {text!r} in the current folder, give its path: ./{text}" if local else ""
    raise KeyError(f"unknown model {text!r}: give a checkpoint path or a bundled model name ({names}){hint}")
