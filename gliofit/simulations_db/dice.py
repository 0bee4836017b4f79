"""Exact Dice of one query mask pair against many entries stored as bounding-box crops.

The FAISS index only proposes candidates; their order is decided here. An
entry is a pair of boolean crops (whole tumour, core) of its bounding box,
whose first voxel sits at ``offset`` on the database grid. The overlap with the
query is counted on that box only, by slicing the query (no full-grid array
per candidate), so the cost per candidate is proportional to its box.

Dice of two masks A, B is ``2|A∩B| / (|A| + |B|)``; two empty masks agree
perfectly (Dice 1), one empty and one not gives 0.

A volume pre-filter follows from ``|A∩B| <= min(|A|, |B|)``: Dice >= d is only
possible when ``|B|`` lies in ``[|A| d / (2 - d), |A| (2 - d) / d]``
(:func:`volume_window`).

>>> import numpy as np
>>> q = np.zeros((8, 8, 8), bool); q[2:6, 2:6, 2:6] = True
>>> crop = np.ones((4, 4, 2), bool)            # the half of the query's cube at z = 2..3
>>> dice_scores(q, q, [((2, 2, 2), crop, crop)]).tolist()
[[0.6666666865348816, 0.6666666865348816]]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gliofit.common.errors import InputError

__all__ = ["volume_window", "dice_scores", "dice"]

Candidate = tuple[Sequence[int], np.ndarray, np.ndarray]
"""(offset (3,) int, whole-tumour crop (x, y, z) bool, core crop (x, y, z) bool, same shape)."""


def volume_window(query_volume: float, min_dice: float) -> tuple[float, float]:
    """Volumes an entry may have if its Dice with the query can reach ``min_dice``.

    Parameters
    ----------
    query_volume : |A|, the query's volume (voxels or mm³; the window is in the same unit), >= 0.
    min_dice : d in (0, 1].

    Returns
    -------
    (lo, hi) with ``lo = |A| d / (2 - d)`` and ``hi = |A| (2 - d) / d``; any entry with
    Dice >= d has ``lo <= |B| <= hi`` (d = 1 gives ``lo = hi = |A|``).
    """
    a, d = float(query_volume), float(min_dice)
    if not (math.isfinite(a) and a >= 0):
        raise InputError(f"query_volume must be a finite number >= 0, got {query_volume!r}")
    if not (math.isfinite(d) and 0 < d <= 1):
        raise InputError(f"min_dice must lie in (0, 1], got {min_dice!r}")
    return a * d / (2 - d), a * (2 - d) / d


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks of one shape (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise InputError(f"masks differ in shape: {a.shape} and {b.shape}")
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def _check_query(query_wt: np.ndarray, query_core: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    wt, core = np.asarray(query_wt), np.asarray(query_core)
    for name, m in (("query_wt", wt), ("query_core", core)):
        if m.ndim != 3 or m.dtype != bool:
            raise InputError(f"{name} must be a 3-D boolean mask, got shape {m.shape} dtype {m.dtype}")
    if wt.shape != core.shape:
        raise InputError(f"query_wt {wt.shape} and query_core {core.shape} differ in shape")
    return wt, core


def _box(offset: Sequence[int], shape: tuple[int, ...], grid: tuple[int, ...], i: int) -> tuple[slice, ...]:
    if len(offset) != 3 or len(shape) != 3:
        raise InputError(
            f"candidate {i}: offset must have 3 entries and crops 3 axes, "
            f"got offset {tuple(offset)} and crop shape {shape}"
        )
    box = []
    for o, s, g in zip(offset, shape, grid):
        o = int(o)
        if o < 0 or o + s > g:
            raise InputError(
                f"candidate {i}: crop of shape {shape} at offset {tuple(offset)} does not fit the query grid {grid}"
            )
        box.append(slice(o, o + s))
    return tuple(box)


def dice_scores(query_wt: np.ndarray, query_core: np.ndarray, candidates: Sequence[Candidate]) -> np.ndarray:
    """Exact Dice of a query against entries given as bounding-box crops.

    Parameters
    ----------
    query_wt, query_core : (X, Y, Z) bool masks of the query on the database grid.
    candidates : sequence of ``(offset, wt_crop, core_crop)``: offset (3,) int of the crop's
        first voxel on the grid; wt_crop, core_crop (x, y, z) bool of one shape, inside the grid.

    Returns
    -------
    (n, 2) float32: column 0 whole-tumour Dice, column 1 core Dice, in candidate order.
    """
    wt, core = _check_query(query_wt, query_core)
    a_wt, a_core = int(np.count_nonzero(wt)), int(np.count_nonzero(core))
    out = np.empty((len(candidates), 2), dtype=np.float32)
    for i, (offset, wt_crop, core_crop) in enumerate(candidates):
        if wt_crop.dtype != bool or core_crop.dtype != bool or wt_crop.shape != core_crop.shape:
            raise InputError(
                f"candidate {i}: crops must be boolean and of one shape, got "
                f"{wt_crop.shape} {wt_crop.dtype} and {core_crop.shape} {core_crop.dtype}"
            )
        box = _box(offset, wt_crop.shape, wt.shape, i)
        for col, q, crop, a in ((0, wt, wt_crop, a_wt), (1, core, core_crop, a_core)):
            b = int(np.count_nonzero(crop))
            if a + b == 0:
                out[i, col] = 1.0
            elif b == 0:
                out[i, col] = 0.0
            else:
                out[i, col] = 2.0 * int(np.count_nonzero(q[box] & crop)) / (a + b)
    return out
