"""MedSegLogic.exportResult, the panel's Export button, on the real Slicer core: the facade passes the model the
panel lists (a checkpoint file here) and the ticked outputs to ``MedSegLib.dicom_export``; a wrong model is refused."""

from __future__ import annotations

import numpy as np
import pytest
from test_logic import checkpoint, module  # noqa: F401 (fixtures: MedSeg.py loaded with stand-ins, a tiny model)

slicer = pytest.importorskip("slicer", reason="needs the real Slicer core: pip install slicer-core")
pydicom = pytest.importorskip("pydicom", reason="the DICOM export needs pydicom (pip install 'medseg[dicom]')")
pytest.importorskip("highdicom", reason="the DICOM export needs highdicom (pip install 'medseg[dicom]')")


def test_export_writes_the_ticked_files_with_the_listed_model(module, scene, checkpoint, shared_data, tmp_path):  # noqa: F811
    from medseg.checkpoint import read_card
    from medseg.cli_export import checkpoint_sha256
    from medseg.inference import SegmentationResult
    from medseg.io import read_image
    from medseg.measure import measure_labels
    from MedSegLib.run import RunInputs, apply
    from MedSegLib.volumes import volume_from_array

    series = shared_data / "examples" / "totalsegmentator" / "dicom_repaired"
    if not series.is_dir():
        pytest.skip(f"the example CT series is not in {series}")
    image, geometry = read_image(series)
    volume = volume_from_array(scene, image, geometry, "CT")
    card = read_card(checkpoint)
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[6:12, 200:260, 200:260] = 1
    result = SegmentationResult(labels, geometry, card, measurements=measure_labels(labels, geometry, card.labels))
    applied = apply(scene, RunInputs(image[None], geometry, volume.GetID(), "CT", (volume.GetID(),)), result)
    segmentation = scene.GetNodeByID(applied.segmentation_id)

    logic = module.MedSegLogic()
    files = logic.exportResult(segmentation, tmp_path, pdf=False, meshes=False, sourceFolder=series,
                               model=checkpoint)
    seg = pydicom.dcmread(files.dicom_seg)
    assert seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == \
        checkpoint_sha256(checkpoint)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in files.paths)
    assert [p.name for p in files.paths] == [f"CT_{card.name}_SEG.dcm", f"CT_{card.name}_SR.dcm"]
    assert logic.addToDicomDatabase(files) == []  # no DICOM database outside the application

    segmentation.SetAttribute("MedSeg.Model", "another-model")
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="another-model"):
        logic.exportResult(segmentation, tmp_path / "none", sourceFolder=series, model=checkpoint)
    assert list((tmp_path / "none").iterdir()) == []
    with pytest.raises(ValueError, match="no segmentation to export"):
        logic.exportResult(None, tmp_path)
