"""Fine-tuning on corrections in the background: start, poll, cancel (the panel's and the web front end's job).

``medseg finetune`` (:mod:`medseg.train.finetune`) does the work; this module runs it in a
:class:`MedSegLib.worker.BackgroundTask`, reports its steps as progress, and makes Cancel mean "no checkpoint":

- the engine writes the new checkpoint into a hidden staging folder inside the user's models folder;
- the job then *commits* (:class:`CommitFlag`): under one lock it checks that nobody cancelled and marks the job
  committed, so a Cancel either comes first (the staged file is deleted, nothing appears) or is refused (the model
  was already saved, :meth:`CommitFlag.cancel` returns False);
- only a committed checkpoint is renamed into the models folder, where :func:`model_files` lists it for the model
  picker under its :func:`MedSegLib.panel.finetuned_title` ("hippocampus-unet3d (fine-tuned 2026-12-02, 10 cases)").

Where things go: each front end keeps a corrections folder and a models folder in its own settings, defaulting to
:func:`default_corrections_root` and :func:`default_models_folder` (``~/.medseg/...``, or ``$MEDSEG_HOME/...``).
Corrections are kept per model (:func:`corrections_folder`): a corrections folder holds one model's labels.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.text import printable  # standard library only: front ends import this module without the engine

from .i18n import tr as _
from .panel import finetuned_title
from .worker import BackgroundTask, CancelFlag

__all__ = [
    "CORRECTIONS_SETTING",
    "MODELS_SETTING",
    "CommitFlag",
    "FinetuneJobResult",
    "FinetuneRequest",
    "corrections_folder",
    "count_cases",
    "default_corrections_root",
    "default_models_folder",
    "finetune_summary",
    "medseg_home",
    "model_files",
    "start_finetune",
]

log = logging.getLogger(__name__)

CORRECTIONS_SETTING = "MedSeg/CorrectionsFolder"  # front ends' settings keys (QSettings in Slicer)
MODELS_SETTING = "MedSeg/ModelsFolder"
_STAGING_PREFIX = ".finetune-"


# ---------------------------------------------------------------------------------------------- folders


def medseg_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$MEDSEG_HOME`` if set, else ``~/.medseg``: where the user's corrections and fine-tuned models live."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("MEDSEG_HOME") or Path.home() / ".medseg").expanduser()


def default_corrections_root(environ: Mapping[str, str] | None = None) -> Path:
    """The default corrections root: one subfolder per model inside (:func:`corrections_folder`)."""
    return medseg_home(environ) / "corrections"


def default_models_folder(environ: Mapping[str, str] | None = None) -> Path:
    """The default folder of the user's fine-tuned checkpoints."""
    return medseg_home(environ) / "models"


def corrections_folder(root: str | os.PathLike[str], model_name: str) -> Path:
    """The corrections folder of one model: ``<root>/<model name as a safe file name>``."""
    from medseg.outputs import safe_slug

    return Path(root) / safe_slug(model_name)


def count_cases(folder: str | os.PathLike[str]) -> int:
    """How many cases a corrections folder holds (images in ``imagesTr/``); 0 for a missing folder."""
    images = Path(folder) / "imagesTr"
    if not images.is_dir():
        return 0
    return sum(1 for p in images.iterdir() if p.is_file() and p.name.endswith((".nii.gz", ".nii", ".nrrd")))


def model_files(folder: str | os.PathLike[str]) -> list[str]:
    """The checkpoints in the user's models folder (for the model picker), sorted; [] for a missing folder.
    Staging folders of running or interrupted jobs are hidden and not listed."""
    path = Path(folder)
    if not path.is_dir():
        return []
    return [str(p) for p in sorted(path.glob("*.safetensors")) if p.is_file()]


# ---------------------------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class FinetuneRequest:
    """One fine-tuning job, as a front end asks for it.

    Attributes:
        model: the parent: a bundled model's name or a checkpoint path.
        corrections: the corrections folder (written by "Save as a training case").
        models_folder: where the new checkpoint goes (created if missing).
        steps, lr, batch, holdout, seed, force, replay, replay_split: as ``medseg finetune`` (its defaults).
        device: ``auto``, ``cpu``, ``cuda``...; num_threads: torch CPU threads (0: torch's default).
    """

    model: str
    corrections: Path
    models_folder: Path
    steps: int = 50
    lr: float = 1e-4
    batch: int = 2
    holdout: int = 2
    seed: int = 0
    force: bool = False
    replay: Path | None = None
    replay_split: Path | None = None
    device: str = "auto"
    num_threads: int = 0


@dataclass(frozen=True)
class FinetuneJobResult:
    """What a finished job saved: the checkpoint's path and card, its title in the picker, and the engine's
    ``FinetuneResult`` (scores before and after, cases used and skipped)."""

    path: Path
    title: str
    card: Any
    engine: Any


class CommitFlag(CancelFlag):
    """A cancel token that the job commits once its checkpoint is final: after that, Cancel is refused."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._committed = False

    def cancel(self) -> bool:
        """Ask the job to stop; False when it had already committed (the checkpoint is saved)."""
        with self._lock:
            if self._committed:
                return False
            super().cancel()
            return True

    def commit(self) -> None:
        """Mark the job committed; raises ``MedSegLib.worker.Cancelled`` when it was cancelled before."""
        with self._lock:
            self.check()
            self._committed = True

    @property
    def committed(self) -> bool:
        return self._committed


def _unique(path: Path) -> Path:
    n, candidate = 1, path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
    return candidate


def _step_message(p) -> str:
    if p.eta_s > 0:
        return _("fine-tuning: step {step}/{steps}, loss {loss:.3f}, about {seconds:.0f} s left").format(
            step=p.step, steps=p.steps, loss=p.loss, seconds=p.eta_s)
    return _("fine-tuning: step {step}/{steps}, loss {loss:.3f}").format(step=p.step, steps=p.steps, loss=p.loss)


def start_finetune(request: FinetuneRequest, now: dt.datetime | None = None) -> BackgroundTask:
    """Start fine-tuning in a background thread; returns the running task.

    Poll it with ``progress()`` and ``take()`` (its result is a :class:`FinetuneJobResult`); ``cancel()`` stops it at
    the next step and writes nothing. Errors (bad corrections, a refused drop in validation Dice, a full disk) end
    the task "failed" with the engine's one-line message; nothing is written then either.
    """
    token = CommitFlag()

    def work(progress, cancel: CommitFlag) -> FinetuneJobResult:
        from medseg.device import resolve_device
        from medseg.outputs import safe_slug
        from medseg.train.finetune import FinetuneConfig, finetune

        progress(0.0, _("reading the model and the corrections"))
        folder = Path(request.models_folder)
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=folder))
        try:
            config = FinetuneConfig(
                model=str(request.model), corrections=Path(request.corrections), out=staging / "model.safetensors",
                steps=request.steps, lr=request.lr, batch=request.batch, holdout=request.holdout, seed=request.seed,
                force=request.force, replay=request.replay, replay_split=request.replay_split,
                device=str(resolve_device(request.device)), num_threads=request.num_threads)

            def on_step(p) -> None:
                cancel.check()  # raises Cancelled: the engine's OutputSet writes nothing
                progress(0.95 * p.step / max(1, p.steps), _step_message(p))

            cancel.check()
            result = finetune(config, on_step, now=now)
            progress(0.97, _("saving the fine-tuned model"))
            target = _unique(folder / f"{safe_slug(result.card.name)}.safetensors")
            cancel.commit()
            os.replace(result.out, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        title = finetuned_title(result.card) or printable(result.card.name)
        log.info("fine-tuned model %s saved as %s", result.card.name, target)
        progress(1.0, _("saved {title}").format(title=title))
        return FinetuneJobResult(target, title, result.card, result)

    return BackgroundTask(work, token, name="MedSeg fine-tuning").start()


def finetune_summary(result: FinetuneJobResult) -> str:
    """One line for the status bar: the model saved and its mean Dice before and after."""
    parts = [_("Saved {title} ({file})").format(title=result.title, file=result.path.name)]
    for kind, scores in result.engine.scores.items():
        parts.append(_("{kind} mean Dice {before:.3f} -> {after:.3f} ({cases} cases)").format(
            kind=kind, before=scores["before"]["mean_dice"], after=scores["after"]["mean_dice"],
            cases=scores["before"]["cases"]))
    if result.engine.skipped:
        parts.append(_("skipped unreadable: {names}").format(names=", ".join(result.engine.skipped)))
    return printable("; ".join(parts))

