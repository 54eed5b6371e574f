"""Run one long job in a background Python thread; the GUI polls it (no Qt here, so it is tested in pytest).

The Slicer panel starts a :class:`BackgroundTask` for the engine's work and reads it from a ``qt.QTimer`` on the main
thread every 100 ms: :meth:`BackgroundTask.progress` for the progress bar, :meth:`BackgroundTask.take` for the outcome
(exactly once). Cancel sets the task's cancel token, which the engine checks between sliding windows, so a run stops
within one window. A task that was cancelled reports "cancelled" even when the work had just finished: the panel then
puts nothing in the scene, as the user asked.

Why a thread: the engine touches no MRML object (``MedSegLib.run.compute``), PyTorch and NumPy release the GIL in their
kernels so Slicer's event loop keeps running, and a loaded model stays in memory between runs (``ModelCache``).

:func:`start_segmentation` is the Segment button's job: load (or reuse) the model, then ``run.compute``.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .i18n import tr as _

if TYPE_CHECKING:
    from medseg.inference import SegmentOptions

    from .run import ModelCache, RunInputs

__all__ = ["BackgroundTask", "CancelFlag", "Cancelled", "Outcome", "Progress", "start_segmentation"]

log = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]


class Cancelled(Exception):
    """Raised by :meth:`CancelFlag.check` once the task was cancelled."""


class CancelFlag:
    """A cancel token with the engine's interface (``cancel``, ``cancelled``, ``check``), for work that is not the
    engine's. The engine's own ``medseg.sliding_window.CancelToken`` is passed for segmentation."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled(_("cancelled by the user; nothing was changed"))


@dataclass(frozen=True)
class Progress:
    fraction: float  # 0..1
    message: str


@dataclass(frozen=True)
class Outcome:
    """How a task ended.

    Attributes:
        state: "done", "cancelled" or "failed".
        result: what the work returned ("done" only).
        error: the exception ("failed", and "cancelled" when the work raised one).
        traceback: the formatted traceback of `error` (for the log and the error dialog's details).
        seconds: wall time of the work.
    """

    state: str
    result: Any = None
    error: BaseException | None = None
    traceback: str = ""
    seconds: float = 0.0

    @property
    def message(self) -> str:
        return str(self.error) if self.error is not None else self.state


class BackgroundTask:
    """`work(progress, cancel)` in a daemon thread, with its progress, cancel and outcome readable from another thread.

    Args:
        work: the job; it calls ``progress(fraction, message)`` and checks ``cancel`` (``cancel.check()`` raises).
        cancel: the token handed to `work` (None: a :class:`CancelFlag`).
        name: the thread's name (shows in debuggers and logs).
    """

    def __init__(self, work: Callable[[ProgressFn, Any], Any], cancel: Any = None, name: str = "MedSeg worker"):
        self._work = work
        self.cancel_token = cancel if cancel is not None else CancelFlag()
        self._lock = threading.Lock()
        self._progress = Progress(0.0, _("waiting"))
        self._outcome: Outcome | None = None
        self._taken = False
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # -- the worker thread --------------------------------------------------------------------------------------
    def _report(self, fraction: float, message: str) -> None:
        fraction = min(1.0, max(0.0, float(fraction)))
        with self._lock:
            self._progress = Progress(fraction, str(message))

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            result = self._work(self._report, self.cancel_token)
        except BaseException as exc:  # the thread must always report; nothing escapes to the interpreter
            state = "cancelled" if self.cancel_token.cancelled else "failed"
            outcome = Outcome(state, None, exc, traceback.format_exc(), time.perf_counter() - started)
            if state == "failed":
                log.debug("background task failed: %s", exc)
        else:
            state = "cancelled" if self.cancel_token.cancelled else "done"
            outcome = Outcome(state, result if state == "done" else None, None, "", time.perf_counter() - started)
        with self._lock:
            self._outcome = outcome
        self._finished.set()

    # -- the GUI thread -----------------------------------------------------------------------------------------
    def start(self) -> BackgroundTask:
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the work to stop (it stops at its next check: within one sliding window for the engine)."""
        self.cancel_token.cancel()

    @property
    def cancelled(self) -> bool:
        return bool(self.cancel_token.cancelled)

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def progress(self) -> Progress:
        """The latest progress the work reported."""
        with self._lock:
            return self._progress

    def take(self) -> Outcome | None:
        """The outcome, exactly once: None while the work runs, and None again after it was taken."""
        with self._lock:
            if self._outcome is None or self._taken:
                return None
            self._taken = True
            return self._outcome

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the work has finished (scripts and tests; the GUI polls instead)."""
        return self._finished.wait(timeout)


def start_segmentation(cache: ModelCache, model: str, device: str, inputs: RunInputs,
                       options: SegmentOptions | None = None) -> BackgroundTask:
    """Start the Segment button's job in a background thread: load the model (or reuse it from `cache`), then
    ``run.compute`` on the copied `inputs`. The result is a ``SegmentationResult``, to be put in the scene with
    ``run.apply`` on the main thread."""
    from medseg.sliding_window import CancelToken

    from .run import compute

    def work(progress: ProgressFn, cancel) -> Any:
        progress(0.0, _("loading the model"))
        segmenter = cache.get(model, device)
        cancel.check()
        progress(0.0, _("segmenting on {device}").format(device=segmenter.device))
        return compute(segmenter, inputs, options, progress, cancel)

    return BackgroundTask(work, CancelToken(), name="MedSeg segmentation").start()
