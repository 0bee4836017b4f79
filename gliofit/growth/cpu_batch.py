"""The RKL2 integrator on the CPU with fused kernels: every simulation of a batch keeps its own steps and box.

Each simulation ``b`` takes the steps its own rule gives (``dt_b = min(to its
next snapshot, max_dt_days, rho_dt_max / rho_b)``, ``s_b`` RKL2 stages from
``D_b dt_b``) on its own active box, exactly what it takes when simulated
alone; the batch advances together, one kernel call per stage for all
simulations that still need that stage. Between snapshots the last
logistic half of a step and the first half of the next are applied as one
(the logistic flow composes exactly), which saves a pass over the box. A
simulation's snapshots are
therefore identical bit for bit whatever else shares its batch, so a build
gives the same database however its work was split.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from gliofit.growth import cpu_kernels as ck
from gliofit.growth.fields import FaceArrays, rkl2_coefficients

__all__ = ["run_independent"]


def _stages(dt_days: float, dt_explicit_days: float, cfl_safety: float) -> int:
    ratio = dt_days / (cfl_safety * dt_explicit_days)
    return 1 if ratio <= 1.0 else max(2, math.ceil((-1 + math.sqrt(9 + 16 * ratio)) / 2))


class _Boxes:
    """Per-simulation active boxes, grown as :class:`~gliofit.growth.stencil.ActiveBox` grows one."""

    def __init__(self, batch: int, shape: tuple[int, int, int], enabled: bool) -> None:
        self.shape = np.asarray(shape, dtype=np.int64)
        self.enabled = enabled
        self.lo = np.zeros((batch, 3), dtype=np.int64)
        self.hi = np.tile(self.shape, (batch, 1))
        self.started = np.zeros(batch, dtype=bool)

    def start(self, b: int, u_b: np.ndarray, eps: float, reach: int) -> None:
        """First box of simulation b around its seed; the seed outside it is set to 0."""
        self.started[b] = True
        if not self.enabled:
            return
        occupied = u_b > eps
        if not occupied.any():
            return
        idx = [np.flatnonzero(occupied.any(axis=tuple(d for d in range(3) if d != a))) for a in range(3)]
        lo = np.array([i[0] for i in idx], dtype=np.int64)
        hi = np.array([i[-1] + 1 for i in idx], dtype=np.int64)
        self.lo[b], self.hi[b] = self._grown(lo, hi, reach + 2, None)
        keep = np.zeros(u_b.shape, dtype=bool)
        keep[tuple(slice(int(a), int(c)) for a, c in zip(self.lo[b], self.hi[b]))] = True
        u_b[~keep] = 0.0

    def update(self, b: int, sup_lo: np.ndarray, sup_hi: np.ndarray, reach: int) -> None:
        """Grow box b when the support (u > eps) came within ``reach + 2`` voxels of a face that can move."""
        if not self.enabled or sup_lo[0] < 0:
            return
        margin = reach + 2
        lo, hi = self.lo[b], self.hi[b]
        near = ((sup_lo - lo < margin) & (lo > 0)) | ((hi - sup_hi < margin) & (hi < self.shape))
        if near.any():
            self.lo[b], self.hi[b] = self._grown(sup_lo, sup_hi, margin, (lo, hi))

    def _grown(self, lo, hi, margin: int, old):
        pad = 2 * margin + 2
        new_lo, new_hi = np.maximum(lo - pad, 0), np.minimum(hi + pad, self.shape)
        if old is not None:
            new_lo, new_hi = np.minimum(new_lo, old[0]), np.maximum(new_hi, old[1])
        return new_lo, new_hi


def run_independent(
    field: FaceArrays,
    u: np.ndarray,
    D: np.ndarray,
    rho: np.ndarray,
    times: np.ndarray,
    config,
    out: np.ndarray,
    on_step: Callable[[float, float], None] | None = None,
) -> None:
    """Advance the seeded states ``u`` (B, X, Y, Z) float32 in place, writing snapshots into ``out`` (B, K, X, Y, Z).

    Parameters
    ----------
    field : face coefficients for D_w = 1 (:func:`~gliofit.growth.fields.face_arrays`).
    u : seeded densities, zero outside the domain.
    D, rho : (B,) mm²/day and 1/day.
    times : (B, K) snapshot times, days.
    config : a :class:`~gliofit.growth.solver.SolverConfig` (method ``"rkl2"``).
    """
    batch = u.shape[0]
    kx, ky, kz = (np.ascontiguousarray(f) for f in field.faces)
    u = np.ascontiguousarray(u)
    stops = [np.unique(times[b]) for b in range(batch)]
    next_stop = np.zeros(batch, dtype=np.int64)
    t = np.zeros(batch)
    t_end = float(times.max())
    dt_explicit = 1.0 / (D * field.max_diagonal)
    boxes = _Boxes(batch, field.shape, config.active_box)
    eps = np.float32(config.box_eps)
    ring = np.zeros((3,) + u.shape, dtype=np.float32)
    ly0 = np.zeros_like(u)
    sup_lo, sup_hi = np.zeros((batch, 3), dtype=np.int64), np.zeros((batch, 3), dtype=np.int64)
    f32 = np.float32
    active = np.arange(batch)
    folded = np.zeros(batch, dtype=bool)  # the first logistic half of b's next step is already applied

    def step_days(b: int, t_b: float) -> float:
        return min(stops[b][next_stop[b]] - t_b, config.max_dt_days, config.rho_dt_max / max(float(rho[b]), 1e-12))

    def logistic_g(b: int, days: float) -> np.float32:
        return f32(math.expm1(float(rho[b]) * days))  # per simulation: no vector-width dependence

    while active.size:
        dt = np.array([step_days(b, t[b]) for b in active])
        s = np.array([_stages(dt[n], dt_explicit[b], config.cfl_safety) for n, b in enumerate(active)])
        for n, b in enumerate(active):
            if not boxes.started[b]:
                boxes.start(b, u[b], float(eps), int(s[n]) + 1)
            else:
                boxes.update(b, sup_lo[b], sup_hi[b], int(s[n]) + 1)
        g = np.zeros(batch, dtype=f32)
        for n, b in enumerate(active):
            g[b] = logistic_g(b, dt[n] / 2.0)
        gp1 = (f32(1.0) + g).astype(f32)
        scale = np.zeros(batch, dtype=f32)
        scale[active] = (D[active] * dt).astype(f32)
        coefficients = {int(b): rkl2_coefficients(int(sb)) if sb > 1 else None for b, sb in zip(active, s)}
        c1 = np.ones(batch, dtype=f32)
        for b, co in coefficients.items():
            if co is not None:
                c1[b] = f32(co[2][1])
        fresh = active[~folded[active]]
        if fresh.size:
            ck.logistic(u, fresh, boxes.lo, boxes.hi, g, gp1)
        ck.first_stage(u, ly0, ring[1], active, boxes.lo, boxes.hi, kx, ky, kz, scale, c1)
        for j in range(2, int(s.max()) + 1):
            sims = active[s >= j]
            a, mu, nu, c = (np.zeros(batch, dtype=f32) for _ in range(4))
            for b in sims:
                m, n_, mt, gt = coefficients[int(b)]
                a[b], mu[b], nu[b], c[b] = f32(mt[j] * float(scale[b])), f32(m[j]), f32(n_[j]), f32(mt[j] + gt[j])
            ck.stage(
                ring[(j - 1) % 3],
                ring[(j - 2) % 3],
                ly0,
                ring[j % 3],
                sims,
                boxes.lo,
                boxes.hi,
                kx,
                ky,
                kz,
                a,
                mu,
                nu,
                c,
                j > 2,
            )
        last = np.zeros(batch, dtype=np.int64)
        last[active] = s % 3
        last[active[s == 1]] = 1
        # the step's last logistic half, merged with the next step's first half where no snapshot lies
        # between them (exact: logistic flows compose, L_a L_b = L_(a+b))
        g_end = g.copy()
        t_new = t[active] + dt
        for n, b in enumerate(active):
            folded[b] = t_new[n] < stops[b][next_stop[b]] - 1e-9
            if folded[b]:
                g_end[b] = logistic_g(b, dt[n] / 2.0 + step_days(b, t_new[n]) / 2.0)
        ck.finish(u, ring, last, active, boxes.lo, boxes.hi, g_end, (f32(1.0) + g_end).astype(f32), eps, sup_lo, sup_hi)
        t[active] = t_new
        still = []
        for b in active:
            stop = stops[b][next_stop[b]]
            if t[b] >= stop - 1e-9:
                t[b] = stop
                box = tuple(slice(int(a), int(c)) for a, c in zip(boxes.lo[b], boxes.hi[b]))
                snap = np.clip(u[b][box], 0.0, 1.0)  # outside its box the state is exactly 0
                for k in np.flatnonzero(np.isclose(times[b], stop, rtol=0, atol=1e-9)):
                    out[b, k][box] = snap
                next_stop[b] += 1
            if next_stop[b] < len(stops[b]):
                still.append(b)
        active = np.asarray(still, dtype=np.int64)
        if on_step is not None:
            on_step(float(t.min()) if active.size == 0 else float(t[active].min()), t_end)
