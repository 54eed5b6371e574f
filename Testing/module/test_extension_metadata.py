"""The extension's metadata against the Slicer Extensions Index checklist: LICENSE.txt at the root with the license
pyproject.toml declares, icon and screenshot URLs that are raw files of the homepage's repository and exist here, a
short description, named contributors."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _metadata() -> dict[str, str]:
    text = (REPO / "CMakeLists.txt").read_text()
    return dict(re.findall(r'set\((EXTENSION_[A-Z]+) "([^"]*)"\)', text))


def test_license_txt_is_the_license_pyproject_declares():
    license_text = (REPO / "LICENSE.txt").read_text()
    assert 'license = { text = "Apache-2.0" }' in (REPO / "pyproject.toml").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text  # the whole text, not a pointer to it
    assert "Apache-2.0 (`LICENSE.txt`)" in (REPO / "README.md").read_text()  # named on the homepage


def test_icon_and_screenshot_urls_are_files_of_the_homepage_repository():
    meta = _metadata()
    owner_repo = meta["EXTENSION_HOMEPAGE"].removeprefix("https://github.com/")
    raw = f"https://raw.githubusercontent.com/{owner_repo}/main/"
    urls = [meta["EXTENSION_ICONURL"], *meta["EXTENSION_SCREENSHOTURLS"].split()]
    assert len(urls) >= 2  # the icon and at least one screenshot
    for url in urls:
        assert url.startswith(raw) and (REPO / url.removeprefix(raw)).is_file(), url


def test_description_category_contributors_and_dependencies():
    meta = _metadata()
    assert meta["EXTENSION_CATEGORY"] == "Segmentation" and meta["EXTENSION_DEPENDS"] == "PyTorch"
    sentences = [s for s in re.split(r"(?<=\.)\s+", meta["EXTENSION_DESCRIPTION"]) if s]
    assert 1 <= len(sentences) <= 2 and meta["EXTENSION_DESCRIPTION"].endswith(".")
    assert meta["EXTENSION_CONTRIBUTORS"].strip()
