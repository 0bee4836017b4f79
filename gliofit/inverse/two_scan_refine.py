"""The two-scan refinement: a CMA-ES over D, rho, T and the seed point against both scans at once.

Search coordinates (scaled, zero at the start):

``log(mu_D,early / mu_D0) / 0.15``, ``log(mu_rho,early / mu_rho0) / 0.15``, ``log(T / T0) / 0.3`` and
``(origin - origin0) / 3 mm``,

where ``mu_D,early = sqrt(D T)`` and ``mu_rho,early = sqrt(rho T)`` at the first scan, so
``D = mu_D² / T`` and ``rho = mu_rho² / T``. The pair (mu_D, mu_rho) fixes the first scan's picture and T
alone then sets how much the tumour grows in the ``days_between`` that follow: the coordinates separate
what one scan identifies from what the second adds. Each generation is one batched solver call with two
snapshots per simulation (T and T + days_between); the objective is the mean of the two scans' weighted
mean Dice (whole tumour, core). Every evaluated point is kept: they are the posterior samples of
:func:`posterior_summary`.
"""

from __future__ import annotations

import math
import time

import numpy as np

from gliofit.common.errors import InputError
from gliofit.common.units import derived_parameters
from gliofit.growth.atlas import TISSUE_THRESHOLD, Atlas
from gliofit.growth.solver import SolverConfig, simulate
from gliofit.inverse.estimate import match_weights
from gliofit.inverse.refine import CMAES, LOG_SCALE, ORIGIN_SCALE_MM
from gliofit.inverse.two_scan_calibration import SIGMA_FLOOR, Calibration
from gliofit.simulations_db.dice import dice

__all__ = ["LOG_T_SCALE", "REFINE_CONFIG", "Samples", "posterior_summary", "refine_two_scans", "scan_dice"]

LOG_T_SCALE = 0.3
"""One search unit of log T (a 35 % change)."""
_D_LIMITS = (1e-3, 5.0)  # mm²/day, a guard against runaway steps (solver cost grows with D)
_RHO_LIMITS = (1e-4, 1.0)  # 1/day
_T_LIMITS = (5.0, 5000.0)  # days
REFINE_CONFIG = SolverConfig(compile=False)
"""Solver settings of the refinement: a fused (compiled) stencil changes shape with every active box and
costs more in compilation than it saves on a batch of 8 at 2 mm."""


class Samples:
    """Evaluated parameter points with their joint score (grows as points are added)."""

    def __init__(self) -> None:
        self.D, self.rho, self.T, self.origin, self.score = [], [], [], [], []

    def add(self, D, rho, T, origin, score) -> None:
        for vals, dst in ((D, self.D), (rho, self.rho), (T, self.T), (score, self.score)):
            dst.extend(float(v) for v in np.atleast_1d(vals))
        self.origin.extend(np.asarray(origin, dtype=np.float64).reshape(-1, 3))

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "D_mm2_per_day": np.asarray(self.D),
            "rho_per_day": np.asarray(self.rho),
            "T_days": np.asarray(self.T),
            "origin_mm": np.asarray(self.origin).reshape(-1, 3),
            "score": np.asarray(self.score),
        }


def scan_dice(u: np.ndarray, wt: np.ndarray, core: np.ndarray, thresholds: tuple[float, float]) -> tuple[float, float]:
    """(whole-tumour, core) Dice of density ``u`` thresholded at ``thresholds`` against the masks."""
    return dice(u >= thresholds[0], wt), dice(u >= thresholds[1], core)


class _PairObjective:
    """Batched joint Dice of simulations at T and T + days_between against the two scans."""

    def __init__(self, grid: Atlas, scans, days_between: float, thresholds, weights, config, device) -> None:
        self.grid, self.scans, self.n = grid, scans, float(days_between)
        self.thresholds, self.config, self.device = thresholds, config, device
        w = np.asarray(weights, dtype=np.float64)
        self.weights = w / w.sum()
        self.runs = 0

    def __call__(self, D: np.ndarray, rho: np.ndarray, T: np.ndarray, origins: np.ndarray) -> np.ndarray:
        """(B, 2, 2) Dice per point, scan (early, later) and region (whole tumour, core); -1 where not run."""
        out = np.full((len(D), 2, 2), -1.0)
        ok = np.array([self.grid.tissue_at(o) >= TISSUE_THRESHOLD for o in origins])
        if not ok.any():
            return out
        times = np.stack([T[ok], T[ok] + self.n], axis=1)
        u = simulate(self.grid, D[ok], rho[ok], origins[ok], times, config=self.config, device=self.device)
        self.runs += int(ok.sum())
        rows = np.flatnonzero(ok)
        for b, snaps in zip(rows, u):
            for k, (wt, core) in enumerate(self.scans):
                out[b, k] = scan_dice(snaps[k], wt, core, self.thresholds)
        return out

    def score(self, d: np.ndarray) -> np.ndarray:
        """(B,) mean over the two scans of the weighted mean Dice; -1 where not run."""
        s = (d @ self.weights).mean(axis=1)
        s[d[:, 0, 0] < 0] = -1.0
        return s


def refine_two_scans(
    grid: Atlas,
    scans,
    days_between: float,
    start: dict,
    *,
    thresholds: tuple[float, float],
    budget: int = 64,
    weights=(0.5, 0.5),
    seed: int = 0,
    popsize: int | None = None,
    config: SolverConfig = REFINE_CONFIG,
    device: str = "cpu",
    samples: Samples | None = None,
    others: list[dict] | None = None,
) -> dict:
    """Fit D, rho, T (at the first scan) and the seed point to both scans by CMA-ES.

    Parameters
    ----------
    grid : the database grid the masks live on.
    scans : ``((wt_early, core_early), (wt_later, core_later))`` bool (X, Y, Z) masks on ``grid``.
    days_between : interval between the scans, days (> 0).
    start : ``D_mm2_per_day``, ``rho_per_day``, ``T_days`` (at the first scan), ``origin_mm``.
    thresholds : (edema, core) imaging thresholds of both scans.
    budget : forward runs at most, the start included (>= 1).
    samples : collects every evaluated point (for the posterior).
    others : further start points (e.g. the next database candidates), evaluated with ``start`` in the
        first batch; the CMA-ES starts from the best of them.

    Returns
    -------
    dict: ``D_mm2_per_day``, ``rho_per_day``, ``T_days``, ``origin_mm`` of the best point seen, its
    ``dice`` ((2, 2) list: scan x region), ``score``, ``start_score`` (``start`` re-simulated),
    ``n_forward_runs``, ``seconds``.
    """
    t0 = time.perf_counter()
    if int(budget) < 1:
        raise InputError(f"refine: budget must be >= 1 forward run, got {budget}")
    if not days_between > 0:
        raise InputError(f"days between the scans must be > 0, got {days_between}")
    T0 = float(start["T_days"])
    mu_d0, mu_r0 = math.sqrt(float(start["D_mm2_per_day"]) * T0), math.sqrt(float(start["rho_per_day"]) * T0)
    o0 = np.asarray(start["origin_mm"], dtype=np.float64).reshape(3)
    obj = _PairObjective(grid, scans, days_between, thresholds, weights, config, device)
    samples = samples if samples is not None else Samples()

    def decode(z: np.ndarray):
        z = np.atleast_2d(z)
        T = np.clip(T0 * np.exp(LOG_T_SCALE * z[:, 2]), *_T_LIMITS)
        D = np.clip((mu_d0 * np.exp(LOG_SCALE * z[:, 0])) ** 2 / T, *_D_LIMITS)
        rho = np.clip((mu_r0 * np.exp(LOG_SCALE * z[:, 1])) ** 2 / T, *_RHO_LIMITS)
        return D, rho, T, o0 + ORIGIN_SCALE_MM * z[:, 3:6]

    def evaluate(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = decode(z)
        d = obj(*p)
        s = obj.score(d)
        keep = s >= 0
        samples.add(p[0][keep], p[1][keep], p[2][keep], p[3][keep], s[keep])
        return d, s

    def encode(p: dict) -> np.ndarray:
        T = float(p["T_days"])
        return np.concatenate(
            [
                [
                    math.log(math.sqrt(float(p["D_mm2_per_day"]) * T) / mu_d0) / LOG_SCALE,
                    math.log(math.sqrt(float(p["rho_per_day"]) * T) / mu_r0) / LOG_SCALE,
                    math.log(T / T0) / LOG_T_SCALE,
                ],
                (np.asarray(p["origin_mm"], dtype=np.float64).reshape(3) - o0) / ORIGIN_SCALE_MM,
            ]
        )

    z0 = np.stack([encode(p) for p in [start, *(others or [])][: max(1, int(budget))]])
    d0, s0 = evaluate(z0)
    k0 = int(np.argmax(s0))
    best_z, best_d, best_score = z0[k0], d0[k0], float(s0[k0])
    start_score = float(s0[0])
    es = CMAES(best_z, 1.0, popsize=popsize, rng=np.random.default_rng(seed))
    while obj.runs < budget:
        z = es.ask(min(es.lam, budget - obj.runs))
        d, s = evaluate(z)
        k = int(np.argmax(s))
        if s[k] > best_score:
            best_score, best_z, best_d = float(s[k]), z[k], d[k]
        if len(z) < es.lam or not (s >= 0).any():
            break
        es.tell(-s)
    D, rho, T, origin = (v[0] for v in decode(best_z))
    return {
        "D_mm2_per_day": float(D),
        "rho_per_day": float(rho),
        "T_days": float(T),
        "origin_mm": [float(v) for v in origin],
        "dice": np.asarray(best_d).tolist(),
        "score": best_score,
        "start_score": start_score,
        "n_forward_runs": obj.runs,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _log_stats(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    lx = np.log(x)
    m = float(np.sum(w * lx))
    return m, max(float(np.sqrt(max(np.sum(w * (lx - m) ** 2), 0.0))), SIGMA_FLOOR["log"])


def posterior_summary(
    samples: dict[str, np.ndarray], estimate: dict, days_between: float, calibration: Calibration
) -> tuple[dict, dict]:
    """``uncertainty`` (at the later scan) and the spreads ``sigma`` per key, from weighted samples.

    ``samples`` holds arrays ``D_mm2_per_day``, ``rho_per_day``, ``T_days`` (at the first scan),
    ``origin_mm`` (n, 3) and ``score``; ``estimate`` the same keys (scalars) of the point estimate at the
    first scan. Returned intervals are centred on the estimate (log scale for positive quantities).
    """
    w = match_weights(samples["score"])
    T_late = samples["T_days"] + days_between
    derived = derived_parameters(samples["D_mm2_per_day"], samples["rho_per_day"], T_late)
    values = {
        "D_mm2_per_day": samples["D_mm2_per_day"],
        "rho_per_day": samples["rho_per_day"],
        "T_days": T_late,
        **{k: np.asarray(v) for k, v in derived.items()},
    }
    est_T = float(estimate["T_days"]) + days_between
    est = {
        "D_mm2_per_day": float(estimate["D_mm2_per_day"]),
        "rho_per_day": float(estimate["rho_per_day"]),
        "T_days": est_T,
        **derived_parameters(estimate["D_mm2_per_day"], estimate["rho_per_day"], est_T),
    }
    unc, sigma = {}, {}
    for k, x in values.items():
        m, s = _log_stats(x, w)
        half = calibration.kappa[k] * s
        c = math.log(est[k])
        unc[k] = {
            "mean": float(math.exp(m)),
            "std": float(est[k] * half / 1.96),
            "ci95": [float(math.exp(c - half)), float(math.exp(c + half))],
        }
        sigma[k] = s
    o = samples["origin_mm"]
    o_est = np.asarray(estimate["origin_mm"], dtype=np.float64)
    mean = np.array([np.sum(w * o[:, a]) for a in range(3)])
    s_o = np.maximum(np.sqrt([np.sum(w * (o[:, a] - mean[a]) ** 2) for a in range(3)]), SIGMA_FLOOR["origin_mm"])
    half = calibration.kappa["origin_mm"] * s_o
    unc["origin_mm"] = {
        "mean": mean.tolist(),
        "std": (half / 1.96).tolist(),
        "ci95": [(o_est - half).tolist(), (o_est + half).tolist()],
    }
    sigma["origin_mm"] = s_o.tolist()
    for k in ("threshold_edema", "threshold_core"):
        v = float(estimate[k])
        unc[k] = {"mean": v, "std": 0.0, "ci95": [v, v]}
    return unc, sigma
