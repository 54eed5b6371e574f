"""The overview picture reads as in a radiology viewer whatever the stored voxel order: the same scan stored LPS and
RAS (TotalSegmentator's example CT is stored RAS) gives the same picture."""

import numpy as np
import SimpleITK as sitk

from medseg.io import read_image
from medseg.render import overview


def _write(tmp_path, name, array, orient):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.5, 2.0))
    image.SetOrigin((10.0, -20.0, 5.0))
    path = tmp_path / name
    sitk.WriteImage(sitk.DICOMOrient(image, orient), str(path))
    return path


def test_lps_and_ras_storage_give_the_same_picture(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(12, 20, 16)).astype(np.float32)
    labels = np.zeros(volume.shape, np.uint8)
    labels[4:8, 3:9, 2:6] = 1  # near the patient's right (low i in LPS), anterior (low j)
    pictures = []
    for orient in ("LPS", "RAS"):
        image, geometry = read_image(_write(tmp_path, f"i_{orient}.nii.gz", volume, orient))
        mask, _ = read_image(_write(tmp_path, f"m_{orient}.nii.gz", labels, orient))
        assert orient == "LPS" or not np.array_equal(mask, labels)  # RAS really stores another voxel order
        pictures.append(overview(image, mask.astype(np.uint8), geometry, {1: (255, 0, 0)}, heat=None))
    assert np.array_equal(pictures[0], pictures[1])
    # axial panel (top left): the label is in the upper left quarter (anterior up, the patient's right on the left)
    red = (pictures[0][..., 0] > 150) & (pictures[0][..., 1] < 100)
    rows, cols = np.nonzero(red[: 20 * 6, : 16 * 4])
    assert rows.mean() < 20 * 6 / 2 and cols.mean() < 16 * 4 / 2
