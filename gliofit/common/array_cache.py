"""A folder of numpy arrays kept between runs (the user cache): written whole or not at all, read back
only when every array's CRC-32 matches and the folder was written for the same key.

    folder/arrays.json     {"key": ..., "crc32": {name: crc}, "meta": ...}, written last
    folder/<name>.npy      one array per name
    folder/verified.json   the files' (inode, size, mtime, ctime) when their CRC-32 last matched

A file whose inode, size and both timestamps are those recorded in ``verified.json`` is not read again to
check it: any write changes its ctime. So a memory-mapped load reads only the pages its caller touches
(a report reads three slices of the 1 mm template). Files changed in the last two seconds are never
recorded (:func:`gliofit.common.io.settled`): a write within the same timestamp tick would not show.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from gliofit.common.io import file_state, settled

__all__ = ["save_arrays", "load_arrays", "prune"]

_INDEX = "arrays.json"
_VERIFIED = "verified.json"


def save_arrays(folder: str | Path, arrays: dict[str, np.ndarray], key, meta=None) -> bool:
    """Store ``arrays`` under ``key`` (any JSON value) with ``meta``; best effort: False when it could not."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.part-{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        crc = {}
        for name, a in arrays.items():
            a = np.ascontiguousarray(a)
            np.save(tmp / f"{name}.npy", a, allow_pickle=False)
            crc[name] = zlib.crc32(a)
        (tmp / _INDEX).write_text(json.dumps({"key": key, "crc32": crc, "meta": meta}))
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        return True
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return False


def load_arrays(folder: str | Path, key, *, mmap: bool = False) -> tuple[dict[str, np.ndarray], Any] | None:
    """``(arrays, meta)`` stored under ``key``, or None when absent, written for another key, or damaged.

    ``mmap``: the arrays are read-only views of the files (pages are read when touched; the checksum
    touches every page once, unless ``verified.json`` vouches for the files).
    """
    folder = Path(folder)
    try:
        index = json.loads((folder / _INDEX).read_text())
        if index.get("key") != key:
            return None
        stamps = _stamps(folder, index["crc32"])
        checked = _read_verified(folder) == stamps
        arrays = {}
        for name, crc in index["crc32"].items():
            a = np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
            if mmap:
                a = a.view(np.ndarray)
            if not checked and zlib.crc32(a) != crc:
                return None
            arrays[name] = a
        if not checked:
            _record_verified(folder, stamps)
        return arrays, index.get("meta")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _stamps(folder: Path, names) -> dict[str, list[int]]:
    return {name: file_state(folder / f"{name}.npy") for name in names}


def _read_verified(folder: Path) -> dict | None:
    try:
        return json.loads((folder / _VERIFIED).read_text())
    except (OSError, ValueError):
        return None


def _record_verified(folder: Path, stamps: dict[str, list[int]]) -> None:
    """Write ``verified.json`` (atomically; best effort: a read-only cache is simply checked every time)."""
    if not all(settled(state) for state in stamps.values()):
        return
    tmp = folder / f".{_VERIFIED}.{os.getpid()}"
    try:
        tmp.write_text(json.dumps(stamps))
        os.replace(tmp, folder / _VERIFIED)
    except OSError:
        tmp.unlink(missing_ok=True)


def prune(parent: str | Path, keep: int) -> None:
    """Remove all but the ``keep`` most recently written folders of ``parent``; best effort."""
    try:
        folders = [p for p in Path(parent).iterdir() if p.is_dir() and not p.name.startswith(".")]
        folders.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
    except OSError:
        return
    for p in folders[keep:]:
        shutil.rmtree(p, ignore_errors=True)
