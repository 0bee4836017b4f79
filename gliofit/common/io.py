"""Crash-safe file output: every file gliofit writes appears complete or not at all.

:func:`atomic_write` is the one write protocol: the content goes to a temporary
sibling of the destination (same folder, so the rename stays on one file
system), is flushed to disk, and is renamed over the destination; on any error
the temporary file is removed and the destination is left as it was. The
final file has the permissions of an ordinary new file (``0o666 & ~umask``).
:func:`atomic_directory` does the same for a whole output folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gliofit.common.errors import InputError

__all__ = [
    "atomic_write",
    "atomic_directory",
    "write_text",
    "write_json",
    "fsync_directory",
    "default_file_mode",
    "file_sha256",
    "file_state",
    "remembered_sha256",
    "settled",
]


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def default_file_mode() -> int:
    """Permissions of an ordinary new file under the current umask (``0o666 & ~umask``)."""
    return 0o666 & ~_umask()


def fsync_directory(path: str | Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary_sibling(p: Path) -> Path:
    """An empty temporary file next to ``p`` that keeps its suffixes (writers choose formats by them)."""
    suffix = "".join(p.suffixes[-2:]) if p.name.endswith(".nii.gz") else p.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=f".part{suffix}", dir=p.parent)
    os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_write(path: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    Parent folders are created. The caller writes the whole content to the
    yielded path (``open``, ``nib.save``, ``torch.save``, ...); when the block
    ends without an exception the file is fsync'd (with ``durable``), given
    the ordinary permissions (``0o666 & ~umask``) and renamed to ``path``.
    On an exception the temporary file is removed and ``path`` is unchanged.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_write(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (d / "a.txt").read_text(), sorted(p.name for p in d.iterdir())
    ('hello', ['a.txt'])

    Raises:
        InputError: ``path`` is an existing folder.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: output path is a directory")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(p)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, default_file_mode())  # mkstemp creates 0600
        os.replace(tmp, p)
        if durable:
            fsync_directory(p.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder ``.<name>.part-<pid>``; on success it replaces the folder ``path``.

    An existing ``path`` is removed only once the new content is complete; on
    an exception the temporary folder is removed and ``path`` is unchanged.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{p}: output path is a file, not a folder")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.parent / f".{p.name}.part-{os.getpid()}"  # a leftover of a dead run is recognised by this name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if p.exists():
            shutil.rmtree(p)
        os.replace(tmp, p)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` atomically (parents created); returns the path."""
    p = Path(path)
    with atomic_write(p) as tmp:
        tmp.write_text(text)
    return p


def write_json(obj: object, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (parents created); returns the path."""
    return write_text(json.dumps(obj, indent=2) + "\n", path)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read 1 MiB at a time)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


SETTLED_S = 2.0
"""Seconds since a file's last change before its state may be trusted to show the next change (a write
within the same timestamp tick would not)."""


def file_state(path: str | Path) -> list[int]:
    """A file's device, inode, size, mtime and ctime (ns): any write to it, or another file put in its
    place, changes one of them."""
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def settled(state: list[int]) -> bool:
    """True when the file of ``state`` has not changed for :data:`SETTLED_S` seconds."""
    return time.time_ns() - max(state[3], state[4]) >= SETTLED_S * 1e9


def remembered_sha256(path: str | Path) -> str:
    """:func:`file_sha256`, remembered in the user cache against the file's device, inode, size, mtime and
    ctime: a file unchanged since it was last hashed is not read again. Any write to the file, or a new
    file put in its place, changes its ctime or inode. Best effort: without a writable cache, every call
    reads the file."""
    from gliofit.common.cache import cache_dir

    p = Path(path).resolve()
    stamp = file_state(p)
    record = cache_dir() / "sha256" / f"{hashlib.sha256(str(p).encode()).hexdigest()[:32]}.json"
    try:
        known = json.loads(record.read_text())
        if known.get("stamp") == stamp and isinstance(known.get("sha256"), str):
            return known["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    digest = file_sha256(p)
    if settled(stamp):
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            write_json({"path": str(p), "stamp": stamp, "sha256": digest}, record)
        except (OSError, InputError):
            pass
    return digest
