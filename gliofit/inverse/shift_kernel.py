"""The shift search's inner loops (numba): crop statistics and hits of crops in the query at translations.

Candidates come as one flat uint8 buffer of their crops (C order) with each crop's start and shape, so
that one call covers every candidate. Kept apart from :mod:`gliofit.inverse.query` so that the query
module imports without numba; compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["crop_stats", "hits_at"]


@njit(cache=True)
def crop_stats(buf, starts, shapes, visible_level, passed_e, passed_c, n_e, n_c):
    """Per candidate: voxels by the number of levels passed, and the centre of its visible voxels.

    Parameters
    ----------
    buf : (N,) uint8 crops, concatenated; starts : (n,) int64 offsets; shapes : (n, 3) int64.
    visible_level : uint8 level of the centre of mass (the database's edema threshold).
    passed_e, passed_c : (256,) int64 edema / core levels passed by each uint8 value; n_e, n_c : their counts.

    Returns
    -------
    (n, n_e + 1) and (n, n_c + 1) voxel counts; (n, 3) float64 centre of the visible voxels in crop
    voxels (NaN where none is visible).
    """
    n = starts.shape[0]
    vol_e = np.zeros((n, n_e + 1), dtype=np.int64)
    vol_c = np.zeros((n, n_c + 1), dtype=np.int64)
    com = np.full((n, 3), np.nan)
    for m in range(n):
        a, b, c = shapes[m, 0], shapes[m, 1], shapes[m, 2]
        q = starts[m]
        sx, sy, sz, cnt = 0.0, 0.0, 0.0, 0
        for i in range(a):
            for j in range(b):
                for k in range(c):
                    v = buf[q]
                    q += 1
                    vol_e[m, passed_e[v]] += 1
                    vol_c[m, passed_c[v]] += 1
                    if v >= visible_level:
                        sx += i
                        sy += j
                        sz += k
                        cnt += 1
        if cnt > 0:
            com[m, 0], com[m, 1], com[m, 2] = sx / cnt, sy / cnt, sz / cnt
    return vol_e, vol_c, com


@njit(cache=True)
def hits_at(code, strides, buf, starts, shapes, corners, shifts, lowest, passed_e, passed_c, n_e, n_c):
    """Hits of the query over each candidate's voxels at each of its translations.

    Parameters
    ----------
    code : (N,) uint8 flat padded query grid (whole tumour bit 1, core bit 2); strides : (3,) int64.
    buf, starts, shapes : the crops as in :func:`crop_stats`; corners : (n, 3) int64 padded low corners.
    shifts : (n, S, 3) int64 translations per candidate, voxels.
    lowest : the smallest level searched (voxels below it never count).
    passed_e, passed_c, n_e, n_c : as in :func:`crop_stats`.

    Returns
    -------
    (n, S, n_e + 1) whole-tumour hits and (n, S, n_c + 1) core hits, by the number of levels passed.
    """
    n, s_count = shifts.shape[0], shifts.shape[1]
    hit_e = np.zeros((n, s_count, n_e + 1), dtype=np.int64)
    hit_c = np.zeros((n, s_count, n_c + 1), dtype=np.int64)
    for m in range(n):
        a, b, c = shapes[m, 0], shapes[m, 1], shapes[m, 2]
        for s in range(s_count):
            off = (
                (corners[m, 0] + shifts[m, s, 0]) * strides[0]
                + (corners[m, 1] + shifts[m, s, 1]) * strides[1]
                + (corners[m, 2] + shifts[m, s, 2]) * strides[2]
            )
            q = starts[m]
            for i in range(a):
                for j in range(b):
                    row = off + i * strides[0] + j * strides[1]
                    for k in range(c):
                        v = buf[q]
                        q += 1
                        if v < lowest:
                            continue
                        x = code[row + k]
                        if x != 0:
                            hit_e[m, s, passed_e[v]] += x & 1
                            hit_c[m, s, passed_c[v]] += x >> 1
    return hit_e, hit_c
