"""The panel's background thread (MedSegLib.worker): progress polled from another thread, Cancel within one window,
errors captured with their traceback, the outcome delivered exactly once; then the real job on a tiny model."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from MedSegLib.worker import BackgroundTask, CancelFlag, Cancelled, Outcome

WINDOW_S = 0.01


def fake_compute(windows: int, log: list, fail_at: int | None = None):
    """Work shaped like the engine's sliding window: check the cancel token, run a window, report progress."""

    def work(progress, cancel):
        for n in range(windows):
            cancel.check()
            log.append((n, time.perf_counter()))
            if n == fail_at:
                raise ValueError(f"window {n}: the volume has NaN voxels")
            time.sleep(WINDOW_S)
            progress((n + 1) / windows, f"window {n + 1}/{windows}")
        return {"labels": windows}

    return work


def poll_until(task: BackgroundTask, condition, timeout: float = 10.0) -> list:
    """Poll as the GUI's QTimer does; returns the progress values seen."""
    seen = []
    deadline = time.perf_counter() + timeout
    while not condition() and time.perf_counter() < deadline:
        seen.append(task.progress())
        time.sleep(0.002)
    assert condition(), "the task did not reach the expected state in time"
    return seen


def test_progress_is_polled_and_the_result_delivered_once():
    log: list = []
    task = BackgroundTask(fake_compute(20, log))
    assert task.progress().fraction == 0.0 and task.take() is None  # not started: nothing to take
    task.start()
    seen = poll_until(task, lambda: task.finished)
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and any(0 < f < 1 for f in fractions)
    assert task.progress().message == "window 20/20" and task.progress().fraction == 1.0
    outcome = task.take()
    assert isinstance(outcome, Outcome) and outcome.state == "done" and outcome.result == {"labels": 20}
    assert outcome.error is None and outcome.seconds > 0
    assert task.take() is None and task.take() is None  # exactly once


def test_cancel_takes_effect_within_one_window():
    log: list = []
    task = BackgroundTask(fake_compute(1000, log)).start()
    poll_until(task, lambda: len(log) >= 3)
    cancelled_at = time.perf_counter()
    task.cancel()
    assert task.wait(5.0)
    started_after_cancel = [n for n, t in log if t > cancelled_at]
    assert len(started_after_cancel) <= 1  # the window running when Cancel came may finish; no other starts
    outcome = task.take()
    assert outcome.state == "cancelled" and outcome.result is None and isinstance(outcome.error, Cancelled)
    assert len(log) < 1000


def test_a_cancel_after_the_last_window_still_discards_the_result():
    release = threading.Event()

    def work(progress, cancel):
        release.wait(5.0)
        return "a result the user no longer wants"

    task = BackgroundTask(work).start()
    task.cancel()
    release.set()
    assert task.wait(5.0)
    assert task.take().state == "cancelled"


def test_an_error_is_captured_with_its_traceback():
    log: list = []
    task = BackgroundTask(fake_compute(10, log, fail_at=2)).start()
    assert task.wait(5.0)
    outcome = task.take()
    assert outcome.state == "failed" and isinstance(outcome.error, ValueError)
    assert outcome.message == "window 2: the volume has NaN voxels"
    assert "ValueError" in outcome.traceback and "fake_compute" not in outcome.message
    assert task.take() is None


def test_cancel_flag_has_the_engine_token_interface():
    from medseg.sliding_window import CancelToken

    for token in (CancelFlag(), CancelToken()):
        assert not token.cancelled
        token.check()
        token.cancel()
        assert token.cancelled
        with pytest.raises(Exception, match="cancelled"):
            token.check()


# ---------------------------------------------------------------------------------------------- the real job


@pytest.fixture(scope="module")
def sample_inputs(tmp_path_factory):
    """RunInputs of the bundled sample (as read_inputs copies them) and a calibrated tiny checkpoint."""
    from module_support import SAMPLE

    from medseg.io import read_image
    from MedSegLib.run import RunInputs
    from MedSegLib.selftest import tiny_checkpoint

    image, geometry = read_image(SAMPLE)
    path = tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors", calibration=image)
    inputs = RunInputs(image[None].astype(np.float32), geometry, "vtkMRMLScalarVolumeNode1", "sample",
                       ("vtkMRMLScalarVolumeNode1",))
    return inputs, str(path)


def test_start_segmentation_runs_the_engine_and_reuses_the_model(sample_inputs):
    from medseg.inference import Segmenter
    from MedSegLib.run import ModelCache
    from MedSegLib.worker import start_segmentation

    inputs, model = sample_inputs
    cache = ModelCache()
    outcomes = []
    for _ in range(2):
        task = start_segmentation(cache, model, "cpu", inputs)
        assert task.wait(60.0)
        outcomes.append(task.take())
    assert [o.state for o in outcomes] == ["done", "done"], [o.message for o in outcomes]
    assert cache.loads == 1  # the second run did not read the checkpoint again
    reference = Segmenter(model, device="cpu").segment(inputs.channels[0], inputs.geometry)
    assert np.array_equal(outcomes[0].result.labels, reference.labels)
    assert {1, 2} <= set(np.unique(reference.labels))


def test_start_segmentation_cancelled_and_failed_give_no_result(sample_inputs):
    from medseg.inference import SegmentOptions
    from medseg.sliding_window import Cancelled as EngineCancelled
    from MedSegLib.run import ModelCache
    from MedSegLib.worker import start_segmentation

    inputs, model = sample_inputs
    cache = ModelCache()
    task = start_segmentation(cache, model, "cpu", inputs)
    task.cancel()  # before the first window: deterministic
    assert task.wait(60.0)
    outcome = task.take()
    assert outcome.state == "cancelled" and outcome.result is None
    assert outcome.error is None or isinstance(outcome.error, EngineCancelled)

    task = start_segmentation(cache, model, "cpu", inputs, SegmentOptions(activation_classes=("amygdala",)))
    assert task.wait(60.0)
    outcome = task.take()
    assert outcome.state == "failed" and "has no label 'amygdala'" in outcome.message
