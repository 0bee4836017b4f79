"""The shift search's inner loop (numba): hits of a candidate's crop in the query at translations.

Kept apart from :mod:`gliofit.inverse.query` so that the query module imports without numba; compiled on
first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["hits_at"]


@njit(cache=True)
def hits_at(code, strides, crop, corner, shifts, lowest, passed_e, passed_c, n_e, n_c):
    """Histograms of the query's hits over a candidate's voxels at each translation.

    Parameters
    ----------
    code : (N,) uint8 flat padded query grid (whole tumour bit 1, core bit 2).
    strides : (3,) int64 flat strides of that grid.
    crop : (A, B, C) uint8 candidate density levels; corner : (3,) int64 its padded low corner.
    shifts : (S, 3) int64 translations, voxels.
    lowest : the smallest level searched (voxels below it never count).
    passed_e, passed_c : (256,) int64 edema / core levels passed by each uint8 value.
    n_e, n_c : number of edema / core levels.

    Returns
    -------
    (S, n_e + 1) whole-tumour hits and (S, n_c + 1) core hits, by the number of levels the voxel passes.
    """
    a, b, c = crop.shape
    s_count = shifts.shape[0]
    hit_e = np.zeros((s_count, n_e + 1), dtype=np.int64)
    hit_c = np.zeros((s_count, n_c + 1), dtype=np.int64)
    for s in range(s_count):
        off = (
            (corner[0] + shifts[s, 0]) * strides[0]
            + (corner[1] + shifts[s, 1]) * strides[1]
            + (corner[2] + shifts[s, 2]) * strides[2]
        )
        for i in range(a):
            for j in range(b):
                row = off + i * strides[0] + j * strides[1]
                for k in range(c):
                    v = crop[i, j, k]
                    if v < lowest:
                        continue
                    q = code[row + k]
                    if q != 0:
                        hit_e[s, passed_e[v]] += q & 1
                        hit_c[s, passed_c[v]] += q >> 1
    return hit_e, hit_c
