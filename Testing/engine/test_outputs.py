"""All-or-nothing outputs (``medseg.outputs``): real short writes, real rename failures, hostile label names."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from medseg.geometry import Geometry
from medseg.io import write_image
from medseg.outputs import TEMPORARY_PREFIX, OutputError, OutputSet, safe_slug, unique_slugs

REPO = Path(__file__).resolve().parents[2]
HOSTILE_NAMES = ["../../x", "../evil", "a/b", "..", "/etc/passwd", "C:\\Windows\\x", "\x1b[2Jred", "tab\there",
                 "new\nline", ".hidden", "-rf", "", "   ", "名前", "a" * 300, "con", "x\u202eexe.png"]


def _temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.startswith(TEMPORARY_PREFIX)]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_safe_slug_never_leaves_the_folder(name, tmp_path):
    slug = safe_slug(name)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", slug) or slug == "label", slug
    assert (tmp_path / f"p_{slug}.nii.gz").resolve().parent == tmp_path.resolve()


def test_safe_slug_keeps_readable_names():
    assert safe_slug("anterior hippocampus") == "anterior_hippocampus"
    assert safe_slug("Vertebra L1 (left)") == "Vertebra_L1_left"
    assert safe_slug("névé") == "neve"
    assert safe_slug("../evil") == "evil" and safe_slug("a/b") == "a_b"


def test_unique_slugs_add_the_label_id_where_two_collide():
    slugs = unique_slugs({1: "a/b", 2: "a b", 3: "A_B", 4: "liver", 5: "../..", 6: "//"})
    assert slugs == {1: "a_b_1", 2: "a_b_2", 3: "A_B_3", 4: "liver", 5: "label_5", 6: "label_6"}
    assert len({s.lower() for s in slugs.values()}) == len(slugs)


def test_commit_puts_every_file_in_place_together(tmp_path):
    (tmp_path / "old.json").write_text("old")
    with OutputSet() as outputs:
        outputs.reserve(tmp_path / "a.txt")
        outputs.write_text(tmp_path / "old.json", "new")
        outputs.write_bytes(tmp_path / "a.txt", b"A")
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["old.json"]
    assert (tmp_path / "old.json").read_text() == "new" and (tmp_path / "a.txt").read_bytes() == b"A"
    assert outputs.committed == [tmp_path / "a.txt", tmp_path / "old.json"]
    assert _temporaries(tmp_path) == []


@pytest.mark.parametrize("fault", [ValueError("model produced NaN"), KeyboardInterrupt()])
def test_an_exception_in_the_block_leaves_no_new_file_and_old_files_as_they_were(tmp_path, fault):
    old = tmp_path / "seg.nii.gz"
    write_image(old, np.ones((3, 4, 5), np.uint8), Geometry())
    before = old.read_bytes()
    with pytest.raises(type(fault)), OutputSet() as outputs:
        write_image(old, np.zeros((3, 4, 5), np.uint8), Geometry(), outputs=outputs)
        outputs.write_text(tmp_path / "report.json", "{}")
        raise fault
    assert [p.name for p in tmp_path.iterdir()] == ["seg.nii.gz"] and old.read_bytes() == before


def test_a_folder_at_an_output_path_stops_the_commit_before_any_rename(tmp_path):
    """A real fault while committing: a folder appeared at the second output's path after it was written."""
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text("old a")
    outputs = OutputSet()
    outputs.write_text(first, "new a")
    outputs.write_text(second, "new b")
    second.mkdir()
    (second / "keep").write_text("x")
    with pytest.raises(OutputError, match=r"cannot write .*b\.json: Is a directory; it is a folder; give a file name"):
        outputs.commit()
    assert first.read_text() == "old a" and (second / "keep").read_text() == "x"
    assert _temporaries(tmp_path) == []


def test_a_failed_rename_puts_back_the_files_already_replaced(tmp_path):
    """A real fault in the middle of the renames: the second temporary was deleted (say, by a temp cleaner) after
    the first output had already replaced its old file."""
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text("old a")
    outputs = OutputSet()
    outputs.write_text(first, "new a")
    outputs.write_text(second, "new b")
    next(tmp_path.glob(f"{TEMPORARY_PREFIX}*.b.json")).unlink()
    with pytest.raises(OutputError, match=r"cannot write .*b\.json: No such file or directory"):
        outputs.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"] and first.read_text() == "old a"


@pytest.mark.parametrize("name", ["x.nii.nii", "x.nii.gz.nii.gz", "x.hdr.nii"])
def test_a_doubled_nifti_extension_is_refused_before_itk_writes_elsewhere(tmp_path, name):
    with pytest.raises(OutputError, match=r"ITK would write a file named .* instead; give a name with one extension"):
        write_image(tmp_path / name, np.zeros((2, 2, 2), np.uint8), Geometry())
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_folder_fails_at_reserve_with_the_path_and_a_fix(tmp_path):
    """A real fault: a path whose 'folder' is a regular file (ENOTDIR), which stops root too."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=r"cannot write .*file/seg\.nii\.gz: Not a directory; a part of the path "
                                          r"is a file"):
        OutputSet().reserve(tmp_path / "file" / "seg.nii.gz")


# A child process with RLIMIT_FSIZE: every write past the limit fails with EFBIG, as on a full disk. It writes one
# output per writer and limit over an existing file, and prints what happened as JSON lines.
_CHILD = textwrap.dedent("""
    import json, resource, signal, sys
    from pathlib import Path
    import numpy as np
    from medseg.geometry import Geometry
    from medseg.io import write_image, write_json, write_segmentation
    from medseg.card import Label
    from medseg.outputs import OutputError, OutputSet
    from medseg.render import write_png

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    folder, cases = Path(sys.argv[1]), json.loads(sys.argv[2])
    rng = np.random.default_rng(0)
    image = rng.random((20, 40, 40)).astype(np.float32)
    labels = (rng.random((20, 40, 40)) * 3).astype(np.uint8)
    writers = {
        "nii.gz": lambda p, o: write_image(p, image, Geometry(), outputs=o),
        "nii": lambda p, o: write_image(p, image, Geometry(), outputs=o),
        "nrrd": lambda p, o: write_image(p, image, Geometry(), outputs=o),
        "raw.nrrd": lambda p, o: write_image(p, image, Geometry(), compress=False, outputs=o),
        "mha": lambda p, o: write_image(p, image, Geometry(), outputs=o),
        "seg.nrrd": lambda p, o: write_segmentation(p, labels, Geometry(), [Label(1, "a"), Label(2, "b")], outputs=o),
        "json": lambda p, o: write_json(p, {"values": image.ravel()[:20000].tolist()}, outputs=o),
        "png": lambda p, o: write_png(p, (image[0, :, :, None] * np.ones(3) * 255).astype(np.uint8).repeat(8, 0),
                                      outputs=o),
    }
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    for kind, limit in cases:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit or hard, hard))
        ext = "nrrd" if kind == "raw.nrrd" else kind
        try:
            with OutputSet() as outputs:
                writers[kind](folder / f"out_{kind.replace('.', '_')}.{ext}", outputs)
            print(json.dumps([kind, limit, "ok", ""]), flush=True)
        except OutputError as exc:
            print(json.dumps([kind, limit, "error", str(exc)]), flush=True)
""")
_KINDS = ["nii.gz", "nii", "nrrd", "raw.nrrd", "mha", "seg.nrrd", "json", "png"]


def _run_child(folder: Path, cases: list) -> list:
    env = {**os.environ, "PYTHONPATH": str(REPO / "MedSegExtension")}
    result = subprocess.run([sys.executable, "-c", _CHILD, str(folder), json.dumps(cases)], capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_every_writer_detects_a_short_write_and_keeps_the_old_file(tmp_path):
    """EFBIG from RLIMIT_FSIZE cuts each writer short at the start, in the middle and in its last bytes (where
    SimpleITK's NIfTI and NRRD writers report nothing); the old file of that name stays byte-identical."""
    sizes_dir = tmp_path / "sizes"
    sizes_dir.mkdir()
    assert all(r[2] == "ok" for r in _run_child(sizes_dir, [[k, 0] for k in _KINDS]))
    sizes = {k: next(sizes_dir.glob(f"out_{k.replace('.', '_')}.*")).stat().st_size for k in _KINDS}
    folder = tmp_path / "out"
    shutil.copytree(sizes_dir, folder)
    for path in folder.iterdir():
        path.write_bytes(b"old " + path.name.encode())
    cases = [[k, limit] for k in _KINDS for limit in (50, sizes[k] // 2, sizes[k] - 8, sizes[k] - 1)]
    results = _run_child(folder, cases)
    assert len(results) == len(cases)
    for kind, limit, outcome, message in results:
        assert outcome == "error", f"{kind} cut at {limit} of {sizes[kind]} bytes was not detected"
        assert re.match(rf"cannot write {re.escape(str(folder))}/\S+: .+; .*(ulimit|folder)", message), message
        assert "\n" not in message and TEMPORARY_PREFIX not in message, message
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in sizes_dir.iterdir())
    for path in folder.iterdir():
        assert path.read_bytes() == b"old " + path.name.encode()


def _mount_tmpfs(folder: Path, size: str) -> bool:
    if not sys.platform.startswith("linux") or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def test_a_full_disk_names_the_file_and_leaves_the_old_one(tmp_path):
    """ENOSPC from a real, tiny tmpfs (needs permission to mount; elsewhere RLIMIT_FSIZE above stands in)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount_tmpfs(disk, "64k"):
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN); the RLIMIT_FSIZE test covers short "
                    "writes")
    try:
        old = disk / "prob.nii.gz"
        old.write_bytes(b"old")
        noise = np.random.default_rng(1).random((40, 60, 60)).astype(np.float32)  # ~500 kB compressed
        with pytest.raises(OutputError, match=r"cannot write .*prob\.nii\.gz: No space left on device \(only \d+ bytes "
                                                 r"reached the disk\); free space"):
            write_image(old, noise, Geometry())
        with pytest.raises(OutputError, match=r"cannot write .*r\.json: No space left on device; free space"), \
                OutputSet() as outputs:
            outputs.write_text(disk / "r.json", "x" * 200_000)
        assert [p.name for p in disk.iterdir()] == ["prob.nii.gz"] and old.read_bytes() == b"old"
    finally:
        subprocess.run(["umount", str(disk)], check=False)
