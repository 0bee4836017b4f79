"""Fused CPU kernels of the RKL2 integrator (numba), one loop per stage over each simulation's own box.

Arrays are C-contiguous float32: states ``(B, X, Y, Z)``, face coefficients
``kx (X-1, Y, Z)``, ``ky (X, Y-1, Z)``, ``kz (X, Y, Z-1)`` in 1/mm² (see
:class:`~gliofit.growth.stencil.DiffusionField`), boxes ``lo, hi (B, 3)``
int64 (half-open voxel ranges). ``sims`` lists the simulations a call works
on. Each simulation is computed on its own box only, with zero flux across
its faces, in float32 and in a fixed order of operations, so its result never
depends on which other simulations share the batch (bit for bit).

Every function is compiled on first use and cached on disk (``cache=True``) and releases the GIL
(``nogil=True``: :func:`~gliofit.growth.solver.simulate` runs groups of a batch on threads). Grids need at least
two voxels along every axis (:func:`~gliofit.growth.solver.uses_cpu_kernels` checks).
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

__all__ = ["logistic", "first_stage", "stage", "finish"]


@njit(cache=True, nogil=True)
def _row_offsets(i, j, shape, l0, l1, l2, h0, h1):
    """Flat offsets (uint64) for the row (i, j, l2:...) of a C-ordered (X, Y, Z) state and its faces.

    Returns the row start, the steps to the x+/x-/y+/y- neighbour rows (0 at a box face: that face's
    flux is then exactly 0), and the starts of the face rows kx+, kx-, ky+, ky-, kz. Unsigned indices
    skip numba's negative-index check, so the row loops vectorise.
    """
    X, Y, Z = shape
    base = uint64((i * Y + j) * Z + l2)
    xp = uint64(Z * Y) if i + 1 < h0 else uint64(0)
    xm = uint64(Z * Y) if i > l0 else uint64(0)
    yp = uint64(Z) if j + 1 < h1 else uint64(0)
    ym = uint64(Z) if j > l1 else uint64(0)
    kxp = uint64((min(i, X - 2) * Y + j) * Z + l2)
    kxm = uint64((max(i - 1, 0) * Y + j) * Z + l2)
    kyp = uint64((i * (Y - 1) + min(j, Y - 2)) * Z + l2)
    kym = uint64((i * (Y - 1) + max(j - 1, 0)) * Z + l2)
    kzr = uint64((i * Y + j) * (Z - 1) + l2)
    return base, xp, xm, yp, ym, kxp, kxm, kyp, kym, kzr


@njit(cache=True, nogil=True)
def _laplacian_row(p, o, n, base, xp, xm, yp, ym, kxp, kxm, kyp, kym, kzr, fx, fy, fz):
    """o[base:base+n] = div(k grad p) along one row of flat arrays, no flux across the box faces.

    Terms are added in one fixed order (x+, x-, y+, y-, then z+, then z-) in float32.
    """
    one = uint64(1)
    for k in range(n):
        q = base + k
        c = p[q]
        o[q] = (
            (p[q + xp] - c) * fx[kxp + k]
            - (c - p[q - xm]) * fx[kxm + k]
            + (p[q + yp] - c) * fy[kyp + k]
            - (c - p[q - ym]) * fy[kym + k]
        )
    for k in range(n - one):
        q = base + k
        o[q] += (p[q + one] - p[q]) * fz[kzr + k]
    for k in range(n - one):
        q = base + k
        o[q + one] -= (p[q + one] - p[q]) * fz[kzr + k]


@njit(cache=True, nogil=True)
def logistic(u, sims, lo, hi, g, gp1):
    """Exact logistic step in place: u <- u (1 + g) / (1 + u g), g = exp(rho dt) - 1 per simulation."""
    one = np.float32(1.0)
    Y, Z = u.shape[2], u.shape[3]
    for b in sims:
        s = u[b].ravel()
        gb, qb = g[b], gp1[b]
        n = uint64(hi[b, 2] - lo[b, 2])
        for i in range(lo[b, 0], hi[b, 0]):
            for j in range(lo[b, 1], hi[b, 1]):
                base = uint64((i * Y + j) * Z + lo[b, 2])
                for k in range(n):
                    x = s[base + k]
                    s[base + k] = x / (one + x * gb) * qb


@njit(cache=True, nogil=True)
def first_stage(u, ly0, d1, sims, lo, hi, kx, ky, kz, scale, c1):
    """ly0 = scale L u and d1 = c1 ly0 on each box (scale = D dt per simulation)."""
    shape = (u.shape[1], u.shape[2], u.shape[3])
    fx, fy, fz = kx.ravel(), ky.ravel(), kz.ravel()
    for b in sims:
        s, o0, o1 = u[b].ravel(), ly0[b].ravel(), d1[b].ravel()
        l0, l1, l2, h0, h1, h2 = lo[b, 0], lo[b, 1], lo[b, 2], hi[b, 0], hi[b, 1], hi[b, 2]
        sc, cb = scale[b], c1[b]
        n = uint64(h2 - l2)
        for i in range(l0, h0):
            for j in range(l1, h1):
                base, xp, xm, yp, ym, kxp, kxm, kyp, kym, kzr = _row_offsets(i, j, shape, l0, l1, l2, h0, h1)
                _laplacian_row(s, o0, n, base, xp, xm, yp, ym, kxp, kxm, kyp, kym, kzr, fx, fy, fz)
                for k in range(n):
                    v = o0[base + k] * sc
                    o0[base + k] = v
                    o1[base + k] = v * cb


@njit(cache=True, nogil=True)
def stage(dp, dp2, ly0, out, sims, lo, hi, kx, ky, kz, a, mu, nu, c, with_dp2):
    """One RKL2 stage in increment form: out = a L dp + mu dp + nu dp2 + c ly0 (per-simulation a, mu, nu, c).

    ``with_dp2`` False drops the ``nu dp2`` term (the second stage, where d_0 = 0).
    """
    shape = (dp.shape[1], dp.shape[2], dp.shape[3])
    fx, fy, fz = kx.ravel(), ky.ravel(), kz.ravel()
    for b in sims:
        p, p2, y0, o = dp[b].ravel(), dp2[b].ravel(), ly0[b].ravel(), out[b].ravel()
        l0, l1, l2, h0, h1, h2 = lo[b, 0], lo[b, 1], lo[b, 2], hi[b, 0], hi[b, 1], hi[b, 2]
        ab, mb, nb, cb = a[b], mu[b], nu[b], c[b]
        n = uint64(h2 - l2)
        for i in range(l0, h0):
            for j in range(l1, h1):
                base, xp, xm, yp, ym, kxp, kxm, kyp, kym, kzr = _row_offsets(i, j, shape, l0, l1, l2, h0, h1)
                _laplacian_row(p, o, n, base, xp, xm, yp, ym, kxp, kxm, kyp, kym, kzr, fx, fy, fz)
                if with_dp2:
                    for k in range(n):
                        q = base + k
                        o[q] = o[q] * ab + p[q] * mb + p2[q] * nb + y0[q] * cb
                else:
                    for k in range(n):
                        q = base + k
                        o[q] = o[q] * ab + p[q] * mb + y0[q] * cb


@njit(cache=True, nogil=True)
def finish(u, ring, last, sims, lo, hi, g, gp1, eps, sup_lo, sup_hi):
    """u <- logistic(u + ring[last[b], b]); sup_lo/sup_hi <- the box of u > eps (sup_lo[b, 0] = -1 if none)."""
    one = np.float32(1.0)
    Y, Z = u.shape[2], u.shape[3]
    for b in sims:
        s, d = u[b].ravel(), ring[last[b], b].ravel()
        gb, qb = g[b], gp1[b]
        l2, h2 = lo[b, 2], hi[b, 2]
        n = uint64(h2 - l2)
        mn0, mn1, mn2 = hi[b, 0], hi[b, 1], h2
        mx0, mx1, mx2 = -1, -1, -1
        for i in range(lo[b, 0], hi[b, 0]):
            for j in range(lo[b, 1], hi[b, 1]):
                base = uint64((i * Y + j) * Z + l2)
                for k in range(n):
                    q = base + k
                    x = s[q] + d[q]
                    s[q] = x / (one + x * gb) * qb
                first = -1
                for k in range(h2 - l2):
                    if s[base + uint64(k)] > eps:
                        first = k
                        break
                if first < 0:
                    continue
                final = first
                for k in range(h2 - l2 - 1, first, -1):
                    if s[base + uint64(k)] > eps:
                        final = k
                        break
                mn0, mx0 = min(mn0, i), max(mx0, i)
                mn1, mx1 = min(mn1, j), max(mx1, j)
                mn2, mx2 = min(mn2, first + l2), max(mx2, final + l2)
        if mx0 < 0:
            sup_lo[b, 0] = -1
        else:
            sup_lo[b, 0], sup_lo[b, 1], sup_lo[b, 2] = mn0, mn1, mn2
            sup_hi[b, 0], sup_hi[b, 1], sup_hi[b, 2] = mx0 + 1, mx1 + 1, mx2 + 1
