"""Surface meshes: closed, in LPS millimetres where the mask is, volume kept by the smoothing, STL/OBJ files."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from medseg.card import Label
from medseg.geometry import Geometry
from medseg.io import read_image
from medseg.meshes import MeshOptions, label_meshes, mesh_paths, obj_bytes, stl_bytes, surface_mesh, write_meshes

trimesh = pytest.importorskip("trimesh", reason="the meshes extra (trimesh) is not installed")
pytest.importorskip("skimage", reason="the meshes extra (scikit-image) is not installed")

def _oblique(spacing=(0.7, 1.1, 2.3), mirrored=False) -> Geometry:
    """A rotated (and optionally mirrored) direction with anisotropic spacing."""
    a, b = np.deg2rad(35), np.deg2rad(-20)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    d = rz @ rx @ (np.diag([-1.0, 1, 1]) if mirrored else np.eye(3))
    return Geometry(spacing, (12.0, -40.0, 7.5), tuple(map(tuple, d)))


def _sphere(shape=(40, 44, 48), center=(19.6, 21.2, 23.9), radius=12.3) -> np.ndarray:
    z, y, x = np.indices(shape)
    return ((z - center[0]) ** 2 + (y - center[1]) ** 2 + (x - center[2]) ** 2 <= radius**2)


def _check_mesh(mask: np.ndarray, geometry: Geometry, vertices: np.ndarray, faces: np.ndarray, tolerance: float):
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    voxel_ml = mask.sum() * geometry.voxel_volume_ml
    assert mesh.volume > 0, "normals must point outwards"
    assert abs(mesh.volume / 1000 / voxel_ml - 1) < tolerance
    mask_centroid = geometry.index_to_lps(np.argwhere(mask)[:, ::-1].mean(0))[0]
    assert np.linalg.norm(mesh.center_mass - mask_centroid) < min(geometry.spacing)


@pytest.mark.parametrize("mirrored", [False, True])
def test_sphere_closed_volume_kept_and_in_place(mirrored):
    mask = _sphere()
    geometry = _oblique(mirrored=mirrored)
    vertices, faces = surface_mesh(mask, geometry)
    _check_mesh(mask, geometry, vertices, faces, tolerance=0.01)
    assert trimesh.Trimesh(vertices, faces).euler_number == 2  # one closed surface of genus 0
    # the smoothing removed the staircase: vertices lie close to the true sphere (radius 12.3 voxels)
    raw, _ = surface_mesh(mask, Geometry(), MeshOptions(iterations=0))
    smooth, _ = surface_mesh(mask, Geometry())
    center = np.array([23.9, 21.2, 19.6])
    assert np.std(np.linalg.norm(smooth - center, axis=1)) < np.std(np.linalg.norm(raw - center, axis=1))


def test_real_hippocampus_on_an_oblique_anisotropic_grid(shared_data):
    labels, _ = read_image(shared_data / "hippocampus" / "labelsTr" / "hippocampus_001.nii.gz")
    labels = labels.astype(np.int16)
    geometry = _oblique(spacing=(1.0, 0.8, 1.9), mirrored=True)
    specs = [Label(0, "background"), Label(1, "anterior hippocampus"), Label(2, "posterior hippocampus")]
    meshes = label_meshes(labels, geometry, specs)
    assert [m.label_id for m in meshes] == [1, 2]
    for mesh in meshes:
        _check_mesh(labels == mesh.label_id, geometry, mesh.vertices, mesh.faces, tolerance=0.03)
        assert mesh.volume_ml == pytest.approx(trimesh.Trimesh(mesh.vertices, mesh.faces).volume / 1000)


def test_files_read_back_and_say_lps(tmp_path):
    geometry = _oblique()
    labels = _sphere().astype(np.uint8) * 3
    specs = [Label(3, "left kidney / cyst"), Label(4, "absent")]
    meshes = label_meshes(labels, geometry, specs)
    written = write_meshes(tmp_path, meshes, specs)
    assert sorted(p.name for p in written) == ["absent.obj", "absent.stl", "left_kidney_cyst.obj",
                                               "left_kidney_cyst.stl"]
    stl = (tmp_path / "left_kidney_cyst.stl").read_bytes()
    assert b"SPACE=LPS" in stl[:80] and struct.unpack("<I", stl[80:84])[0] == len(meshes[0].faces)
    for name in ("left_kidney_cyst.stl", "left_kidney_cyst.obj"):
        back = trimesh.load(tmp_path / name, force="mesh")
        assert back.is_watertight
        assert back.volume / 1000 == pytest.approx(meshes[0].volume_ml, rel=1e-4)  # float32 in STL
        assert np.allclose(back.bounds, [meshes[0].vertices.min(0), meshes[0].vertices.max(0)], atol=1e-3)
    assert (tmp_path / "left_kidney_cyst.obj").read_text().splitlines()[1].startswith("# SPACE=LPS")
    empty = (tmp_path / "absent.stl").read_bytes()
    assert len(empty) == 84 and struct.unpack("<I", empty[80:])[0] == 0  # a valid STL without triangles
    assert "\nv " not in (tmp_path / "absent.obj").read_text()


def test_names_never_leave_the_folder_and_stay_distinct(tmp_path):
    specs = [Label(0, "background"), Label(1, "../../etc/passwd"), Label(2, "Liver"), Label(3, "liver")]
    paths = mesh_paths(tmp_path, specs)
    assert set(paths) == {1, 2, 3}
    names = [p.name for pair in paths.values() for p in pair]
    assert len(set(map(str.lower, names))) == 6
    assert all(p.parent == tmp_path for pair in paths.values() for p in pair)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="3D"):
        surface_mesh(np.ones((4, 4), bool), Geometry())
    with pytest.raises(ValueError, match="iterations"):
        MeshOptions(iterations=-1)
    vertices, faces = surface_mesh(np.zeros((3, 3, 3), bool), Geometry())
    assert vertices.shape == (0, 3) and faces.shape == (0, 3)
    assert stl_bytes(label_meshes(np.zeros((3, 3, 3), np.uint8), Geometry(), [Label(1, "x")])[0])[80:] == b"\0" * 4
    assert obj_bytes(label_meshes(np.zeros((3, 3, 3), np.uint8), Geometry(), [Label(1, "x")])[0]).startswith(b"#")


# ---------------------------------------------------------------------------------------------- command line


@pytest.mark.parametrize(("setup", "message"), [
    ("missing", r"--meshes .* does not exist; create it first"),
    ("file", r"--meshes .* is a file, not a folder"),
    ("target is a folder", r"--meshes \(label 1 'anterior hippocampus'\) STL .* is a folder"),
    ("same as the report", r"--report and --meshes \(label 1 'anterior hippocampus'\) OBJ both write"),
])
def test_bad_mesh_folders_are_refused_before_any_work(tmp_path, samples, tiny_checkpoint, capsys, setup, message):
    import re

    from medseg.cli import main

    out = tmp_path / "out"
    out.mkdir()
    meshes, extra = out / "meshes", []
    if setup == "file":
        meshes.write_text("not a folder")
    elif setup == "target is a folder":
        (meshes / "anterior_hippocampus.stl").mkdir(parents=True)
    elif setup == "same as the report":
        meshes.mkdir()
        extra = ["--report", str(meshes / "anterior_hippocampus.obj")]
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    code = main(["segment", str(samples / "hippocampus_001_T1w.nii.gz"), "--model", str(tiny_checkpoint),
                 "--output", str(out / "seg.nii.gz"), "--meshes", str(meshes), *extra, "--device", "cpu",
                 "--no-progress"])
    assert code == 2
    assert re.search(message, capsys.readouterr().err)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
