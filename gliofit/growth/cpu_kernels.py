"""Fused CPU kernels of the RKL2 integrator (numba), one loop per stage over each simulation's own box.

Arrays are C-contiguous float32: states ``(B, X, Y, Z)``, face coefficients
``kx (X-1, Y, Z)``, ``ky (X, Y-1, Z)``, ``kz (X, Y, Z-1)`` in 1/mm² (see
:class:`~gliofit.growth.stencil.DiffusionField`), boxes ``lo, hi (B, 3)``
int64 (half-open voxel ranges). ``sims`` lists the simulations a call works
on. Each simulation is computed on its own box only, with zero flux across
its faces, in float32 and in a fixed order of operations, so its result never
depends on which other simulations share the batch (bit for bit).

Every function is compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["logistic", "first_stage", "stage", "finish"]


@njit(cache=True)
def _rows(s, i, j, kx, ky, kz, l0, l1, l2, h0, h1, h2):
    """Row views (i, j, l2:h2) of s, its four neighbours and their face coefficients.

    At a box face the neighbour row is the row itself, so that face's flux is exactly 0.
    """
    c = s[i, j, l2:h2]
    xp = s[i + 1, j, l2:h2] if i + 1 < h0 else c
    xm = s[i - 1, j, l2:h2] if i > l0 else c
    yp = s[i, j + 1, l2:h2] if j + 1 < h1 else c
    ym = s[i, j - 1, l2:h2] if j > l1 else c
    kxp = kx[min(i, kx.shape[0] - 1), j, l2:h2]
    kxm = kx[max(i - 1, 0), j, l2:h2]
    kyp = ky[i, min(j, ky.shape[1] - 1), l2:h2]
    kym = ky[i, max(j - 1, 0), l2:h2]
    return c, xp, xm, yp, ym, kxp, kxm, kyp, kym, kz[i, j, l2:h2]


@njit(cache=True)
def _laplacian_row(s, i, j, kx, ky, kz, l0, l1, l2, h0, h1, h2, acc):
    """acc[:n] = div(k grad s) along the row (i, j, l2:h2), n = h2 - l2, no flux across the box faces.

    Terms are added in one fixed order (x+, x-, y+, y-, z+, z-) in float32, in
    one loop over 1-D row views from 0 so that it vectorises.
    """
    n = h2 - l2
    c, xp, xm, yp, ym, kxp, kxm, kyp, kym, kr = _rows(s, i, j, kx, ky, kz, l0, l1, l2, h0, h1, h2)
    for k in range(n):
        acc[k] = ((xp[k] - c[k]) * kxp[k] - (c[k] - xm[k]) * kxm[k]
                  + (yp[k] - c[k]) * kyp[k] - (c[k] - ym[k]) * kym[k])
    for k in range(n - 1):
        acc[k] += (c[k + 1] - c[k]) * kr[k]
    for k in range(n - 1):
        acc[k + 1] -= (c[k + 1] - c[k]) * kr[k]


@njit(cache=True)
def logistic(u, sims, lo, hi, g, gp1):
    """Exact logistic step in place: u <- u (1 + g) / (1 + u g), g = exp(rho dt) - 1 per simulation."""
    one = np.float32(1.0)
    for b in sims:
        s = u[b]
        gb, qb = g[b], gp1[b]
        l2, h2 = lo[b, 2], hi[b, 2]
        for i in range(lo[b, 0], hi[b, 0]):
            for j in range(lo[b, 1], hi[b, 1]):
                r = s[i, j, l2:h2]
                for k in range(h2 - l2):
                    x = r[k]
                    r[k] = x / (one + x * gb) * qb


@njit(cache=True)
def first_stage(u, ly0, d1, sims, lo, hi, kx, ky, kz, scale, c1):
    """ly0 = scale L u and d1 = c1 ly0 on each box (scale = D dt per simulation)."""
    acc = np.empty(u.shape[3], dtype=np.float32)
    for b in sims:
        s, out0, out1 = u[b], ly0[b], d1[b]
        l0, l1, l2, h0, h1, h2 = lo[b, 0], lo[b, 1], lo[b, 2], hi[b, 0], hi[b, 1], hi[b, 2]
        sc, cb = scale[b], c1[b]
        for i in range(l0, h0):
            for j in range(l1, h1):
                _laplacian_row(s, i, j, kx, ky, kz, l0, l1, l2, h0, h1, h2, acc)
                r0, r1 = out0[i, j, l2:h2], out1[i, j, l2:h2]
                for k in range(h2 - l2):
                    v = acc[k] * sc
                    r0[k] = v
                    r1[k] = v * cb


@njit(cache=True)
def stage(dp, dp2, ly0, out, sims, lo, hi, kx, ky, kz, a, mu, nu, c, with_dp2):
    """One RKL2 stage in increment form: out = a L dp + mu dp + nu dp2 + c ly0 (per-simulation a, mu, nu, c).

    ``with_dp2`` False drops the ``nu dp2`` term (the second stage, where d_0 = 0).
    """
    acc = np.empty(dp.shape[3], dtype=np.float32)
    for b in sims:
        p, p2, y0, o = dp[b], dp2[b], ly0[b], out[b]
        l0, l1, l2, h0, h1, h2 = lo[b, 0], lo[b, 1], lo[b, 2], hi[b, 0], hi[b, 1], hi[b, 2]
        ab, mb, nb, cb = a[b], mu[b], nu[b], c[b]
        for i in range(l0, h0):
            for j in range(l1, h1):
                _laplacian_row(p, i, j, kx, ky, kz, l0, l1, l2, h0, h1, h2, acc)
                rp, rp2, ry, ro = p[i, j, l2:h2], p2[i, j, l2:h2], y0[i, j, l2:h2], o[i, j, l2:h2]
                if with_dp2:
                    for k in range(h2 - l2):
                        ro[k] = acc[k] * ab + rp[k] * mb + rp2[k] * nb + ry[k] * cb
                else:
                    for k in range(h2 - l2):
                        ro[k] = acc[k] * ab + rp[k] * mb + ry[k] * cb


@njit(cache=True)
def finish(u, ring, last, sims, lo, hi, g, gp1, eps, sup_lo, sup_hi):
    """u <- logistic(u + ring[last[b], b]); sup_lo/sup_hi <- the box of u > eps (sup_lo[b, 0] = -1 if none)."""
    one = np.float32(1.0)
    for b in sims:
        s, d = u[b], ring[last[b], b]
        gb, qb = g[b], gp1[b]
        l2, h2 = lo[b, 2], hi[b, 2]
        mn0, mn1, mn2 = hi[b, 0], hi[b, 1], h2
        mx0, mx1, mx2 = -1, -1, -1
        for i in range(lo[b, 0], hi[b, 0]):
            for j in range(lo[b, 1], hi[b, 1]):
                r, rd = s[i, j, l2:h2], d[i, j, l2:h2]
                n = h2 - l2
                for k in range(n):
                    x = r[k] + rd[k]
                    r[k] = x / (one + x * gb) * qb
                first = -1
                for k in range(n):
                    if r[k] > eps:
                        first = k
                        break
                if first < 0:
                    continue
                final = first
                for k in range(n - 1, first, -1):
                    if r[k] > eps:
                        final = k
                        break
                first, final = first + l2, final + l2
                mn0, mx0 = min(mn0, i), max(mx0, i)
                mn1, mx1 = min(mn1, j), max(mx1, j)
                mn2, mx2 = min(mn2, first), max(mx2, final)
        if mx0 < 0:
            sup_lo[b, 0] = -1
        else:
            sup_lo[b, 0], sup_lo[b, 1], sup_lo[b, 2] = mn0, mn1, mn2
            sup_hi[b, 0], sup_hi[b, 1], sup_hi[b, 2] = mx0 + 1, mx1 + 1, mx2 + 1
