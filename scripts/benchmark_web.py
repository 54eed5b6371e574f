"""Click-to-result through the browser (`medseg serve` in headless Chromium) against the engine alone, and the
paint latency (a brush click until the slice view's next streamed frame, and until the table is measured again).

    .venv/bin/python scripts/benchmark_web.py [--repeats 3] [--synthetic]

The engine alone: `Segmenter.segment` on the same file with the page's options (probabilities, uncertainty and the
review list), model loaded and warm. Through the browser: from the Segment click until the page shows the table of
the new result, model warm (the first click, which loads it, is reported apart). `--synthetic` adds a 256x256x128
volume (Gaussian noise: the timing depends on the size, not the content). Timings are medians; the machine may be
shared with other work, so compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "Resources" / "Samples" / "hippocampus_001_T1w.nii.gz"
MODEL = "hippocampus-unet3d"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

WATCH_FRAME = """() => {
  window.__latency = undefined;
  const img = document.querySelector('#views img');
  let t0 = null;
  document.addEventListener('mousedown', () => { t0 = performance.now(); }, {once: true, capture: true});
  const obs = new MutationObserver(() => {
    if (t0 !== null) { obs.disconnect(); window.__latency = performance.now() - t0; }
  });
  obs.observe(img, {attributes: true, attributeFilter: ['src']});
}"""


def _start_server(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from medseg.cli import main; sys.exit(main())",
                             "serve", "--port", str(port), "--data-root", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}/"


WORKER_SECONDS: list[float] = []  # the server's own "Done in X s": the worker thread's time (model + engine)


def _segment_click(page) -> float:
    page.evaluate("document.querySelector('#message').textContent = ''")
    t = time.perf_counter()
    page.click("#segment-button")
    page.wait_for_function("document.querySelector('#message').textContent.includes('Done in')"
                           " && document.querySelector('#volume-table td')")
    seconds = time.perf_counter() - t
    WORKER_SECONDS.append(float(re.search(r"Done in ([0-9.]+) s", page.inner_text("#message")).group(1)))
    return seconds


def _open(page, name: str) -> None:
    page.fill("#path-input", name)
    page.click("#open-path")
    page.wait_for_function("t => document.querySelector('#message').textContent.includes(t)", arg=f"Opened {name}")


def interleaved(page, root: Path, name: str, repeats: int) -> tuple[float, float, float]:
    """(first click, browser median, engine median): engine and browser runs alternate, so that the load of other
    work on a shared machine weighs on both alike."""
    from medseg.catalog import resolve_checkpoint
    from medseg.inference import Segmenter, SegmentOptions
    from medseg.io import read_image

    image, geometry = read_image(root / name)
    segmenter = Segmenter(resolve_checkpoint(MODEL), device="auto")
    options = SegmentOptions(probabilities=True, uncertainty=True, review=True)
    segmenter.segment(image, geometry, options)  # warm-up
    _open(page, name)
    first = _segment_click(page)
    engine, browser = [], []
    WORKER_SECONDS.clear()
    for _ in range(repeats):
        t = time.perf_counter()
        segmenter.segment(image, geometry, options)
        engine.append(time.perf_counter() - t)
        browser.append(_segment_click(page))
    return first, statistics.median(browser), statistics.median(engine)


def paint_latency(page, repeats: int) -> tuple[float, float]:
    """(brush click -> next frame of the axial view, brush click -> table re-measured), medians in seconds."""
    page.click("#effect-paint")
    box = page.locator("#views img").first.bounding_box()
    frames, tables = [], []
    for n in range(repeats):
        x, y = box["x"] + box["width"] * (0.25 + 0.05 * n), box["y"] + box["height"] * 0.5
        page.mouse.move(x - 2, y)
        page.mouse.move(x, y, steps=2)
        page.wait_for_timeout(1000)  # the hover's frames are done
        count = int(page.inner_text("#remeasured") or 0)
        page.evaluate(WATCH_FRAME)
        t = time.perf_counter()
        page.mouse.down()
        page.mouse.up()
        frames.append(page.wait_for_function("window.__latency").json_value() / 1000)
        page.wait_for_function(f"Number(document.querySelector('#remeasured').textContent) > {count}")
        tables.append(time.perf_counter() - t)
    page.click("#effect-none")
    return statistics.median(frames), statistics.median(tables)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true", help="also a 256x256x128 volume")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases = [SAMPLE.name]
        shutil.copy(SAMPLE, root / SAMPLE.name)
        if args.synthetic:
            import SimpleITK as sitk

            noise = np.random.default_rng(0).normal(60, 20, (128, 256, 256)).astype(np.float32)
            sitk.WriteImage(sitk.GetImageFromArray(noise), str(root / "synthetic_256x256x128.nii.gz"))
            cases.append("synthetic_256x256x128.nii.gz")
        proc, url = _start_server(root)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1400, "height": 850})
                page.set_default_timeout(600_000)
                page.goto(url)
                page.wait_for_selector("#segment-button")
                for case in cases:
                    first, warm, engine = interleaved(page, root, case, args.repeats)
                    print(f"{case}: engine {engine:.2f} s, browser click-to-result {warm:.2f} s "
                          f"(the server's worker thread: {statistics.median(WORKER_SECONDS):.2f} s; first click, "
                          f"loading the model: {first:.2f} s), ratio {warm / engine:.2f}", flush=True)
                if len(cases) > 1:  # paint on the hippocampus result
                    _open(page, SAMPLE.name)
                    _segment_click(page)
                frame, table = paint_latency(page, args.repeats)
                print(f"paint (median of {args.repeats}): brush click -> next view frame {frame * 1000:.0f} ms, "
                      f"-> table re-measured {table * 1000:.0f} ms (includes the 0.3 s wait after the last edit)")
                browser.close()
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
