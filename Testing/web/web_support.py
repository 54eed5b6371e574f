"""Shared by the WebSession tests that need no browser: a session over a data root holding the bundled sample."""

from __future__ import annotations

import shutil
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "Samples" / "hippocampus_001_T1w.nii.gz"


def open_session(root: Path, **options):
    """A `WebSession` on a new `SlicerApp`, `root` (holding a copy of the sample) as its data root."""
    from trame_slicer.core import SlicerApp

    from MedSegLib.headless import register_converter_rules
    from MedSegWeb.security import ServeOptions
    from MedSegWeb.session import WebSession

    register_converter_rules()
    shutil.copy(SAMPLE, root / SAMPLE.name)
    return WebSession(SlicerApp(), ServeOptions(data_root=root, **options))


def finish(session):
    """Wait for the session's run and return its status, which must have applied."""
    assert session.task.wait(120)
    status = session.poll()
    assert status.applied, status.error
    return status
