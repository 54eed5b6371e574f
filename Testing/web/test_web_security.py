"""`medseg serve`'s rules before anything is served: bind address and token, data-root confinement, upload size."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medseg.cli import main
from MedSegWeb.security import ServeOptions, check_upload, is_local_host, resolve_in_root

TOKEN = "a-long-enough-secret-token"


def test_only_loopback_binds_without_token():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert is_local_host(host)
        ServeOptions(host=host)
    for host in ("0.0.0.0", "192.168.1.10", "example.org", "::"):
        assert not is_local_host(host)
        with pytest.raises(ValueError, match="--token"):
            ServeOptions(host=host)
    assert ServeOptions(host="0.0.0.0", token=TOKEN).token == TOKEN
    with pytest.raises(ValueError, match="at least 16"):
        ServeOptions(host="0.0.0.0", token="short")


def test_bad_options_are_refused(tmp_path):
    with pytest.raises(ValueError, match="--port"):
        ServeOptions(port=70000)
    with pytest.raises(ValueError, match="--max-upload-mb"):
        ServeOptions(max_upload_mb=0)
    with pytest.raises(FileNotFoundError, match="--data-root"):
        ServeOptions(data_root=tmp_path / "missing")


def test_cli_refuses_a_public_host_without_token(capsys):
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--token" in capsys.readouterr().err


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "root"
    (root / "case").mkdir(parents=True)
    (root / "case" / "image.nii.gz").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.nii.gz").write_bytes(b"secret")
    (root / "link_out.nii.gz").symlink_to(outside / "secret.nii.gz")
    (root / "dir_out").symlink_to(outside, target_is_directory=True)
    (root / "link_in.nii.gz").symlink_to(root / "case" / "image.nii.gz")
    return root


def test_paths_inside_the_root_resolve(root):
    assert resolve_in_root(root, "case/image.nii.gz") == (root / "case" / "image.nii.gz").resolve()
    assert resolve_in_root(root, "./case/image.nii.gz").read_bytes() == b"x"
    assert resolve_in_root(root, "link_in.nii.gz").read_bytes() == b"x"  # a link that stays inside is fine
    with pytest.raises(FileNotFoundError, match="not in the data root"):
        resolve_in_root(root, "case/missing.nii.gz")


@pytest.mark.parametrize("path", ["../outside/secret.nii.gz", "case/../../outside/secret.nii.gz",
                                  "link_out.nii.gz", "dir_out/secret.nii.gz", "/etc/passwd",
                                  "..\\outside\\secret.nii.gz", "", "   "])
def test_paths_leading_out_are_refused(root, path):
    with pytest.raises(ValueError, match="refused|no path"):
        resolve_in_root(root, path)


def test_no_data_root_means_no_paths(root):
    with pytest.raises(ValueError, match="--data-root"):
        resolve_in_root(None, "case/image.nii.gz")


def test_uploads_are_limited_and_named_safely():
    assert check_upload("../../etc/image.nii.gz", 10, 100) == "image.nii.gz"
    assert check_upload("C:\\Users\\me\\image.nrrd", 10, 100) == "image.nrrd"
    with pytest.raises(ValueError, match="limited to"):
        check_upload("big.nii.gz", 101, 100)
    with pytest.raises(ValueError, match="not a file name"):
        check_upload("..", 1, 100)
    assert os.sep not in check_upload("a/b/c.nii", 1, 100)


def test_serve_help_names_the_rules(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    assert "--data-root" in text and "--token" in text and "one user session" in text


def test_a_folder_with_a_link_out_anywhere_below_is_refused(root, tmp_path):
    series = root / "series" / "sub"
    series.mkdir(parents=True)
    (series / "1.dcm").write_bytes(b"d")
    (root / "series" / "inside.dcm").symlink_to(root / "case" / "image.nii.gz")
    assert resolve_in_root(root, "series") == (root / "series").resolve()  # links that stay inside are fine
    assert resolve_in_root(root, "case").is_dir()
    (series / "2.dcm").symlink_to(tmp_path / "outside" / "secret.nii.gz")
    with pytest.raises(ValueError, match=r"series/sub/2\.dcm is refused: it links outside the data root"):
        resolve_in_root(root, "series")
    (series / "2.dcm").unlink()
    (series / "more").symlink_to(tmp_path / "outside", target_is_directory=True)  # a linked folder, not followed
    with pytest.raises(ValueError, match=r"series/sub/more is refused"):
        resolve_in_root(root, "series")
    with pytest.raises(ValueError, match="links outside"):  # the root itself holds link_out.nii.gz
        resolve_in_root(root, ".")


def test_a_folder_too_large_to_check_is_refused(root, monkeypatch):
    import MedSegWeb.security as security

    monkeypatch.setattr(security, "MAX_TREE_ENTRIES", 3)
    for n in range(5):
        (root / "case" / f"{n}.dcm").write_bytes(b"d")
    with pytest.raises(ValueError, match="too many to check"):
        resolve_in_root(root, "case")
