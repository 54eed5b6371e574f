"""The bridge on the real Slicer core (slicer-core from PyPI): a fresh MRML scene per test, real data, tiny models.

Each test gets a scene set up as the Slicer application would (``MedSegLib.headless.application_scene``: converter
rules, color tables, subject hierarchy, three slice views; ``slicer.mrmlScene`` set to it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.io import read_image

try:
    import slicer
except ImportError as exc:  # every test module of this folder is reported as skipped, with this reason
    slicer = None
    _MISSING = (f"the bridge tests run on the real Slicer core libraries, which cannot be imported ({exc}): "
                f"pip install slicer-core (scripts/setup.sh installs it into .venv)")

    class _SkippedModule(pytest.Module):
        def collect(self):
            pytest.skip(_MISSING)

    def pytest_pycollect_makemodule(module_path, parent):
        return _SkippedModule.from_parent(parent, path=module_path)
else:
    from MedSegLib.headless import application_scene, register_converter_rules

    register_converter_rules()  # before the first segmentation node of any test, as the application does


@pytest.fixture
def scene():
    """A fresh scene as the application has it: color tables, subject hierarchy, three slice views."""
    with application_scene() as s:
        yield s


# ---------------------------------------------------------------------------------------------- real data


@pytest.fixture(scope="session")
def hippocampus(shared_data):
    image = read_image(shared_data / "hippocampus" / "imagesTr" / "hippocampus_001.nii.gz")
    labels, _ = read_image(shared_data / "hippocampus" / "labelsTr" / "hippocampus_001.nii.gz")
    return image[0], image[1], labels.astype(np.uint8)


@pytest.fixture(scope="session")
def ctchest(shared_data):
    folder = shared_data / "examples" / "ctchest"
    array, geometry = read_image(folder / "CTChest4.nrrd")
    return array, geometry, folder / "Segmentation.seg.nrrd"


@pytest.fixture(scope="session")
def spinal_cord(shared_data):
    """Oblique (9.3 degrees about the i axis), 131 x 141 x 16 voxels, with its manual cord mask."""
    folder = shared_data / "examples" / "spinal_cord_multicontrast"
    array, geometry = read_image(folder / "sub-unf01_T2w.nii.gz")
    mask, _ = read_image(folder / "sub-unf01_T2w_seg-manual.nii.gz")
    return array, geometry, mask.astype(np.uint8), folder


# ---------------------------------------------------------------------------------------------- models


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, hippocampus) -> Path:
    """Tiny U-Net whose labels on hippocampus_001 are about 80 % background, 10 % each foreground label."""
    from bridge_support import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny.safetensors", calibration=hippocampus[0])


@pytest.fixture(scope="session")
def checkpoint_two_channels(tmp_path_factory) -> Path:
    from bridge_support import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("models2") / "tiny2.safetensors", ("T1w", "T2w"))
