"""What `medseg serve` refuses before it serves anything: the bind address, the token, uploads and server paths.

Pure Python (no trame, no Slicer), so the rules are tested on their own.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LOCAL_HOSTS", "ServeOptions", "check_tree_in_root", "check_upload", "is_local_host", "resolve_in_root"]

MAX_TREE_ENTRIES = 100_000  # entries of a folder opened by path that are checked for links out of the root

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_MAX_UPLOAD_MB = 512.0
MIN_TOKEN_LENGTH = 16


def is_local_host(host: str) -> bool:
    """True for an address only this machine can reach (loopback)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeOptions:
    """How the web app is served.

    Attributes:
        host: the address to bind (default loopback only).
        port: the TCP port (0: any free port).
        token: the secret a browser must give (``?token=...``); required when `host` is not a loopback address.
        data_root: the folder whose files the page may open by path (None: opening by path is off).
        max_upload_mb: largest upload accepted.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    data_root: Path | None = None
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port {self.port} is not a TCP port; use 1-65535 (0: any free port)")
        if not is_local_host(self.host) and not self.token:
            raise ValueError(f"--host {self.host} lets other machines reach the server: give --token SECRET (at "
                             f"least {MIN_TOKEN_LENGTH} characters, e.g. {secrets.token_urlsafe(24)}) or bind to "
                             f"127.0.0.1")
        if self.token is not None and len(self.token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"--token is {len(self.token)} characters long; use at least {MIN_TOKEN_LENGTH}")
        if not self.max_upload_mb > 0:
            raise ValueError(f"--max-upload-mb {self.max_upload_mb} must be positive")
        if self.data_root is not None and not Path(self.data_root).is_dir():
            raise FileNotFoundError(f"--data-root {self.data_root} is not a folder; give an existing folder")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def resolve_in_root(root: str | os.PathLike[str] | None, relative: str) -> Path:
    """The file `relative` names inside `root`, refused if it would lead out of it.

    Refused: no data root configured, an absolute path, a ``..`` part, anything whose real path (symbolic links
    resolved) is not inside the real root (a link pointing out of it), and a folder holding such a link anywhere
    below it (:func:`check_tree_in_root`: a DICOM folder or an nnU-Net results folder is read file by file).

    Raises:
        ValueError: the path is refused (the message says why and what is allowed).
        FileNotFoundError: it is inside the root but does not exist.
    """
    if root is None:
        raise ValueError("opening files by path is off: start the server with --data-root FOLDER, or upload the file")
    text = str(relative).strip()
    if not text:
        raise ValueError("no path given; type a path relative to the data root")
    parts = Path(text).parts
    if Path(text).is_absolute() or "\\" in text or ".." in parts:
        raise ValueError(f"{text!r} is refused: give a path relative to the data root, without '..'")
    real_root = Path(root).resolve(strict=True)
    target = (real_root / text).resolve()
    if target != real_root and real_root not in target.parents:
        raise ValueError(f"{text!r} is refused: it leads outside the data root (a link out of it)")
    if not target.exists():
        raise FileNotFoundError(f"{text!r} is not in the data root; check the name (paths are relative to it)")
    if target.is_dir():
        check_tree_in_root(root, target)
    return target


def check_tree_in_root(root: str | os.PathLike[str], folder: str | os.PathLike[str]) -> None:
    """Refuse `folder` (inside the data root `root`) when a symbolic link anywhere below it leads out of the root,
    or when it holds more than :data:`MAX_TREE_ENTRIES` entries (too many to check). Links are not followed while
    walking, so a linked folder is checked as the link it is.

    Raises:
        ValueError: naming the offending entry relative to the root, and what to do.
    """
    real_root = Path(root).resolve(strict=True)
    start = Path(folder).resolve()
    count = 0
    for dirpath, dirnames, filenames in os.walk(start, followlinks=False):
        for name in (*dirnames, *filenames):
            count += 1
            if count > MAX_TREE_ENTRIES:
                raise ValueError(f"{start.relative_to(real_root)}/ holds more than {MAX_TREE_ENTRIES} files and "
                                 f"folders: too many to check; point to the series or model folder itself")
            entry = Path(dirpath) / name
            if entry.is_symlink():
                real = entry.resolve()
                if real != real_root and real_root not in real.parents:
                    raise ValueError(f"{entry.relative_to(real_root)} is refused: it links outside the data root; "
                                     f"copy the file into the data root instead of linking it")


def check_upload(name: str, size: int, limit: int) -> str:
    """The file name to store an upload under (its last path part only), or ValueError for one over `limit`."""
    if size > limit:
        raise ValueError(f"{Path(name).name!r} is {size / 2**20:.1f} MB; uploads are limited to {limit / 2**20:g} MB "
                         f"(--max-upload-mb), or put the file in the data root and open it by path")
    base = Path(str(name).replace("\\", "/")).name
    if base in ("", ".", ".."):
        raise ValueError(f"upload name {name!r} is not a file name")
    return base
