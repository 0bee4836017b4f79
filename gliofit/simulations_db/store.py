"""The array store: each entry's density, quantised, cropped, compressed, in append-only shards.

Encoding of one entry (a density ``u`` in [0, 1] on the database grid):

* quantised to **uint8**, ``q = round(255 u)`` (decoded ``u = q / 255``). The
  resolution 1/255 ~ 0.004 is far below the uncertainty of the imaging
  thresholds (edema 0.05–0.5, core 0.5–0.85) and half the bytes of uint16,
  which matters most for the re-ranking reads. Every mask in the database is
  ``q >= ceil(255 threshold)`` (:func:`threshold_level`), so volumes in SQL
  and masks read back agree exactly.
* cropped to the bounding box of ``q > 0`` (``u >= 0.5/255``), C order;
* stored as TWO parts in one record: first the box where ``u >= 0.05``
  (:data:`VISIBLE_LEVEL`, the lowest imaging threshold in use: the visible
  tumour) as RAW uint8, then the rest of the crop with that box zeroed (the
  low-density tail), compressed with stdlib ``zlib`` (level 1; inflate speed
  barely depends on the level). A 16-byte header holds the visible box
  (relative to the crop) and the first part's length. Masks at any threshold
  >= 0.05 -- what re-ranking reads -- are zero-copy views of the memory-mapped
  shard: no decompression at all (the raw visible part costs more disk than
  compressing it would, and saves its inflation on every query).
* checked by the CRC-32 of the whole record (stored in SQL).

A shard is one file of concatenated records written by one task: it is
written under ``<token>.bin.tmp``, fsync'd, renamed to ``<token>.bin`` and
the directory fsync'd; only then are its SQL rows committed. Readers
memory-map shards and decompress the ``(offset, length)`` slices.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gliofit.common.io import fsync_directory

__all__ = [
    "QUANT_SCALE",
    "VISIBLE_LEVEL",
    "EncodedEntry",
    "encode_density",
    "decode",
    "decode_visible",
    "threshold_level",
    "ShardWriter",
    "ShardReader",
    "SHARD_SUFFIX",
    "TMP_SUFFIX",
]

QUANT_SCALE = 255
SHARD_SUFFIX = ".bin"
TMP_SUFFIX = ".bin.tmp"
ZLIB_LEVEL = 1
_HEADER = struct.Struct("<4s6HI")
_MAGIC = b"GFE2"


def threshold_level(threshold: float) -> int:
    """The smallest uint8 level whose decoded density is >= ``threshold`` (a mask is ``q >= level``)."""
    return int(math.ceil(QUANT_SCALE * float(threshold) - 1e-9))


@dataclass(frozen=True)
class EncodedEntry:
    """One entry ready to append: bbox (x0, y0, z0, x1, y1, z1) (end exclusive), payload bytes, crop."""

    bbox: tuple[int, int, int, int, int, int]
    payload: bytes
    crc32: int
    crop: np.ndarray


VISIBLE_LEVEL = 13
"""uint8 level of the visible box: ceil(255 x 0.05), the lowest imaging threshold (FACTS.md)."""


def _box(mask: np.ndarray) -> tuple[list[int], list[int]] | None:
    nz = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(len(n) == 0 for n in nz):
        return None
    return [int(n[0]) for n in nz], [int(n[-1]) + 1 for n in nz]


def encode_density(u: np.ndarray) -> EncodedEntry | None:
    """Quantise, crop and compress an (X, Y, Z) density in [0, 1]; None if nothing is above 0.5/255."""
    q = np.rint(np.clip(u, 0.0, 1.0) * QUANT_SCALE).astype(np.uint8)
    box = _box(q > 0)
    if box is None:
        return None
    lo, hi = box
    crop = np.ascontiguousarray(q[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
    inner = _box(crop >= VISIBLE_LEVEL) or ([0, 0, 0], [0, 0, 0])
    isl = tuple(slice(a, b) for a, b in zip(*inner))
    first = np.ascontiguousarray(crop[isl]).tobytes()
    rest = crop.copy()
    rest[isl] = 0
    payload = _HEADER.pack(_MAGIC, *inner[0], *inner[1], len(first)) + first + zlib.compress(rest.tobytes(), ZLIB_LEVEL)
    return EncodedEntry(tuple(lo + hi), payload, zlib.crc32(payload), crop)  # type: ignore[arg-type]


def _header(payload) -> tuple[tuple[int, ...], int]:
    if len(payload) < _HEADER.size:
        raise ValueError("record shorter than its header")
    magic, *rest = _HEADER.unpack_from(payload, 0)
    if magic != _MAGIC:
        raise ValueError(f"record has no {_MAGIC!r} header")
    return tuple(rest[:6]), int(rest[6])


def _inflate(data, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    raw = zlib.decompress(data, bufsize=max(1, n))  # one allocation
    if len(raw) != n:
        raise ValueError(f"stream holds {len(raw)} bytes, its box {shape} needs {n}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def decode(payload: bytes | memoryview, bbox) -> np.ndarray:
    """The full uint8 crop of shape (x1-x0, y1-y0, z1-z0) from its record (both streams)."""
    x0, y0, z0, x1, y1, z1 = (int(v) for v in bbox)
    inner, n1 = _header(payload)
    start = _HEADER.size
    crop = _inflate(payload[start + n1 :], (x1 - x0, y1 - y0, z1 - z0)).copy()
    lo, hi = inner[:3], inner[3:]
    crop[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = _raw(
        payload[start : start + n1], tuple(b - a for a, b in zip(lo, hi))
    )
    return crop


def _raw(data, shape: tuple[int, ...]) -> np.ndarray:
    n = shape[0] * shape[1] * shape[2]
    if len(data) != n:
        raise ValueError(f"visible part holds {len(data)} bytes, its box {shape} needs {n}")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def decode_visible(payload: bytes | memoryview, bbox) -> tuple[tuple[int, ...], np.ndarray]:
    """(absolute box, uint8 crop) of the visible part only (every voxel >= :data:`VISIBLE_LEVEL` lies in it).

    The crop is a read-only view of ``payload`` (zero copy).
    """
    inner, n1 = _header(payload)
    lo, hi = inner[:3], inner[3:]
    start = _HEADER.size
    crop = _raw(payload[start : start + n1], (hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]))
    o = [int(v) for v in bbox[:3]]
    return tuple(o[i] + lo[i] for i in range(3)) + tuple(o[i] + hi[i] for i in range(3)), crop


class ShardWriter:
    """Append records to ``<dir>/<token>.bin.tmp``; :meth:`commit` makes it ``<token>.bin`` durably.

    Parameters
    ----------
    arrays_dir : the database's ``arrays/`` directory.
    token : the claim token of the task (32 hex characters); names the shard.
    """

    def __init__(self, arrays_dir: str | Path, token: str) -> None:
        self.dir = Path(arrays_dir)
        self.name = token + SHARD_SUFFIX
        self.tmp = self.dir / (token + TMP_SUFFIX)
        self._f = open(self.tmp, "wb")
        self._offset = 0

    def append(self, payload: bytes) -> tuple[int, int]:
        """Write one record; returns its (offset, length) in bytes."""
        self._f.write(payload)
        loc = (self._offset, len(payload))
        self._offset += len(payload)
        return loc

    def commit(self) -> str:
        """fsync, rename to the final name, fsync the directory; returns the shard name."""
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self.tmp, self.dir / self.name)
        fsync_directory(self.dir)
        return self.name

    def abort(self) -> None:
        """Close and remove the temporary file (also when closing fails, as it does on a full disk)."""
        try:
            if not self._f.closed:
                self._f.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class ShardReader:
    """Memory-mapped read access to the shards of one ``arrays/`` directory (maps are cached)."""

    def __init__(self, arrays_dir: str | Path) -> None:
        self.dir = Path(arrays_dir)
        self._maps: dict[str, mmap.mmap | bytes] = {}

    def _map(self, shard: str) -> mmap.mmap | bytes:
        m = self._maps.get(shard)
        if m is None:
            with open(self.dir / shard, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            self._maps[shard] = m
        return m

    def payload(self, shard: str, offset: int, length: int) -> memoryview:
        """The raw compressed bytes of one record (a view into the map; IndexError if past the end)."""
        m = self._map(shard)
        if offset + length > len(m):
            raise IndexError(f"{shard}: record [{offset}, {offset + length}) past the end ({len(m)} bytes)")
        return memoryview(m)[offset : offset + length]

    def read(self, shard: str, offset: int, length: int, bbox) -> np.ndarray:
        """The uint8 crop of one record."""
        return decode(self.payload(shard, offset, length), bbox)

    def read_visible(self, shard: str, offset: int, length: int, bbox) -> tuple[tuple[int, ...], np.ndarray]:
        """(box, uint8 crop) of the visible part (u >= 0.05) of one record."""
        return decode_visible(self.payload(shard, offset, length), bbox)

    def close(self) -> None:
        for m in self._maps.values():
            if isinstance(m, mmap.mmap):
                try:
                    m.close()
                except BufferError:  # a caller still holds a view; the map closes with it
                    pass
        self._maps.clear()
