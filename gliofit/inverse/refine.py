"""``--refine``: a short local search with the forward solver around the best database match.

The database answers with its nearest stored simulation; between its points the fit can still improve.
:func:`refine` runs a small CMA-ES (Hansen's (mu/mu_w, lambda) evolution strategy with rank-one and
rank-mu covariance updates and cumulative step-size adaptation) over five scaled coordinates:

``(log mu_D - log mu_D0) / 0.15``, ``(log mu_rho - log mu_rho0) / 0.15`` and ``(origin - origin0) / 3 mm``,

starting from the match (all zeros) with step size 1 (15 % in the identifiable pair, 3 mm in the seed
point). T stays the start's T (the data identify only D·T and rho·T), so ``D = mu_D² / T`` and
``rho = mu_rho² / T``. Each generation is one batched call of the solver (``lambda`` simulations at once on
the database grid); the objective is the weighted mean of the whole-tumour and core Dice of the thresholded
simulation against the observed masks. The start itself is re-simulated first and the best point seen is
returned, so the result is never worse than the start on this objective.

>>> out = refine(db.grid, wt, core, {"D_mm2_per_day": 0.3, "rho_per_day": 0.05, "T_days": 200,
...                                  "origin_mm": [-28, -12, 22]}, budget=40)      # doctest: +SKIP
"""

from __future__ import annotations

import math
import time

import numpy as np

from gliofit.common.errors import InputError
from gliofit.common.units import DEFAULT_THRESHOLD_CORE, DEFAULT_THRESHOLD_EDEMA, derived_parameters
from gliofit.growth.atlas import TISSUE_THRESHOLD, Atlas
from gliofit.simulations_db.dice import dice
from gliofit.growth.solver import SolverConfig, simulate

__all__ = ["refine", "CMAES", "LOG_SCALE", "ORIGIN_SCALE_MM"]

LOG_SCALE = 0.15
"""One search unit of log mu_D and log mu_rho (a 15 % change)."""
ORIGIN_SCALE_MM = 3.0
"""One search unit of each seed-point coordinate, mm."""
_D_LIMITS = (1e-3, 5.0)  # mm²/day, a guard against runaway steps (solver cost grows with D)
_RHO_LIMITS = (1e-4, 1.0)  # 1/day


class CMAES:
    """A minimal CMA-ES minimiser (Hansen 2016, "The CMA Evolution Strategy: A Tutorial"), ask/tell.

    Parameters
    ----------
    mean : (n,) start point.
    sigma : initial step size.
    popsize : lambda (default ``4 + floor(3 ln n)``).
    rng : generator of the samples.
    """

    def __init__(
        self, mean: np.ndarray, sigma: float, *, popsize: int | None = None, rng: np.random.Generator | None = None
    ) -> None:
        n = len(mean)
        self.n, self.mean, self.sigma = n, np.asarray(mean, dtype=np.float64).copy(), float(sigma)
        self.lam = int(popsize or 4 + math.floor(3 * math.log(n)))
        self.mu = self.lam // 2
        w = math.log(self.mu + 0.5) - np.log(np.arange(1, self.mu + 1))
        self.weights = w / w.sum()
        self.mueff = 1.0 / float((self.weights**2).sum())
        me = self.mueff
        self.cc = (4 + me / n) / (n + 4 + 2 * me / n)
        self.cs = (me + 2) / (n + me + 5)
        self.c1 = 2 / ((n + 1.3) ** 2 + me)
        self.cmu = min(1 - self.c1, 2 * (me - 2 + 1 / me) / ((n + 2) ** 2 + me))
        self.damps = 1 + 2 * max(0.0, math.sqrt((me - 1) / (n + 1)) - 1) + self.cs
        self.chin = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n))
        self.C, self.pc, self.ps = np.eye(n), np.zeros(n), np.zeros(n)
        self.generation = 0
        self.rng = rng or np.random.default_rng(0)
        self._y: np.ndarray | None = None

    def ask(self, count: int | None = None) -> np.ndarray:
        """(count, n) candidate points (``count`` defaults to lambda)."""
        evals, vecs = np.linalg.eigh(self.C)
        scale = vecs * np.sqrt(np.maximum(evals, 1e-20))
        self._y = self.rng.standard_normal((count or self.lam, self.n)) @ scale.T
        return self.mean + self.sigma * self._y

    def tell(self, values: np.ndarray) -> None:
        """Update the distribution from the values (lower is better) of the last full ``ask``."""
        y = self._y
        if y is None or len(values) != self.lam or len(y) != self.lam:
            raise ValueError("tell() needs the values of one full ask() of lambda points")
        best = y[np.argsort(values, kind="stable")[: self.mu]]
        yw = self.weights @ best
        self.mean = self.mean + self.sigma * yw
        evals, vecs = np.linalg.eigh(self.C)
        inv_sqrt = vecs @ np.diag(1 / np.sqrt(np.maximum(evals, 1e-20))) @ vecs.T
        self.ps = (1 - self.cs) * self.ps + math.sqrt(self.cs * (2 - self.cs) * self.mueff) * inv_sqrt @ yw
        self.generation += 1
        norm_ps = float(np.linalg.norm(self.ps))
        hsig = norm_ps / math.sqrt(1 - (1 - self.cs) ** (2 * self.generation)) / self.chin < 1.4 + 2 / (self.n + 1)
        self.pc = (1 - self.cc) * self.pc + hsig * math.sqrt(self.cc * (2 - self.cc) * self.mueff) * yw
        rank_mu = (best.T * self.weights) @ best
        self.C = (
            (1 - self.c1 - self.cmu) * self.C
            + self.c1 * (np.outer(self.pc, self.pc) + (1 - hsig) * self.cc * (2 - self.cc) * self.C)
            + self.cmu * rank_mu
        )
        self.C = (self.C + self.C.T) / 2
        self.sigma *= math.exp((self.cs / self.damps) * (norm_ps / self.chin - 1))
        self._y = None


def _check_masks(grid: Atlas, wt: np.ndarray, core: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    wt, core = np.asarray(wt, dtype=bool), np.asarray(core, dtype=bool)
    for name, m in (("whole-tumour mask", wt), ("core mask", core)):
        if m.shape != grid.shape:
            raise InputError(f"refine: {name} has shape {m.shape}, the database grid is {grid.shape}")
    if not wt.any():
        raise InputError("refine: the whole-tumour mask is empty")
    return wt, core


class _Objective:
    """Batched weighted mean Dice of simulations against the observed masks (counts forward runs)."""

    def __init__(self, grid, wt, core, T, thresholds, weights, config, device) -> None:
        self.grid, self.wt, self.core, self.T = grid, wt, core, float(T)
        self.thresholds, self.config, self.device = thresholds, config, device
        w = np.asarray(weights, dtype=np.float64)
        self.weights = w / w.sum()
        self.runs = 0

    def __call__(
        self, mu_d: np.ndarray, mu_rho: np.ndarray, origins: np.ndarray, T_days: np.ndarray | None = None
    ) -> np.ndarray:
        """(B, 2) Dice (whole tumour, core) per point (at its own age ``T_days`` (B,), default the start's);
        points with a seed outside tissue get (-1, -1)."""
        out = np.full((len(mu_d), 2), -1.0)
        ok = np.array([self.grid.tissue_at(o) >= TISSUE_THRESHOLD for o in origins])
        if not ok.any():
            return out
        T = np.broadcast_to(self.T if T_days is None else np.asarray(T_days, dtype=np.float64), (len(mu_d),))[ok]
        D = np.clip(mu_d[ok] ** 2 / T, *_D_LIMITS)
        rho = np.clip(mu_rho[ok] ** 2 / T, *_RHO_LIMITS)
        u = simulate(self.grid, D, rho, origins[ok], T[:, None], config=self.config, device=self.device)[:, 0]
        self.runs += int(ok.sum())
        lo, hi = self.thresholds
        out[ok] = [(dice(s >= lo, self.wt), dice(s >= hi, self.core)) for s in u]
        return out

    def score(self, dices: np.ndarray) -> np.ndarray:
        return dices @ self.weights


def _score_of(start: dict) -> np.ndarray:
    return np.asarray(start["_dice"], dtype=np.float64)


def _best_start(grid, wt, core, starts: list[dict], thresholds, weights, config, device, budget: int):
    """The start that fits best when re-simulated (all in one batch of at most ``budget`` runs), its index;
    the returned start carries its (wt, core) Dice under ``_dice``."""
    starts = starts[: max(1, int(budget))]
    T = np.array([float(s["T_days"]) for s in starts])
    mu_d = np.sqrt(np.array([float(s["D_mm2_per_day"]) for s in starts]) * T)
    mu_r = np.sqrt(np.array([float(s["rho_per_day"]) for s in starts]) * T)
    origins = np.array([np.asarray(s["origin_mm"], dtype=np.float64).reshape(3) for s in starts])
    obj = _Objective(grid, wt, core, T[0], thresholds, weights, config, device)
    dices = obj(mu_d, mu_r, origins, T)
    w = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    k = int(np.argmax(dices @ w))
    return {**starts[k], "_dice": dices[k]}, k


def refine(
    grid: Atlas,
    wt: np.ndarray,
    core: np.ndarray,
    start: dict,
    *,
    thresholds: tuple[float, float] = (DEFAULT_THRESHOLD_EDEMA, DEFAULT_THRESHOLD_CORE),
    budget: int = 40,
    seed: int = 0,
    weights: tuple[float, float] = (0.5, 0.5),
    popsize: int | None = None,
    config: SolverConfig = SolverConfig(),
    device: str = "cpu",
    alternatives: list[dict] | None = None,
) -> dict:
    """Improve a match by a CMA-ES over log mu_D, log mu_rho and the seed point, T fixed.

    Parameters
    ----------
    grid : the database grid the masks live on.
    wt, core : (X, Y, Z) bool observed whole-tumour and core masks on ``grid``.
    start : ``D_mm2_per_day``, ``rho_per_day``, ``T_days``, ``origin_mm`` (world mm) of the best match.
    thresholds : (edema, core) thresholds turning a simulation into masks (the match's).
    budget : forward runs at most, the start's re-simulation included (>= 1).
    seed : seed of the CMA-ES samples.
    weights : weights of whole-tumour and core Dice in the objective.
    popsize : CMA-ES lambda, the solver batch (default 8 for five coordinates).
    config, device : solver settings.
    alternatives : further starts (same keys as ``start``; e.g. the next best matches of other
        simulations): all starts are re-simulated in one batch (counted in the budget) and the search
        begins at the one that fits best. A translated database match is no simulation that was run:
        re-simulated at its new seed point it can fit much worse than its crop did, and another start
        better.

    Returns
    -------
    dict: ``D_mm2_per_day``, ``rho_per_day``, ``T_days``, ``origin_mm``, ``mu_D_mm``, ``mu_rho``,
    ``dice_whole_tumor``, ``dice_core``, ``dice_mean`` (weighted) of the best point seen,
    ``start_dice_mean`` (the chosen start re-simulated), ``start`` (its index: 0 = ``start``, i =
    ``alternatives[i - 1]``), ``n_forward_runs``, ``seconds``.
    """
    t0 = time.perf_counter()
    wt, core = _check_masks(grid, wt, core)
    if int(budget) < 1:
        raise InputError(f"refine: budget must be >= 1 forward run, got {budget}")
    chosen = 0
    if alternatives:
        start, chosen = _best_start(grid, wt, core, [start, *alternatives], thresholds, weights, config, device, budget)
    T = float(start["T_days"])
    mu_d0 = math.sqrt(float(start["D_mm2_per_day"]) * T)
    mu_r0 = math.sqrt(float(start["rho_per_day"]) * T)
    o0 = np.asarray(start["origin_mm"], dtype=np.float64).reshape(3)
    obj = _Objective(grid, wt, core, T, thresholds, weights, config, device)
    obj.runs = min(len(alternatives or ()) + 1, int(budget)) if alternatives else 0

    def decode(z: np.ndarray):
        z = np.atleast_2d(z)
        return (
            mu_d0 * np.exp(LOG_SCALE * z[:, 0]),
            mu_r0 * np.exp(LOG_SCALE * z[:, 1]),
            o0 + ORIGIN_SCALE_MM * z[:, 2:5],
        )

    best_z = np.zeros(5)
    best_d = obj(*decode(best_z))[0] if not alternatives else _score_of(start)
    start_score = best_score = float(obj.score(best_d))
    es = CMAES(np.zeros(5), 1.0, popsize=popsize, rng=np.random.default_rng(seed))
    while obj.runs < budget:
        left = budget - obj.runs
        z = es.ask(min(es.lam, left))
        d = obj(*decode(z))
        scores = obj.score(d)
        scores[d[:, 0] < 0] = -1.0
        k = int(np.argmax(scores))
        if scores[k] > best_score:
            best_score, best_z, best_d = float(scores[k]), z[k], d[k]
        if len(z) < es.lam:
            break
        es.tell(-scores)
        if not (d[:, 0] >= 0).any():
            break  # every seed left the tissue: nothing to learn
    mu_d, mu_r, origin = (v[0] for v in decode(best_z))
    D, rho = float(np.clip(mu_d**2 / T, *_D_LIMITS)), float(np.clip(mu_r**2 / T, *_RHO_LIMITS))
    derived = derived_parameters(D, rho, T)
    return {
        "D_mm2_per_day": D,
        "rho_per_day": rho,
        "T_days": T,
        "origin_mm": [float(v) for v in origin],
        "mu_D_mm": derived["mu_D_mm"],
        "mu_rho": derived["mu_rho"],
        "dice_whole_tumor": float(best_d[0]),
        "dice_core": float(best_d[1]),
        "dice_mean": best_score,
        "start_dice_mean": start_score,
        "start": chosen,
        "n_forward_runs": obj.runs,
        "seconds": round(time.perf_counter() - t0, 3),
    }
