"""Image and segmentation I/O: round trips on every format, clear errors, atomic writes, and .seg.nrrd
files checked with the real Slicer core (slicer-core's vtkMRMLSegmentationStorageNode)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import SimpleITK as sitk

from medseg import io
from medseg.card import Label
from medseg.catalog import resources_dir
from medseg.geometry import Geometry
from medseg.io import (
    check_volume,
    read_channels,
    read_image,
    read_segmentation,
    write_image,
    write_segmentation,
)

HIPPO = "hippocampus/imagesTr/hippocampus_001.nii.gz"
CTCHEST = "examples/ctchest"
CORD = "examples/spinal_cord_multicontrast/sub-unf01_{}.nii.gz"
LUNG = {"category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
        "type": {"scheme": "SCT", "code": "39607008", "meaning": "Lung"},
        "typeModifier": {"scheme": "SCT", "code": "24028007", "meaning": "Right"}}
HIPPOCAMPUS = {"category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
               "type": {"scheme": "SCT", "code": "5366008", "meaning": "Hippocampus"}}


def oblique() -> Geometry:
    """An oblique, anisotropic grid: direction a rotation about a tilted axis, spacing (0.7, 1.3, 2.5)."""
    a, b, c = np.deg2rad([20.0, -35.0, 50.0])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return Geometry((0.7, 1.3, 2.5), (-12.5, 30.25, 101.0), tuple(map(tuple, rz @ ry @ rx)))


def assert_same_geometry(a: Geometry, b: Geometry, tol: float = 1e-9) -> None:
    np.testing.assert_allclose(a.spacing, b.spacing, atol=tol)
    np.testing.assert_allclose(a.origin, b.origin, atol=tol)
    np.testing.assert_allclose(a.direction, b.direction, atol=tol)


def labels_with_three_segments(shape=(9, 11, 13)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[1:4, 2:6, 3:7] = 1
    labels[5:8, 6:10, 8:12] = 3
    labels[2, 9, 1] = 3  # a stray voxel far from the rest of label 3
    return labels


SEGMENTS = [Label(0, "background", (0, 0, 0)), Label(1, "right lung", (22, 197, 71), LUNG),
            Label(2, "absent", (255, 255, 0)), Label(3, "hippocampus", (220, 180, 60), HIPPOCAMPUS)]


# --------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_is_voxel_exact_on_an_oblique_anisotropic_grid(tmp_path, ext):
    array = np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32)
    path = write_image(tmp_path / f"sub/v{ext}", array, oblique())
    back, geometry = read_image(path)
    assert back.dtype == np.float32 and back.shape == (6, 7, 8)
    np.testing.assert_array_equal(back, array)
    assert_same_geometry(geometry, oblique(), tol=1e-5 if ext.startswith(".nii") else 1e-9)  # NIfTI: float32 header
    assert [p.name for p in (tmp_path / "sub").iterdir()] == [f"v{ext}"]  # no temporary file left


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_label_maps_keep_their_integer_type(tmp_path, ext):
    labels = labels_with_three_segments()
    path = write_image(tmp_path / f"l{ext}", labels, oblique(), compress=False)
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(read_image(path)[0], labels)


@pytest.mark.parametrize("ext", [".nhdr", ".mhd"])
def test_detached_headers_are_read(tmp_path, ext):
    array = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    sitk.WriteImage(oblique().to_sitk(array), str(tmp_path / f"d{ext}"))
    back, geometry = read_image(tmp_path / f"d{ext}")
    np.testing.assert_array_equal(back, array)
    assert_same_geometry(geometry, oblique())


def test_bundled_sample_is_read(samples):
    array, geometry = read_image(samples / "hippocampus_001_T1w.nii.gz")
    assert array.dtype == np.float32 and array.ndim == 3 and array.max() > 0
    assert geometry.spacing == (1.0, 1.0, 1.0)


def test_real_files_in_every_format(shared_data):
    hippo, g = read_image(shared_data / HIPPO)
    assert hippo.shape == (35, 51, 35) and g.spacing == (1.0, 1.0, 1.0)
    ct, g = read_image(shared_data / CTCHEST / "CTChest4.nrrd")
    assert ct.shape == (34, 128, 128)
    np.testing.assert_allclose(g.direction, np.diag([-1.0, -1.0, 1.0]), atol=1e-12)  # NRRD space directions
    dicom, g = read_image(shared_data / "examples/totalsegmentator/dicom")
    assert dicom.shape == (20, 512, 512) and dicom.min() == -1024  # rescale slope/intercept applied (HU)
    np.testing.assert_allclose(g.spacing, (0.9765625, 0.9765625, 2.0))
    abdomen, _ = read_image(shared_data / "examples/totalsegmentator/example_ct.nii.gz")
    assert abdomen.shape == (112, 101, 122)


def test_dicom_folder_with_two_series_reads_the_largest(tmp_path, shared_data, caplog):
    for f in (shared_data / "examples/totalsegmentator/dicom").iterdir():
        (tmp_path / f.name).symlink_to(f)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(3):
        slice_ = sitk.Image([16, 16], sitk.sitkInt16)
        for tag, value in {"0008|0060": "CT", "0020|000e": "1.2.826.0.1.3680043.2.1125.9.1",
                           "0008|0018": f"1.2.826.0.1.3680043.2.1125.9.1.{z}", "0020|0013": str(z + 1),
                           "0020|0032": f"0\\0\\{2 * z}", "0020|0037": "1\\0\\0\\0\\1\\0"}.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"small{z}.dcm"))
        writer.Execute(slice_)
    array, _ = read_image(tmp_path)
    assert array.shape == (20, 512, 512)
    assert "2 DICOM series" in caplog.text and "20 files" in caplog.text


def test_4d_image_with_one_volume_is_read_as_3d(tmp_path):
    for ext in (".nii.gz", ".nrrd"):
        image = sitk.JoinSeries([oblique().to_sitk(np.ones((3, 4, 5), np.float32))])  # (x, y, z, t=1)
        sitk.WriteImage(image, str(tmp_path / f"t1{ext}"))
        array, geometry = read_image(tmp_path / f"t1{ext}")
        assert array.shape == (3, 4, 5)
        assert_same_geometry(geometry, oblique(), tol=1e-5)


def test_negative_spacing_in_a_header_becomes_a_flipped_axis(tmp_path):
    """ITK reads ElementSpacing -0.5 as spacing 0.5 along a reversed axis: same voxel positions."""
    path = tmp_path / "neg.mha"
    path.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementSpacing = -0.5 1 1\n"
                     b"ElementType = MET_UCHAR\nElementDataFile = LOCAL\n" + bytes(8))
    _, geometry = read_image(path)
    assert geometry.spacing == (0.5, 1.0, 1.0)
    np.testing.assert_allclose(geometry.index_to_lps([1, 0, 0]), [[-0.5, 0, 0]])


# --------------------------------------------------------------------------------------------- bad inputs


def _mha(path, dims="2 2 2", spacing="1 1 1", data=bytes(8)):
    path.write_bytes(f"ObjectType = Image\nNDims = 3\nDimSize = {dims}\nElementSpacing = {spacing}\n"
                     f"ElementType = MET_UCHAR\nElementDataFile = LOCAL\n".encode() + data)
    return path


def _file(path, data=b""):
    path.write_bytes(data)
    return path


def _truncated(samples, tmp_path, name, keep: int | None = None):
    source = samples / "hippocampus_001_T1w.nii.gz"
    if name.endswith(".nii"):
        sitk.WriteImage(sitk.ReadImage(str(source)), str(tmp_path / "full.nii"))
        source = tmp_path / "full.nii"
    data = source.read_bytes()
    (tmp_path / name).write_bytes(data[: keep or len(data) // 2])
    return tmp_path / name


@pytest.mark.parametrize(("make", "error", "message"), [
    (lambda s, t: t / "missing.nii.gz", FileNotFoundError, "does not exist"),
    (lambda s, t: _truncated(s, t, "cut.nii.gz"), ValueError, "truncated"),
    (lambda s, t: _truncated(s, t, "header_cut.nii.gz", keep=300), ValueError, "compressed data is truncated"),
    (lambda s, t: _truncated(s, t, "cut.nii"), ValueError, r"truncated \(\d+ of the \d+ bytes"),
    (lambda s, t: _mha(t / "cut.mha", data=bytes(3)), ValueError, "truncated, corrupt or not a valid image"),
    (lambda s, t: _file(t / "junk.nrrd", b"not an image"), ValueError, "not a valid"),
    (lambda s, t: _file(t / "x.png"), ValueError, r"unsupported file type.*\.nii\.gz"),
    (lambda s, t: _file(t / "x.dcm"), ValueError, "folder that holds the DICOM series"),
    (lambda s, t: t, ValueError, "no DICOM series found in folder"),
    (lambda s, t: _mha(t / "zero.mha", spacing="0 1 1"), ValueError, "spacing is zero or invalid"),
    (lambda s, t: _mha(t / "empty.mha", dims="0 2 2", data=b""), ValueError, r"empty.*zero voxels"),
])
def test_bad_inputs_name_the_path_and_the_fix(samples, tmp_path, make, error, message):
    path = make(samples, tmp_path)
    with pytest.raises(error, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("image", "message"), [
    (sitk.GetImageFromArray(np.ones((5, 6), np.float32)), r"2D image of size \(6, 5\).*JoinSeries"),
    (sitk.GetImageFromArray(np.ones((3, 4, 5, 6), np.float32), isVector=False),
     r"4D image of size \(6, 5, 4, 3\).*split the 4D series into 3D volumes"),
    (sitk.GetImageFromArray(np.ones((4, 5, 6, 3), np.float32), isVector=True), "3 components per voxel"),
])
def test_images_that_are_not_3d_scalar_volumes_are_refused(tmp_path, image, message):
    path = tmp_path / "bad.nrrd"
    sitk.WriteImage(image, str(path))
    with pytest.raises(ValueError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_nan_and_inf_voxels_are_counted(tmp_path):
    array = np.zeros((3, 4, 5), np.float32)
    array[0, 0, :2] = np.nan
    array[2, 3, 4] = -np.inf
    path = tmp_path / "nan.nrrd"  # NIfTI: test_input_checks.py (ITK's reader hides them; medseg.nifti counts them)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.raises(ValueError, match=r"nan\.nrrd has 2 NaN and 1 infinite voxel\(s\) out of 60"):
        read_image(path)


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((4, 5)), r"shape \(4, 5\).*2D"),
    (np.zeros((2, 3, 4, 5)), r"shape \(2, 3, 4, 5\).*split the 4D series into 3D volumes"),
    (np.zeros((0, 3, 4)), "zero voxels"),
    (np.full((2, 2, 2), np.nan), "8 NaN"),
    (np.zeros((2, 2, 2), complex), "complex"),
])
def test_check_volume_refuses_arrays_from_memory(array, message):
    with pytest.raises(ValueError, match=message) as info:
        check_volume(array, Geometry(), "node 'MRHead'")
    assert "node 'MRHead'" in str(info.value)


def test_check_volume_refuses_non_positive_spacing():
    bad = object.__new__(Geometry)  # a record that escaped Geometry's own validation
    object.__setattr__(bad, "spacing", (1.0, 0.0, -2.0))
    with pytest.raises(ValueError, match=r"node 'x' has voxel spacing \(1.0, 0.0, -2.0\)"):
        check_volume(np.zeros((2, 2, 2)), bad, "node 'x'")


# --------------------------------------------------------------------------------------------- channels


def test_channels_on_one_grid_are_stacked(shared_data):
    paths = [shared_data / CORD.format(c) for c in ("T1w", "T2w", "T2star")]
    stack, geometry = read_channels(paths)
    assert stack.shape == (3, 16, 141, 131) and stack.dtype == np.float32
    for channel, path in zip(stack, paths, strict=True):
        np.testing.assert_array_equal(channel, read_image(path)[0])
    assert abs(geometry.direction[1][2]) > 0.1  # a real oblique acquisition


def test_channel_on_another_grid_names_both_files_the_property_and_the_fix(shared_data, tmp_path):
    t1 = shared_data / CORD.format("T1w")
    shifted = sitk.ReadImage(str(shared_data / CORD.format("T2w")))
    shifted.SetOrigin(tuple(np.add(shifted.GetOrigin(), (2.0, 0.0, 0.0))))
    shifted.SetSpacing((1.0, 1.0, 1.2))
    sitk.WriteImage(shifted, str(tmp_path / "T2w_moved.nii.gz"))
    with pytest.raises(ValueError) as info:
        read_channels([t1, tmp_path / "T2w_moved.nii.gz"])
    message = str(info.value)
    assert str(t1) in message and str(tmp_path / "T2w_moved.nii.gz") in message
    assert re.search(r"spacing \(1, 1, 1\) vs \(1, 1, 1\.2\) mm", message)
    assert re.search(r"origin \(64\.1\d*, 59\.711, -2\.379\d*\) vs \(66\.1\d*, 59\.711, -2\.379\d*\) mm", message)
    assert "size" not in message and "direction" not in message
    assert "Resample channel 2 onto channel 1's grid" in message and "SimpleITK.Resample" in message


def test_channels_of_different_sizes(shared_data):
    ct = shared_data / "examples/totalsegmentator"
    with pytest.raises(ValueError, match=r"size \(x, y, z\) \(122, 101, 112\) vs \(122, 101, 30\) voxels"):
        read_channels([ct / "example_ct.nii.gz", ct / "example_ct_sm.nii.gz"])


def test_no_channels():
    with pytest.raises(ValueError, match="one image per input channel"):
        read_channels([])


# --------------------------------------------------------------------------------------------- atomic writes


def test_unsupported_extension_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported file type; use one of \.nii\.gz, \.nii, \.nrrd, \.mha"):
        write_image(tmp_path / "v.png", np.zeros((2, 2, 2)), Geometry())
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "v.nrrd", np.full((2, 2, 2), np.nan), Geometry())
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    old = write_image(tmp_path / "p.nii.gz", np.ones((2, 3, 4), np.float32), Geometry())
    before = old.read_bytes()
    real_write = sitk.WriteImage

    def half_write_then_fail(image, name, *args):
        real_write(image, name, *args)
        with open(name, "r+b") as f:
            f.truncate(10)
        raise RuntimeError("ITK ERROR: No space left on device")

    monkeypatch.setattr(io.sitk, "WriteImage", half_write_then_fail)
    with pytest.raises(OSError, match=r"cannot write .*p\.nii\.gz: ITK ERROR: No space left on device"):
        write_image(tmp_path / "p.nii.gz", np.zeros((2, 3, 4), np.float32), Geometry())
    with pytest.raises(OSError, match="new.seg.nrrd"):
        write_segmentation(tmp_path / "new.seg.nrrd", labels_with_three_segments(), Geometry(), SEGMENTS)
    assert [p.name for p in tmp_path.iterdir()] == ["p.nii.gz"] and old.read_bytes() == before


# --------------------------------------------------------------------------------------------- .seg.nrrd


def test_segmentation_header_has_slicers_fields_and_formats(tmp_path, shared_data):
    path = write_segmentation(tmp_path / "s.seg.nrrd", labels_with_three_segments(), oblique(), SEGMENTS)
    ours = sitk.ReadImage(str(path))
    slicers = sitk.ReadImage(str(shared_data / CTCHEST / "Segmentation.seg.nrrd"))
    assert ours.GetPixelID() == slicers.GetPixelID() == sitk.sitkUInt8
    segment_keys = {k[len("Segment0_"):] for k in slicers.GetMetaDataKeys() if k.startswith("Segment0_")}
    assert {k[len("Segment0_"):] for k in ours.GetMetaDataKeys() if k.startswith("Segment0_")} == segment_keys
    meta = {k: ours.GetMetaData(k) for k in ours.GetMetaDataKeys()}
    assert meta["NRRD_space"] == slicers.GetMetaData("NRRD_space") == "left-posterior-superior"
    assert meta["Segmentation_MasterRepresentation"] == "Binary labelmap"
    assert meta["Segmentation_ContainedRepresentationNames"] == "Binary labelmap|"
    assert meta["Segmentation_ReferenceImageExtentOffset"] == "0 0 0"
    assert meta["Segmentation_ConversionParameters"].startswith("Reference image geometry|")
    assert [meta[f"Segment{n}_Name"] for n in range(3)] == ["right lung", "absent", "hippocampus"]
    assert [meta[f"Segment{n}_ID"] for n in range(3)] == ["Segment_1", "Segment_2", "Segment_3"]
    assert [meta[f"Segment{n}_LabelValue"] for n in range(3)] == ["1", "2", "3"]
    assert meta["Segment0_Color"] == "0.0862745 0.772549 0.278431"  # Slicer's own text for (22, 197, 71)
    assert slicers.GetMetaData("Segment4_Color") == meta["Segment0_Color"]  # CTChest's right lung
    # the same right-lung codes as Slicer writes, character for character, in the DICOM master list context (the
    # CTChest sample names Slicer's General Anatomy list, which also holds the lung)
    ours_context, _, ours_codes = meta["Segment0_Tags"].partition("~")
    slicers_context, _, slicers_codes = slicers.GetMetaData("Segment4_Tags").split("TerminologyEntry:")[1].partition(
        "~")
    assert ours_codes == slicers_codes
    assert ours_context == "TerminologyEntry:Segmentation category and type - DICOM master list"
    assert slicers_context == "Segmentation category and type - 3D Slicer General Anatomy list"
    assert meta["Segment1_Tags"] == ""
    # one layer: every segment carries the layer's extent (i0 i1 j0 j1 k0 k1 of all labels), as Slicer writes
    assert {meta[f"Segment{n}_Extent"] for n in range(3)} == {"1 11 2 9 1 7"}
    assert {meta[f"Segment{n}_Layer"] for n in range(3)} == {"0"}


def test_segmentation_round_trip(tmp_path):
    labels = labels_with_three_segments()
    path = write_segmentation(tmp_path / "s.seg.nrrd", labels, oblique(), SEGMENTS)
    back, geometry, segments = read_segmentation(path)
    np.testing.assert_array_equal(back, labels)
    assert back.dtype == np.uint8
    assert_same_geometry(geometry, oblique())
    assert segments == SEGMENTS[1:]


def test_many_labels_use_uint16(tmp_path):
    labels = np.zeros((2, 3, 4), np.uint16)
    labels[1, 2, 3] = 300
    path = write_segmentation(tmp_path / "s.seg.nrrd", labels, Geometry(), [Label(300, "big")])
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt16
    assert read_segmentation(path)[0][1, 2, 3] == 300


def test_slicers_own_segmentation_is_read(shared_data, tmp_path):
    labels, geometry, segments = read_segmentation(shared_data / CTCHEST / "Segmentation.seg.nrrd")
    assert [s.name for s in segments] == ["ribs", "cervical vertebral column", "thoracic vertebral column",
                                          "lumbar vertebral column", "right lung", "left lung", "tissue"]
    assert [s.id for s in segments] == [1, 2, 3, 4, 5, 6, 7] and set(np.unique(labels)) == set(range(8))
    assert segments[4].color == (22, 197, 71) and segments[4].terminology == LUNG
    _, ct_geometry = read_image(shared_data / CTCHEST / "CTChest4.nrrd")
    assert_same_geometry(geometry, ct_geometry)
    again = write_segmentation(tmp_path / "again.seg.nrrd", labels, geometry, segments)
    assert read_segmentation(again)[2] == segments


@pytest.mark.parametrize(("labels", "segments", "message"), [
    (np.zeros((2, 2, 2), np.float32), SEGMENTS, "integer label map"),
    (np.full((2, 2, 2), 5, np.uint8), SEGMENTS, r"label values \[5\] occur in the label map but have no segment"),
    (np.zeros((2, 2, 2), np.uint8), [Label(1, "a"), Label(1, "b")], "unique"),
    (np.zeros((2, 2, 2), np.uint8), [Label(1, "a", terminology={  # a name is written cleaned (medseg.text.printable)
        "category": {"scheme": "SCT", "code": "1", "meaning": "a\nb"}, "type": {"scheme": "SCT", "code": "2",
                                                                               "meaning": "b"}})], "line break"),
    (np.zeros((2, 2), np.uint8), SEGMENTS, "2D"),
])
def test_bad_segmentations_are_refused_and_nothing_is_written(tmp_path, labels, segments, message):
    with pytest.raises(ValueError, match=message):
        write_segmentation(tmp_path / "s.seg.nrrd", labels, Geometry(), segments)
    with pytest.raises(ValueError, match=r"must end in \.seg\.nrrd"):
        write_segmentation(tmp_path / "s.nrrd", np.zeros((2, 2, 2), np.uint8), Geometry(), SEGMENTS)
    assert list(tmp_path.iterdir()) == []


def test_overlapping_segments_are_not_supported_yet(shared_data):
    with pytest.raises(ValueError, match="2 layers .*overlapping segments are not supported yet"):
        read_segmentation(shared_data / CTCHEST / "SegmentationOverlapping.seg.nrrd")


def test_plain_label_map_is_not_a_segmentation(tmp_path):
    path = write_image(tmp_path / "plain.nrrd", np.ones((2, 2, 2), np.uint8), Geometry())
    with pytest.raises(ValueError, match="no segment fields .*read_image"):
        read_segmentation(path)


# --------------------------------------------------------------------------------------------- real Slicer core


@pytest.fixture(scope="module")
def slicer_core():
    """slicer-core's MRML scene and segmentations logic (Kitware's wheels of Slicer's C++ core)."""
    try:
        import slicer
        import vtk
    except ImportError as exc:
        pytest.skip(f"needs slicer-core (pip install slicer-core) to check .seg.nrrd files with Slicer's own "
                    f"reader: {exc}")
    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    return slicer, vtk, scene, logic


def _load_in_slicer(slicer_core, path):
    slicer, _, scene, _ = slicer_core
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node), f"Slicer could not read {path}"
    messages = storage.GetUserMessages()
    assert messages.GetNumberOfMessages() == 0, [messages.GetNthMessageText(i)
                                                 for i in range(messages.GetNumberOfMessages())]
    return node


def _masks_in_slicer(slicer_core, node, shape, geometry):
    """Each segment exported by Slicer onto a reference volume with `geometry`: {name: mask [k, j, i]}."""
    slicer, vtk, scene, logic = slicer_core
    reference = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    matrix = vtk.vtkMatrix4x4()
    for r, row in enumerate(geometry.ijk_to_ras()):
        for c, value in enumerate(row):
            matrix.SetElement(r, c, value)
    reference.SetIJKToRASMatrix(matrix)
    slicer.util.updateVolumeFromArray(reference, np.zeros(shape, np.uint8))
    segmentation, masks = node.GetSegmentation(), {}
    for n in range(segmentation.GetNumberOfSegments()):
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segmentation.GetNthSegmentID(n))
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        assert logic.ExportSegmentsToLabelmapNode(node, ids, labelmap, reference)
        masks[segmentation.GetNthSegment(n).GetName()] = slicer.util.arrayFromVolume(labelmap) > 0
    return masks


def test_slicer_reads_names_colors_terminology_and_exact_masks(slicer_core, tmp_path):
    slicer, vtk, _, _ = slicer_core
    labels, geometry = labels_with_three_segments(), oblique()
    node = _load_in_slicer(slicer_core, write_segmentation(tmp_path / "s.seg.nrrd", labels, geometry, SEGMENTS))
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3
    terminology = slicer.vtkSlicerTerminologiesModuleLogic()
    for n, label in enumerate(SEGMENTS[1:]):
        segment = segmentation.GetNthSegment(n)
        assert segment.GetName() == label.name and segment.GetLabelValue() == label.id
        np.testing.assert_allclose(np.multiply(segment.GetColor(), 255), label.color, atol=1)
        assert not segment.GetNameAutoGenerated() and not segment.GetColorAutoGenerated()
        if label.terminology:
            entry = slicer.vtkSlicerTerminologyEntry()
            assert terminology.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
            assert entry.GetTerminologyContextName() == "Segmentation category and type - DICOM master list"
            assert entry.GetCategoryObject().GetCodeMeaning() == label.terminology["category"]["meaning"]
            assert entry.GetTypeObject().GetCodeValue() == label.terminology["type"]["code"]
            modifier = label.terminology.get("typeModifier", {}).get("meaning")
            assert (entry.GetTypeModifierObject().GetCodeMeaning() or None) == modifier
    # the segment's own labelmap is on our grid (IJK to RAS), and each mask is voxel-exact on it
    internal, matrix = node.GetBinaryLabelmapInternalRepresentation("Segment_1"), vtk.vtkMatrix4x4()
    internal.GetImageToWorldMatrix(matrix)
    np.testing.assert_allclose([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)],
                               geometry.ijk_to_ras(), atol=1e-9)
    reference = segmentation.GetConversionParameter("Reference image geometry").rstrip(";").split(";")
    np.testing.assert_allclose(np.reshape([float(v) for v in reference[:16]], (4, 4)), geometry.ijk_to_ras())
    assert reference[16:] == ["0", "12", "0", "10", "0", "8"]
    masks = _masks_in_slicer(slicer_core, node, labels.shape, geometry)
    for label in SEGMENTS[1:]:
        np.testing.assert_array_equal(masks[label.name], labels == label.id, err_msg=label.name)


def test_slicer_reads_a_large_real_label_map(slicer_core, shared_data, tmp_path):
    """TotalSegmentator's map, first 12 labels (absent ones included), on its real LPS-flipped grid."""
    labels, geometry = read_image(shared_data / "examples/totalsegmentator/example_seg.nii.gz")
    labels = np.where(labels <= 12, labels, 0).astype(np.uint8)
    segments = [Label(i, f"organ {i}", (20 * i, 255 - 20 * i, 100)) for i in range(1, 13)]
    node = _load_in_slicer(slicer_core, write_segmentation(tmp_path / "ts.seg.nrrd", labels, geometry, segments))
    masks = _masks_in_slicer(slicer_core, node, labels.shape, geometry)
    assert [int(m.sum()) for m in masks.values()] == [int((labels == i).sum()) for i in range(1, 13)]
    assert sum(m.any() for m in masks.values()) >= 5


def test_slicer_reads_an_empty_segmentation(slicer_core, tmp_path):
    path = write_segmentation(tmp_path / "e.seg.nrrd", np.zeros((3, 4, 5), np.uint8), oblique(), SEGMENTS)
    assert sitk.ReadImage(str(path)).GetMetaData("Segment0_Extent") == "0 -1 0 -1 0 -1"
    node = _load_in_slicer(slicer_core, path)
    assert node.GetSegmentation().GetNumberOfSegments() == 3
    assert not any(m.any() for m in _masks_in_slicer(slicer_core, node, (3, 4, 5), oblique()).values())


def test_samples_without_shared_data_in_slicer(slicer_core, samples, tmp_path):
    label_path = samples / "hippocampus_001_label.nii.gz"
    labels, geometry = read_image(label_path)
    labels = labels.astype(np.uint8)
    segments = [Label(1, "anterior hippocampus", (220, 180, 60), HIPPOCAMPUS), Label(2, "posterior hippocampus")]
    node = _load_in_slicer(slicer_core, write_segmentation(tmp_path / "h.seg.nrrd", labels, geometry, segments))
    masks = _masks_in_slicer(slicer_core, node, labels.shape, geometry)
    np.testing.assert_array_equal(masks["anterior hippocampus"], labels == 1)
    np.testing.assert_array_equal(masks["posterior hippocampus"], labels == 2)


def test_bundled_terminology_tells_the_labels_apart_in_slicer(slicer_core, samples, tmp_path):
    """Resources/Models/terminology.json (what bundle_model.py puts in the cards) read back by Slicer: the DICOM
    master list context, and anterior and posterior hippocampus distinct codes (as a DICOM SEG needs)."""
    slicer = slicer_core[0]
    codes = json.loads((resources_dir() / "Models" / "terminology.json").read_text())
    labels, geometry = read_image(samples / "hippocampus_001_label.nii.gz")
    segments = [Label(1, "anterior hippocampus", (220, 180, 60), codes["anterior hippocampus"]),
                Label(2, "posterior hippocampus", (60, 140, 220), codes["posterior hippocampus"]),
                Label(3, "left atrium cavity", (200, 80, 80), codes["left atrium cavity"])]
    node = _load_in_slicer(slicer_core, write_segmentation(tmp_path / "t.seg.nrrd", labels.astype(np.uint8),
                                                           geometry, segments))
    logic, read = slicer.vtkSlicerTerminologiesModuleLogic(), {}
    for n in range(node.GetSegmentation().GetNumberOfSegments()):
        segment, entry = node.GetSegmentation().GetNthSegment(n), slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
        assert entry.GetTerminologyContextName() == "Segmentation category and type - DICOM master list"
        assert entry.GetRegionContextName() == "Anatomic codes - DICOM master list"
        read[segment.GetName()] = tuple((o.GetCodingSchemeDesignator(), o.GetCodeValue(), o.GetCodeMeaning()) for o in
                                        (entry.GetCategoryObject(), entry.GetTypeObject(),
                                         entry.GetTypeModifierObject()))
    assert read["anterior hippocampus"][1] == read["posterior hippocampus"][1] == ("SCT", "5366008", "Hippocampus")
    assert read["anterior hippocampus"][2] == ("SCT", "255549009", "Anterior")
    assert read["posterior hippocampus"][2] == ("SCT", "255551008", "Posterior")
    assert read["left atrium cavity"][1] == ("SCT", "82471001", "Left atrium")
    assert len(set(read.values())) == 3
