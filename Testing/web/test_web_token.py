"""`medseg serve --token`: a page without the token gets no session; with it (``?secret=TOKEN``) it works."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("trame_slicer", reason="needs trame-slicer (the web extra: see scripts/setup.sh)")
playwright_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("needs Debian's chromium (apt-get install chromium)", allow_module_level=True)

TOKEN = "token-for-the-browser-test-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("token") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", "import sys; from medseg.cli import main; sys.exit(main())",
                                 "serve", "--port", str(port), "--token", TOKEN], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        assert proc.poll() is None, log.read_text()
        yield f"http://127.0.0.1:{port}/"
        proc.terminate()
        proc.wait(10)


def test_the_token_is_required(server):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(server)
        page.wait_for_timeout(2500)
        assert page.locator("#segment-button").count() == 0  # the session was refused: no page content
        page.goto(f"{server}?secret=wrong-{TOKEN}")
        page.wait_for_timeout(2000)
        assert page.locator("#segment-button").count() == 0
        page.goto(f"{server}?secret={TOKEN}")
        page.wait_for_selector("#segment-button", timeout=60_000)
        browser.close()
