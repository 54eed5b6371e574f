"""The panel's "Add checkpoint..." on a model trained with nnU-Net v2: its results folder converted once.

The user picks the results folder's ``plans.json`` or ``dataset.json`` (every fold with ``checkpoint_final.pth``
is averaged) or one fold's ``fold_N/checkpoint_final.pth`` / ``checkpoint_best.pth`` (that fold only), or gives
the folder itself; :func:`checkpoint_for` converts it with ``medseg.nnunet.import_nnunet`` into
``models_dir`` and returns the MedSeg checkpoint the panel then adds as any other. Any other path comes back
unchanged. No Qt and no scene: the module only calls it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["checkpoint_for", "imported_models_dir", "nnunet_source"]


def nnunet_source(path: str | os.PathLike[str]) -> tuple[Path, list[int | str] | None, str] | None:
    """(results folder, folds or None for all, ``final``/``best``) when `path` is an nnU-Net results folder or a
    file in one; else None."""
    p = Path(path)
    names = {"checkpoint_final.pth": "final", "checkpoint_best.pth": "best"}
    if p.is_dir():
        found = (p, None, "final")
    elif p.name in ("plans.json", "dataset.json"):
        found = (p.parent, None, "final")
    elif p.name in names and p.parent.name.startswith("fold_"):
        fold = p.parent.name.removeprefix("fold_")
        found = (p.parent.parent, [int(fold) if fold.isdigit() else fold], names[p.name])
    else:
        return None  # a checkpoint file: nothing imported (the engine, and torch, stay unloaded)
    from medseg.nnunet import is_results_folder

    return found if is_results_folder(found[0]) else None


def checkpoint_for(path: str | os.PathLike[str], models_dir: str | os.PathLike[str]) -> str:
    """The checkpoint to add for `path`: `path` itself, or the MedSeg checkpoint converted from the nnU-Net
    results folder it names (written atomically into `models_dir`, replacing an earlier conversion of the same
    folds).

    Raises:
        ValueError / FileNotFoundError: from the importer, naming the problem (the panel shows it).
    """
    source = nnunet_source(path)
    if source is None:
        return str(path)
    from medseg.nnunet import import_nnunet
    from medseg.outputs import safe_slug

    folder, folds, checkpoint = source
    which = "all" if folds is None else "-".join(f"fold{f}" for f in folds)
    name = safe_slug(f"{folder.parent.name}-{folder.name}-{which}-{checkpoint}")
    out = Path(models_dir) / f"{name}.safetensors"
    return str(import_nnunet(folder, out, folds=folds, checkpoint=checkpoint).path)


def imported_models_dir(settings_file: str | os.PathLike[str]) -> Path:
    """Where the panel keeps converted models: ``MedSeg/imported`` beside Slicer's user settings file
    (``slicer.app.slicerUserSettingsFilePath``)."""
    return Path(settings_file).parent / "MedSeg" / "imported"
