"""Atomic, content-addressed file writes and the cleanup of partial files left by a killed run."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
import re
import threading
import unicodedata
from pathlib import Path
from typing import Any

TMP_MARK = ".partial-"
_tmp_ids = itertools.count()
_made_dirs: set[Path] = set()  # folders known to exist; saves a stat per write


class OutputError(OSError):
    """A file could not be written where it was asked for; the message names it, says why and what to do."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()  # the message alone, without OSError's "[Errno 28]"


class DiskFullError(OutputError):
    """The disk (or the file size limit) filled up while writing; what was saved before stays valid."""


FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, over quota, over the file size limit (ulimit -f)
UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR)


def output_error(path: Path, exc: OSError) -> OutputError:
    """The user's view of an OSError while writing `path`: the file, the system's words, and what to do."""
    said = exc.strerror or str(exc)
    if exc.errno in FULL:
        return DiskFullError(
            exc.errno, f"{path} could not be written: {said} (the disk or the file size limit is full)"
        )
    if exc.errno == errno.EISDIR:
        return OutputError(exc.errno, f"{path} is a folder; pass the path of a file to write")
    return OutputError(exc.errno, f"{path} could not be written: {said}; choose a folder you can write to")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder, fsync and a rename: readers never see half a file.

    Raises:
        DiskFullError: when the device has no space left (the temp file is removed).
        OutputError: when the place cannot be written (a read-only or foreign folder, a folder in the way).
    """
    path = Path(path)
    if path.is_dir():
        raise output_error(path, IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)))
    if path.parent not in _made_dirs:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise output_error(path, exc) from None
        _made_dirs.add(path.parent)
    tmp = path.parent / f".{path.name}{TMP_MARK}{os.getpid()}-{threading.get_ident()}-{next(_tmp_ids)}"
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:  # the folder was removed since we last made it
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)  # the bytes reach the disk before the name does: a power cut never leaves an empty file
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # on a read-only folder the clean-up fails too: keep the first error
            tmp.unlink(missing_ok=True)
        if exc.errno in FULL or exc.errno in UNWRITABLE:
            raise output_error(path, exc) from exc
        raise


def write_content(path: Path, data: bytes) -> None:
    """Write a content-addressed file unless it already holds exactly `data` (a file emptied or torn by hand, or
    by a power cut, is written again)."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    atomic_write_bytes(path, data)


def atomic_write_text(path: Path, text: str) -> None:
    """Atomic write of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, payload: Any) -> None:
    """Atomic write of pretty, key-sorted JSON (stable bytes for DVC)."""
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def remove_partials(root: Path) -> int:
    """Delete temp files that a killed run left behind under `root`; returns how many."""
    if not root.exists():
        return 0
    removed = 0
    for tmp in root.rglob(f".*{TMP_MARK}*"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def content_path(root: Path, sha256: str, ext: str) -> Path:
    """Where a file with this content hash lives: two-level fan-out keeps folders small at 100k files."""
    return root / sha256[:2] / f"{sha256}.{ext}"


_UNSAFE = re.compile(r"[^a-z0-9]+")
_PLAIN = re.compile(r"[A-Za-z0-9 _-]+")


def safe_name(name: str) -> str:
    """A folder name for an identity: ASCII, lower case, no separators or dots, never empty.

    Plain names fold readably (`Angelina Jolie` -> `angelina_jolie`). Names with other characters also get a short
    hash of the original, so that a lossy fold cannot merge two people: `../../etc` -> `etc_<hash>`,
    `Beyoncé` -> `beyonce_<hash>`; a name with nothing printable becomes `id_<hash>`.
    """
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").lower()
    slug = _UNSAFE.sub("_", folded).strip("_")[:64]
    if slug and _PLAIN.fullmatch(name):
        return slug
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"{slug}_{digest}" if slug else f"id_{digest}"
