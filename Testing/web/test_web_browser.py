"""`medseg serve` in a real browser: Debian's Chromium, headless, driven by Playwright, against a real server.

One server (a subprocess of `medseg serve` on a free port, its data root a temporary folder) and one page serve the
whole module, in workflow order: open the bundled sample by path, Segment, compare the table with the engine run
directly, switch overlays, paint and undo, download, Cancel a long run, refuse bad input. Screenshots go to
``$MEDSEG_WEB_SCREENSHOTS`` when set (``Resources/Screenshots`` for the README), else to the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("trame_slicer", reason="needs trame-slicer (the web extra: see scripts/setup.sh)")
playwright_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("needs Debian's chromium (apt-get install chromium; Playwright's own download is not used)",
                allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "Resources" / "Samples" / "hippocampus_001_T1w.nii.gz"
MODEL = "hippocampus-unet3d"
MAX_UPLOAD_MB = 2
TIMEOUT_MS = 120_000
EDITED = ("document.querySelectorAll('#volume-table td.col-edited')[{row} - 1].textContent.trim() === '{state}'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_dicom_series(image, folder: Path) -> None:
    """`image` as an MR DICOM series (one file per slice, UIDs, position and orientation per slice)."""
    import SimpleITK as sitk
    from pydicom.uid import generate_uid

    folder.mkdir()
    image = sitk.Cast(image, sitk.sitkInt16)
    direction = image.GetDirection()
    spacing = image.GetSpacing()
    common = {"0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0008|0060": "MR", "0010|0010": "MedSeg^Web",
              "0010|0020": "WEB001", "0020|000d": generate_uid(), "0020|000e": generate_uid(),
              "0020|0052": generate_uid(), "0008|0020": "20260101", "0008|0030": "120000",
              "0020|0037": "\\".join(f"{v:.6f}" for v in (*direction[0::3], *direction[1::3])),
              "0028|0030": f"{spacing[1]:.6f}\\{spacing[0]:.6f}", "0018|0050": f"{spacing[2]:.6f}"}
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        piece = image[:, :, k]
        for tag, value in common.items():
            piece.SetMetaData(tag, value)
        piece.SetMetaData("0008|0018", generate_uid())
        piece.SetMetaData("0020|0013", str(k + 1))
        piece.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(piece)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """The server's data root: the sample, a large noise volume (a long run to cancel), a link out of the root."""
    import SimpleITK as sitk

    root = tmp_path_factory.mktemp("data_root")
    shutil.copy(SAMPLE, root / SAMPLE.name)
    noise = np.random.default_rng(0).normal(60, 20, (96, 160, 160)).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(noise), str(root / "noise.nii.gz"))
    _write_dicom_series(sitk.ReadImage(str(SAMPLE)), root / "dicom_series")
    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(SAMPLE, outside / "secret.nii.gz")
    (root / "escape.nii.gz").symlink_to(outside / "secret.nii.gz")
    return root


@pytest.fixture(scope="module")
def server(data_root):
    port = _free_port()
    medseg = [sys.executable, "-c", "import sys; from medseg.cli import main; sys.exit(main())"]
    log = open(data_root.parent / "server.log", "w")
    proc = subprocess.Popen([*medseg, "serve", "--port", str(port), "--data-root", str(data_root),
                             "--max-upload-mb", str(MAX_UPLOAD_MB)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"medseg serve exited with {proc.returncode}: {(data_root.parent / 'server.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/"
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture(scope="module")
def page(server):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 850}, accept_downloads=True)
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server)
        page.wait_for_selector("#segment-button")
        yield page
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("MEDSEG_WEB_SCREENSHOTS")
    return Path(folder) if folder else tmp_path_factory.mktemp("screenshots")


def _message(page) -> str:
    return page.inner_text("#message").strip()


def _wait_message(page, text: str) -> str:
    page.wait_for_function("t => document.querySelector('#message').textContent.includes(t)", arg=text)
    return _message(page)


def _open(page, relative: str) -> None:
    page.fill("#path-input", relative)
    page.click("#open-path")


def _table(page) -> dict[str, dict[str, str]]:
    rows = {}
    for tr in page.locator("#volume-table tr").all()[1:]:
        cells = {c.get_attribute("class").split()[0][4:]: c.inner_text().strip() for c in tr.locator("td").all()}
        rows[cells["name"]] = cells
    return rows


def _axial(page):
    return page.locator("#views img").first


def _pick(page, select_id: str, text: str) -> None:
    page.locator(f".v-select:has(#{select_id})").click()
    page.locator(".v-overlay--active .v-list-item", has_text=text).first.click()


@pytest.fixture(scope="module")
def engine_volumes():
    """The engine alone on the same file, with the page's default options (the reference for the table)."""
    from medseg.catalog import resolve_checkpoint
    from medseg.inference import Segmenter, SegmentOptions
    from medseg.io import read_image

    image, geometry = read_image(SAMPLE)
    result = Segmenter(resolve_checkpoint(MODEL), device="auto").segment(
        image, geometry, SegmentOptions(probabilities=True, uncertainty=True, review=True))
    return {m.name: (m.voxel_count, m.volume_ml) for m in result.measurements}


def test_segment_matches_engine(page, shots, engine_volumes):
    _open(page, SAMPLE.name)
    assert "Opened" in _wait_message(page, "Opened")
    page.wait_for_function("!document.querySelector('#segment-button').disabled")
    page.click("#segment-button")
    _wait_message(page, "Done in")
    page.wait_for_selector("#volume-table td")
    assert float(page.inner_text("#progress-value")) == 100
    table = _table(page)
    assert set(table) == set(engine_volumes)
    for name, (voxels, volume_ml) in engine_volumes.items():
        assert int(table[name]["voxel_count"]) == voxels, name
        assert float(table[name]["volume_ml"]) == pytest.approx(volume_ml, abs=5e-4), name
        assert table[name]["edited"] == "no"
    time.sleep(1.0)  # the views' next streamed frame
    page.screenshot(path=str(shots / "web-segmented.png"))


def _voxel_count(page, name: str) -> int:
    return int(_table(page)[name]["voxel_count"])


def _wait_count(page, name: str, changed_from: int) -> int:
    """The segment's voxel count once the table was measured again after an edit (it differs from `changed_from`)."""
    page.wait_for_function(
        "([n, v]) => [...document.querySelectorAll('#volume-table tr')].some(tr => "
        "tr.querySelector('td.col-name')?.textContent.trim() === n && "
        "tr.querySelector('td.col-voxel_count').textContent.trim() !== v)", arg=[name, str(changed_from)])
    return _voxel_count(page, name)


def test_islands_smoothing_scissors_and_undo(page):
    """trame-slicer's Islands, Smoothing and Scissors effects from the page, each measured again and undone."""
    segment = next(iter(_table(page)))
    before = _voxel_count(page, segment)
    page.click("#effect-paint")  # a blob at the volume's left edge: a second island of the first segment
    _stroke(page, 1, start=0.16)
    blob = _wait_count(page, segment, before)
    assert blob > before
    page.click("#effect-islands")
    page.click("#islands-apply")  # keep largest (the default)
    assert _wait_count(page, segment, blob) == before
    page.click("#undo-button")
    assert _wait_count(page, segment, before) == blob
    page.click("#undo-button")
    assert _wait_count(page, segment, blob) == before
    page.click("#effect-smoothing")
    _pick(page, "smoothing-mode", "Opening")
    page.click("#smoothing-apply")
    smoothed = _wait_count(page, segment, before)
    assert smoothed != before
    page.click("#undo-button")
    assert _wait_count(page, segment, smoothed) == before
    _pick(page, "segment-select", "posterior hippocampus")  # the segment under the views' centre
    page.click("#effect-scissors")  # erase inside a lasso in the segment's middle, through every slice
    posterior = _voxel_count(page, "posterior hippocampus")
    _lasso(page, _axial(page).bounding_box(), 0.58, 0.55, 0.05)
    cut = _wait_count(page, "posterior hippocampus", posterior)
    assert cut < posterior
    page.click("#undo-button")
    assert _wait_count(page, "posterior hippocampus", cut) == posterior
    _pick(page, "segment-select", segment)
    page.click("#effect-none")


def test_intensity_threshold_preview_apply_and_undo(page, shots):
    """trame-slicer's Threshold from the page: the typed range is previewed on the axial view, Apply makes the
    segment exactly the voxels numpy finds in that range, Undo restores it."""
    import SimpleITK as sitk

    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE)))
    segment = next(iter(_table(page)))
    before = _voxel_count(page, segment)
    time.sleep(0.5)
    plain = _axial(page).screenshot()
    page.click("#effect-threshold")
    low, high = 60, 90
    page.fill("#threshold-min", str(low))
    page.fill("#threshold-max", str(high))
    time.sleep(1.5)  # the preview's next streamed frames
    assert _axial(page).screenshot() != plain
    page.screenshot(path=str(shots / "web-threshold.png"))
    page.click("#threshold-apply")
    count = _wait_count(page, segment, before)
    assert count == int(((volume >= low) & (volume <= high)).sum()) > 0
    assert "Undo reverts it" in _message(page)
    page.click("#undo-button")
    assert _wait_count(page, segment, count) == before
    page.click("#effect-none")


def _threshold(page, keys: list[str]) -> None:
    """Keys pressed on the probability threshold slider (Home 0.05, End 0.95, arrows 0.05 steps)."""
    page.locator(".v-slider:has(#guided-threshold) .v-slider-thumb").focus()
    for key in keys:
        page.keyboard.press(key)


def _click_view(page, fx: float, fy: float) -> None:
    """One click at (fx, fy) (fractions of the axial view), the pointer hovering there first."""
    box = _axial(page).bounding_box()
    x, y = box["x"] + box["width"] * fx, box["y"] + box["height"] * fy
    page.mouse.move(x - 4, y)
    page.mouse.move(x, y, steps=4)
    page.mouse.down()
    page.mouse.up()


def test_guided_click_adds_and_undo(page):
    """Probability-guided editing by a click in the axial view (``WebSession.guided_click`` on the bridge's
    ``guided_edit``): nothing probable under the click gets a readable message and changes nothing; a click on the
    segment with a low threshold adds its probable region; Undo restores the segment."""
    before = _table(page)
    first = next(iter(before))
    _threshold(page, ["End"])  # 0.95: nothing that probable in the volume's front left corner
    page.click("#effect-guided_add")
    _click_view(page, 0.3, 0.2)
    message = _wait_message(page, "no probable region under the click")
    assert "lower the probability threshold" in message and "Traceback" not in message
    assert _table(page) == before
    _pick(page, "segment-select", "posterior hippocampus")  # the segment under the views' centre
    _threshold(page, ["Home"])  # 0.05
    posterior = _voxel_count(page, "posterior hippocampus")
    _click_view(page, 0.58, 0.55)
    grown = _wait_count(page, "posterior hippocampus", posterior)
    assert grown > posterior and "is in the segment now" in _message(page)
    page.click("#undo-button")
    assert _wait_count(page, "posterior hippocampus", grown) == posterior
    _threshold(page, ["Home"] + ["ArrowRight"] * 9)  # back to 0.5 for the slider's own test
    _pick(page, "segment-select", first)
    page.click("#effect-none")


def _lasso(page, box: dict, cx: float, cy: float, r: float) -> None:
    """A closed square drawn by a drag around (cx, cy) (fractions of the view); `r` is a fraction of its width."""
    x, y, half = box["x"] + box["width"] * cx, box["y"] + box["height"] * cy, box["width"] * r
    corners = [(x - half, y - half), (x + half, y - half), (x + half, y + half), (x - half, y + half),
               (x - half, y - half)]
    page.mouse.move(corners[0][0] - 5, corners[0][1])
    page.mouse.move(*corners[0], steps=5)  # hover first, as for a paint stroke
    page.mouse.down()
    for corner in corners[1:]:
        page.mouse.move(*corner, steps=8)
    page.mouse.up()


def test_overlay_switch_changes_the_view(page, shots):
    before = _axial(page).screenshot()
    _pick(page, "overlay-select", "Uncertainty")
    page.wait_for_timeout(1000)
    uncertainty = _axial(page).screenshot()
    assert uncertainty != before
    page.screenshot(path=str(shots / "web-uncertainty.png"))
    _pick(page, "overlay-select", "none")
    page.wait_for_timeout(1000)
    assert _axial(page).screenshot() != uncertainty
    none = _axial(page).screenshot()
    page.locator("#review-list .review-item").first.click()  # the views jump to the most uncertain region
    page.wait_for_timeout(1000)
    assert _axial(page).screenshot() != none


def _stroke(page, dx: float, start: float = 0.3) -> None:
    box = _axial(page).bounding_box()
    x0, y0 = box["x"] + box["width"] * start, box["y"] + box["height"] * 0.5
    page.mouse.move(x0, y0)
    for i in range(5):  # hover first: the brush follows the pointer
        page.mouse.move(x0 + i, y0, steps=2)
    page.mouse.down()
    for i in range(20):
        page.mouse.move(x0 + i * dx, y0, steps=2)
    page.mouse.up()


def test_paint_changes_the_volume_and_undo_restores_it(page, shots):
    before = _table(page)
    page.click("#effect-paint")
    _stroke(page, 4)
    page.wait_for_function(EDITED.format(state="yes", row=1))
    after = _table(page)
    painted = next(iter(before))  # the first segment is the active one
    assert int(after[painted]["voxel_count"]) > int(before[painted]["voxel_count"])
    assert float(after[painted]["added_ml"]) > 0
    assert after[painted]["edited"] == "yes"
    time.sleep(1.0)
    page.screenshot(path=str(shots / "web-painted.png"))
    page.click("#undo-button")
    page.wait_for_function(EDITED.format(state="no", row=1))
    undone = _table(page)
    assert undone[painted]["voxel_count"] == before[painted]["voxel_count"]
    assert undone[painted]["edited"] == "no"
    page.click("#effect-erase")  # the review jump centred the views on the first segment's uncertain region
    _stroke(page, 3, start=0.4)
    page.wait_for_function(EDITED.format(state="yes", row=1))
    erased = _table(page)[painted]
    assert int(erased["voxel_count"]) < int(before[painted]["voxel_count"])
    assert float(erased["removed_ml"]) > 0
    page.click("#undo-button")
    page.wait_for_function(EDITED.format(state="no", row=1))
    page.click("#effect-none")


def test_probability_guided_threshold_and_undo(page):
    before = _table(page)
    segment = next(iter(before))
    thumb = page.locator(".v-slider:has(#guided-threshold) .v-slider-thumb")
    thumb.focus()
    for _ in range(6):  # 0.5 -> 0.2: a lower threshold grows the segment
        page.keyboard.press("ArrowLeft")
    page.click("#guided-apply")
    page.wait_for_function(EDITED.format(state="yes", row=1))
    grown = _table(page)
    assert int(grown[segment]["voxel_count"]) > int(before[segment]["voxel_count"])
    page.click("#undo-button")
    page.wait_for_function(EDITED.format(state="no", row=1))
    assert _table(page)[segment]["voxel_count"] == before[segment]["voxel_count"]


def test_download_holds_the_result(page, tmp_path):
    with page.expect_download() as info:
        page.click("#download-button")
    path = tmp_path / "result.zip"
    info.value.save_as(path)
    names = zipfile.ZipFile(path).namelist()
    assert any(n.endswith(".seg.nrrd") for n in names) and any(n.endswith(".csv") for n in names), names


def test_dicom_series_exports_seg_sr_and_pdf(page, tmp_path):
    assert page.locator("#export-button").is_disabled()  # a NIfTI input has no DICOM source
    _open(page, "dicom_series")
    _wait_message(page, "Opened dicom_series")
    page.click("#segment-button")
    _wait_message(page, "Done in")
    with page.expect_download() as info:
        page.click("#export-button")
    path = tmp_path / "dicom.zip"
    info.value.save_as(path)
    names = zipfile.ZipFile(path).namelist()
    assert [n for n in names if n.endswith("_SEG.dcm")] and [n for n in names if n.endswith("_SR.dcm")], names
    assert [n for n in names if n.endswith("_report.pdf")], names


def test_model_options_follow_the_card(page, shots):
    """The UNet++ prune level and accurate mode show only for a UNet++; the input picker is labelled with the card's
    channel and shows the volume opened last (``WebSession`` tests check what reaches the run)."""
    assert page.locator("#prune-level").count() == 0
    assert "T1w (MR):" in page.inner_text(".v-select:has(#channel-1)")
    assert "dicom_series" in page.inner_text(".v-select:has(#channel-1)")
    _pick(page, "model-select", "hippocampus-unetpp")
    page.wait_for_selector("#prune-level")
    assert "L4" in page.inner_text(".v-select:has(#prune-level)")  # the panel's default: the full network
    _pick(page, "prune-level", "L2")
    assert "L2" in page.inner_text(".v-select:has(#prune-level)")
    page.screenshot(path=str(shots / "web-unetpp-options.png"))
    _pick(page, "model-select", "hippocampus-unet3d")
    page.wait_for_selector("#prune-level", state="detached")
    assert page.locator("#channel-2").count() == 0  # one input channel


def test_path_outside_the_root_is_refused(page):
    for path in ("../outside/secret.nii.gz", "escape.nii.gz", "/etc/passwd"):
        _open(page, path)
        assert "refused" in _wait_message(page, "refused"), path
        page.fill("#path-input", "")
        page.evaluate("document.querySelector('#message').textContent = ''")


def test_bad_model_file_gets_a_readable_message(page, tmp_path):
    """A checkpoint that fails to load: the page names it and the fix; the picker and the result stay as they were."""
    bad = tmp_path / "notes.safetensors"
    bad.write_text("this is not a checkpoint")
    model = page.inner_text(".v-select:has(#model-select)")
    page.set_input_files("#model-upload-input", str(bad))
    message = _wait_message(page, "notes.safetensors cannot be used as a model")
    assert "model list is unchanged" in message and "medseg import" in message and "Traceback" not in message
    assert "/tmp" not in message  # the server's folders stay out of the page
    assert page.inner_text(".v-select:has(#model-select)") == model
    assert page.locator("#volume-table").count() == 1


def test_bad_upload_gets_a_readable_message(page, tmp_path):
    bad = tmp_path / "notes.nii.gz"
    bad.write_text("this is not an image")
    page.set_input_files("#upload-input", str(bad))
    message = _wait_message(page, "Cannot open notes.nii.gz")
    assert "notes.nii.gz" in message and "Traceback" not in message
    big = tmp_path / "big.nii.gz"
    big.write_bytes(b"\0" * (MAX_UPLOAD_MB + 1) * 2**20)
    page.set_input_files("#upload-input", str(big))
    assert "limited to" in _wait_message(page, "uploads are limited")
    assert page.locator("#volume-table").count() == 1  # the result shown before is still there
    page.set_input_files("#upload-input", str(SAMPLE))  # a real upload
    _wait_message(page, f"Opened {SAMPLE.name}")
    assert page.locator("#volume-table").count() == 0 and not page.locator("#segment-button").is_disabled()


def test_nnunet_folder_and_limit_to_box(page, data_root, shots):
    """An nnU-Net results folder typed in the model path joins the picker (a folder that is not one is named, the
    picker unchanged); "Limit to box" segments only inside the typed box, as the engine's ROI run does."""
    sys.path.insert(0, str(REPO / "Testing" / "engine"))
    from nnunet_folder import write_results_folder

    from medseg.catalog import resolve_checkpoint
    from medseg.inference import Segmenter, SegmentOptions
    from medseg.io import read_image

    folder, _ = write_results_folder(data_root / "nnunet")  # as nnU-Net 2.8 writes it (Testing/engine)
    models = page.inner_text(".v-select:has(#model-select)")
    page.fill("#model-path-input", "nnunet")
    page.click("#add-model")
    assert "fold_N folders" in _wait_message(page, "is a folder but not an nnU-Net v2 results folder")
    assert page.inner_text(".v-select:has(#model-select)") == models
    page.fill("#model-path-input", str(folder.relative_to(data_root)))
    page.click("#add-model")
    _wait_message(page, "Added model")
    assert "Dataset777_Tiny" in page.inner_text(".v-select:has(#model-select)")
    _pick(page, "model-select", MODEL)
    page.locator("#opt-limit_to_box").check(force=True)
    page.wait_for_selector("#box-fields")
    assert page.input_value("#box-j-last") == "50"  # the whole volume (35 x 51 x 35 voxels) until typed
    box = {"i-first": 2, "i-last": 30, "j-first": 3, "j-last": 48, "k-first": 0, "k-last": 17}
    for field, value in box.items():
        page.fill(f"#box-{field}", str(value))
    page.wait_for_selector("#box-text:has-text('Box: voxels i 2-30, j 3-48, k 0-17')")  # the server has the box
    page.click("#segment-button")
    _wait_message(page, "Done in")
    page.wait_for_selector("#volume-table td")
    time.sleep(1.0)  # the views' next streamed frame (the box is drawn in them)
    page.screenshot(path=str(shots / "web-box.png"))
    image, geometry = read_image(SAMPLE)
    expected = Segmenter(resolve_checkpoint(MODEL), device="auto").segment(image, geometry, SegmentOptions(
        probabilities=True, uncertainty=True, review=True, roi=(2, 31, 3, 49, 0, 18)))
    assert all(m.voxel_count > 0 for m in expected.measurements)
    assert {name: int(row["voxel_count"]) for name, row in _table(page).items()} == {
        m.name: m.voxel_count for m in expected.measurements}


def test_cancel_mid_run_leaves_the_scene_unchanged(page):
    _open(page, "noise.nii.gz")
    _wait_message(page, "Opened noise")
    assert page.locator("#volume-table").count() == 0
    page.click("#segment-button")
    page.wait_for_function("Number(document.querySelector('#progress-value').textContent) > 0")
    assert page.locator("#segment-button").is_disabled()  # a second click cannot start a second run
    # Closing the tab mid-run: the server and the run go on; a new tab sees the run and can cancel it.
    tab = page.context.browser.new_page()
    page.close()
    tab.set_default_timeout(TIMEOUT_MS)
    tab.goto(page.url)
    tab.wait_for_selector("#progress-value", state="attached")
    tab.wait_for_function("Number(document.querySelector('#progress-value').textContent) > 0")
    assert tab.locator("#segment-button").is_disabled() and not tab.locator("#cancel-button").is_disabled()
    tab.click("#cancel-button")
    assert "nothing was changed" in _wait_message(tab, "Cancelled")
    assert tab.locator("#volume-table").count() == 0
    assert not tab.locator("#segment-button").is_disabled()
