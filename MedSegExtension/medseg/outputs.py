"""All-or-nothing output files: every file of one run appears together, or none does.

>>> with OutputSet() as outputs:                      # doctest: +SKIP
...     outputs.write_image("out/seg.nii.gz", image, compress=True)
...     outputs.write_text("out/report.json", text)
... # leaving the block without an exception renames both into place; any exception (a full disk,
... # Ctrl-C, a model that produced NaN) deletes the temporaries and leaves every old file as it was

Each output is written to a hidden temporary (``.medseg-<random>.<name>``) in its own target folder,
flushed, fsynced and checked to be complete on disk, and only :meth:`OutputSet.commit` renames them into
place. SimpleITK does not always report a short write (its NIfTI writer prints ``NWAD`` and carries on; its
NRRD writer ignores a failure when the file is closed), so a written image is checked against its own
header: the file length of uncompressed data, and the gzip trailer (length modulo 2**32) of compressed data.
A failure while renaming puts back the files already replaced (kept as hard links, or moved aside where
the file system has none). What the writers' C libraries print on stderr meanwhile goes to the debug log,
so that a command line error stays one line.

Label names come from model cards, i.e. from whoever wrote the checkpoint: :func:`safe_slug` and
:func:`unique_slugs` turn them into file-name parts that cannot leave the output folder.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import struct
import sys
import tempfile
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

__all__ = ["OutputError", "OutputSet", "safe_slug", "unique_slugs"]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
TEMPORARY_PREFIX = ".medseg-"
MAX_SLUG_CHARS = 64
_FIX = "free space there or choose another folder"


class OutputError(OSError):
    """An output could not be written. The message names the file and the fix; nothing was left behind."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code


# ---------------------------------------------------------------------------------------------- names


def safe_slug(name: str, max_chars: int = MAX_SLUG_CHARS) -> str:
    """A file-name part made of ASCII letters, digits, ``_`` and ``-`` only.

    Accents are dropped (``é`` -> ``e``); every other run of characters (spaces, dots, slashes, control
    characters) becomes one ``_``; so no ``..``, separator or hidden name can come out of it.

    Args:
        name: any text, e.g. a label name from a model card.
        max_chars: the longest result.

    Returns:
        The slug, never empty (``label`` when nothing usable is left).
    """
    ascii_text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", ascii_text).strip("_-")[:max_chars].strip("_-")
    return slug or "label"


def unique_slugs(names: Mapping[int, str]) -> dict[int, str]:
    """:func:`safe_slug` of each label name, with ``_<id>`` added to every slug that two labels share.

    Slugs are compared case-insensitively (macOS and Windows file names are), so ``Liver`` and ``liver``
    become ``Liver_1`` and ``liver_2``.

    Args:
        names: label id -> label name.
    """
    slugs = {label_id: safe_slug(name) for label_id, name in names.items()}
    counts: dict[str, int] = {}
    for slug in slugs.values():
        counts[slug.lower()] = counts.get(slug.lower(), 0) + 1
    return {label_id: f"{slug}_{label_id}" if counts[slug.lower()] > 1 else slug for label_id, slug in slugs.items()}


# ---------------------------------------------------------------------------------------------- the set


@dataclass
class _Entry:
    final: Path
    temporary: Path
    written: bool = False
    backup: Path | None = None
    linked: bool = False  # the backup is a hard link: the old file stays in place until replaced
    moved: bool = False  # the old file was moved to the backup name
    placed: bool = False


class OutputSet:
    """The output files of one run, renamed into place together by :meth:`commit` (or the ``with`` block).

    Args:
        create_folders: create missing parent folders (the single-file writers of ``io``); the command line
            checks its folders before any work instead.
    """

    def __init__(self, *, create_folders: bool = False):
        self._entries: dict[Path, _Entry] = {}
        self._create_folders = create_folders
        self.committed: list[Path] = []  # the files put in place by the last commit

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, kind, exc, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()

    def reserve(self, final: PathLike) -> Path:
        """Create the (empty) temporary of `final` now: an unwritable folder fails before any work.

        Returns:
            The temporary path, in the folder of `final`, ending in the same name (and so the same extension).

        Raises:
            OutputError: the folder is missing, read-only or full.
        """
        final = Path(os.path.abspath(final))
        entry = self._entries.get(final)
        if entry is not None:
            return entry.temporary
        if self._create_folders:
            final.parent.mkdir(parents=True, exist_ok=True)
        temporary = final.with_name(f"{TEMPORARY_PREFIX}{secrets.token_hex(4)}.{final.name}")
        self._entries[final] = _Entry(final, temporary)  # first: a Ctrl-C right after the file exists still finds it
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666))
        except OSError as exc:
            del self._entries[final]
            raise _os_error(final, exc) from None
        return temporary

    def write_bytes(self, final: PathLike, data: bytes) -> Path:
        """Write `data` as the future content of `final` (flushed and fsynced)."""
        entry = self._entry(final)
        try:
            with open(entry.temporary, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise _os_error(entry.final, exc) from None
        entry.written = True
        return entry.final

    def write_text(self, final: PathLike, text: str) -> Path:
        """Write `text` as UTF-8 (see :meth:`write_bytes`)."""
        return self.write_bytes(final, text.encode("utf-8"))

    def write_image(self, final: PathLike, image: sitk.Image, compress: bool) -> Path:
        """Write a SimpleITK image, then check that all of it reached the disk and fsync it.

        Args:
            final: ``.nii.gz``, ``.nii``, ``.nrrd`` (also ``.seg.nrrd``) or ``.mha``.
            image: what to write, metadata included.
            compress: gzip the voxels (ignored by ``.nii``; ``.nii.gz`` is always compressed).
        """
        _check_nifti_name(Path(final))
        entry = self._entry(final)
        try:
            with _stderr_to_log():  # niftilib prints "** ERROR: NWAD ..." on stderr for a short write
                sitk.WriteImage(image, str(entry.temporary), compress)
        except RuntimeError as exc:
            known = _size_problem(entry.final, _size(entry.temporary), None)
            if known is not None:
                raise known from None
            reason = _itk_reason(str(exc).replace(str(entry.temporary), entry.final.name))
            raise OutputError(f"cannot write {entry.final}: {reason}; check that the folder is writable and has free "
                              f"space ({_free(entry.final)}), or choose another folder") from None
        _check_complete(entry.temporary, entry.final)
        _fsync(entry.temporary, entry.final)
        entry.written = True
        return entry.final

    def commit(self) -> list[Path]:
        """Rename every written temporary into place; on any failure put every old file back.

        Reserved outputs that were never written are dropped (their temporaries deleted).

        Returns:
            The final paths now in place, in the order they were reserved.

        Raises:
            OutputError: a rename failed; every output is as it was before the run.
        """
        entries = [e for e in self._entries.values() if e.written]
        current = entries[0] if entries else None
        try:
            for current in entries:
                _keep_old(current)
            for current in entries:
                if current.backup is not None and not current.linked:
                    os.replace(current.final, current.backup)
                    current.moved = True
                os.replace(current.temporary, current.final)
                current.placed = True
        except BaseException as exc:
            _roll_back(entries)
            self.discard()
            if isinstance(exc, OSError) and not isinstance(exc, OutputError) and current is not None:
                raise _os_error(current.final, exc) from None
            raise
        for entry in entries:
            if entry.backup is not None:
                entry.backup.unlink(missing_ok=True)
        for folder in {e.final.parent for e in entries}:
            _fsync_folder(folder)
        self.discard()
        for entry in entries:
            log.info("wrote %s", entry.final)
        self.committed = [e.final for e in entries]
        return self.committed

    def discard(self) -> None:
        """Delete every temporary; no final file is touched. Safe to call twice."""
        for entry in self._entries.values():
            with contextlib.suppress(OSError):
                entry.temporary.unlink(missing_ok=True)
        self._entries.clear()

    def _entry(self, final: PathLike) -> _Entry:
        self.reserve(final)
        return self._entries[Path(os.path.abspath(final))]


def _keep_old(entry: _Entry) -> None:
    """Before replacing an existing file, keep it under a hidden name to roll back to."""
    if not os.path.lexists(entry.final):
        return
    if entry.final.is_dir() and not entry.final.is_symlink():
        raise _os_error(entry.final, IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)))
    entry.backup = entry.final.with_name(f"{TEMPORARY_PREFIX}{secrets.token_hex(4)}.old.{entry.final.name}")
    try:
        os.link(entry.final, entry.backup, follow_symlinks=False)
        entry.linked = True
    except (OSError, NotImplementedError):
        entry.linked = False  # no hard links here (FAT, some network shares): moved aside while committing


def _roll_back(entries: list[_Entry]) -> None:
    """Undo a commit cut short. What happened is read from the disk too: a Ctrl-C can fall between a rename and
    the flag that records it (a temporary that is gone was renamed into place)."""
    for entry in reversed(entries):
        entry.placed = entry.placed or not os.path.lexists(entry.temporary)
        entry.moved = entry.moved or (entry.backup is not None and not entry.linked and os.path.lexists(entry.backup))
        with contextlib.suppress(OSError):
            if entry.placed or entry.moved:
                if entry.backup is not None:
                    os.replace(entry.backup, entry.final)
                else:
                    entry.final.unlink(missing_ok=True)
            elif entry.backup is not None and entry.linked:
                entry.backup.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- checks


def _check_nifti_name(final: Path) -> None:
    """ITK's NIfTI writer drops a doubled extension (``x.nii.nii`` is written as ``x.nii``): refuse such names."""
    match = re.fullmatch(r"(.*)(\.nii(?:\.gz)?)", final.name, re.IGNORECASE)
    if match and re.search(r"\.(nii|hdr|img)(\.gz)?$", match.group(1), re.IGNORECASE):
        raise OutputError(f"cannot write {final}: ITK would write a file named {match.group(1)!r} instead; give a "
                          f"name with one extension (e.g. {match.group(1).split('.')[0]}{match.group(2)})",
                          errno.EINVAL)


def _check_complete(temporary: Path, final: Path) -> None:
    """Refuse an image file shorter than its own header says (a write cut short by a full disk or a limit)."""
    name = final.name.lower()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(temporary))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise _short_write(final, _size(temporary), None) from None
    voxels = 1
    for n in reader.GetSize():
        voxels *= n
    component = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID()).GetSizeOfPixelComponent()
    data = voxels * reader.GetNumberOfComponents() * component
    size = temporary.stat().st_size
    if name.endswith((".nii", ".nii.gz")):
        expected = int(float(reader.GetMetaData("vox_offset"))) + data
        ok = _gzip_length_matches(temporary, expected) if name.endswith(".gz") else size == expected
    elif name.endswith(".nrrd"):
        header = _header_length(temporary, b"\n\n")
        gz = _header_field(temporary, header, b"encoding:") == b"gzip"
        ok = header is not None and (_gzip_length_matches(temporary, data, header) if gz else size == header + data)
    elif name.endswith(".mha"):
        header = _header_length(temporary, b"ElementDataFile = LOCAL\n")
        packed = _header_field(temporary, header, b"CompressedDataSize =")
        ok = header is not None and size == header + (int(packed) if packed else data)
    else:
        return
    if not ok:
        raise _short_write(final, size, data)


def _header_length(path: Path, end: bytes, limit: int = 1 << 24) -> int | None:
    """Bytes up to and including the first `end` (the header of a NRRD or MetaImage file), None if absent."""
    with open(path, "rb") as f:
        head = f.read(min(limit, 1 << 16))
        while end not in head and len(head) < limit:
            more = f.read(1 << 16)
            if not more:
                break
            head += more
    at = head.find(end)
    return None if at < 0 else at + len(end)


def _header_field(path: Path, header: int | None, key: bytes) -> bytes | None:
    if header is None:
        return None
    with open(path, "rb") as f:
        for line in f.read(header).splitlines():
            if line.startswith(key):
                return line[len(key):].strip()
    return None


def _gzip_length_matches(path: Path, expected: int, start: int = 0) -> bool:
    """Whether the gzip stream from `start` to the end of the file ends in a trailer for `expected` bytes.

    The last 4 bytes of a gzip stream are its uncompressed length modulo 2**32: a stream cut short ends in
    compressed data instead, which matches by chance once in 4 billion (no decompression needed).
    """
    size = path.stat().st_size
    if size - start < 18:  # a gzip header and trailer alone take 18 bytes
        return False
    with open(path, "rb") as f:
        f.seek(start)
        magic = f.read(2)
        f.seek(size - 4)
        (length,) = struct.unpack("<I", f.read(4))
    return magic == b"\x1f\x8b" and length == expected % (1 << 32)


def _fsync(path: Path, final: Path) -> None:
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _os_error(final, exc) from None


def _fsync_folder(folder: Path) -> None:
    """Make the renames durable (POSIX); folders cannot be opened on Windows, where this does nothing."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        log.warning("could not flush folder %s to disk: %s", folder, exc.strerror)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- messages


def _free(path: Path) -> str:
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return "free space unknown"
    return f"{free / 1e6:.1f} MB free there"


def _os_error(final: Path, exc: OSError) -> OutputError:
    """``cannot write FINAL: <reason>; <fix>`` for an OSError raised while writing or renaming `final`."""
    reason = exc.strerror or str(exc)
    fixes = {
        errno.ENOSPC: _FIX,
        errno.EDQUOT: "free space in your quota or choose another folder",
        errno.EFBIG: "the file is larger than this process or file system allows; raise the limit (ulimit -f) or "
                     "choose another folder",
        errno.EACCES: "make the folder writable or choose another folder",
        errno.EPERM: "make the folder writable or choose another folder",
        errno.EROFS: "the disk is read-only; choose another folder",
        errno.ENOENT: "create the folder first",
        errno.ENOTDIR: "a part of the path is a file, not a folder; choose another folder",
        errno.EISDIR: "it is a folder; give a file name",
        errno.ENAMETOOLONG: "choose a shorter file name",
    }
    return OutputError(f"cannot write {final}: {reason}; {fixes.get(exc.errno, _FIX)}", exc.errno)


def _short_write(final: Path, have: int, needed: int | None) -> OutputError:
    """The error for a file shorter than its header says, naming the likely cause (SimpleITK reports none)."""
    known = _size_problem(final, have, needed)
    if known is not None:
        return known
    return OutputError(f"cannot write {final}: the write was cut short (only {have} bytes reached the disk; a disk "
                       f"error?); {_FIX}", errno.EIO)


def _size_problem(final: Path, have: int, needed: int | None) -> OutputError | None:
    """The error when a write that stopped at `have` bytes ran into the file size limit or a full disk."""
    limit = _file_size_limit()
    if limit is not None and have >= limit:
        return OutputError(f"cannot write {final}: File too large (this process may write at most {limit} bytes per "
                           f"file); raise the limit (ulimit -f) or write smaller outputs", errno.EFBIG)
    try:
        full = shutil.disk_usage(final.parent).free < max(needed or 0, 1 << 20)
    except OSError:
        return None
    if not full:
        return None
    return OutputError(f"cannot write {final}: No space left on device (only {have} bytes reached the disk); {_FIX}",
                       errno.ENOSPC)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _file_size_limit() -> int | None:
    """This process's file size limit (RLIMIT_FSIZE) in bytes, None when unlimited or unknown (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _itk_reason(message: str) -> str:
    """The informative part of an ITK writer's exception: its ``Reason:`` (MetaImage) or its first 200 characters."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("Exception thrown", "/"))] or lines
    text = " ".join(lines)
    _, found, reason = text.rpartition("Reason: ")
    return reason.strip()[:200] if found else text[:200]


@contextlib.contextmanager
def _stderr_to_log() -> Iterator[None]:
    """Send what C libraries print on file descriptor 2 meanwhile to the debug log instead of the terminal."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace").strip()
            if text:
                log.debug("image writer: %s", " / ".join(text.splitlines()))
