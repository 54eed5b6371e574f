"""Packaging hook: a built wheel of the engine carries the bundled models and samples.

The repository keeps them once, in the top-level ``Resources/`` folder, where the Slicer module and a source checkout
find them. Building a wheel copies ``Resources/Models`` and ``Resources/Samples`` into ``medseg/resources/`` inside it,
where :func:`medseg.catalog.resources_dir` finds them once installed. An editable install (``pip install -e .``) reads
the source tree's ``Resources/`` and copies nothing. Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

RESOURCES = Path(__file__).resolve().parent / "Resources"
BUNDLED = ("Models", "Samples")


class BuildPyWithResources(build_py):
    """``build_py`` that also copies the bundled models and samples into the package."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "medseg" / "resources"
        for folder in BUNDLED:
            if not (RESOURCES / folder).is_dir():
                raise FileNotFoundError(f"{RESOURCES / folder} is missing: build the wheel from a full checkout")
            shutil.copytree(RESOURCES / folder, target / folder, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithResources})
