"""From ranked matches to the estimate: best match plus a posterior-like summary of the top matches.

Point estimate: the parameters of the best match (rank 1), so parameters,
density and fit describe one simulation. Note T is a convention (the data
identify only D·T and ρ·T, i.e. ``mu_D_mm`` and ``mu_rho``): the entry's own T
is reported.

Summary: match ``i`` with score ``s_i`` (weighted mean Dice) gets weight

    w_i ∝ exp((s_i − s_max) / τ),    τ = max(TAU_MIN, (1 − s_max) / 2),

and no weight when ``s_i < s_max / 2`` (SUPPORT_FRACTION): a match that
explains less than half of what the best one does is no plausible
explanation, and the many such entries among the candidates would otherwise
add up to a flat, prior-like tail (origins anywhere in the brain).

Why this temperature: the best match's shortfall ``1 − s_max`` measures how
far database and model are from the observation (grid discretisation, the
spacing of the database's samples, segmentation noise); score differences
well below it carry little information, so matches within about half that
shortfall of the best keep a weight of at least 1/e. A fixed τ is either too
sharp for a small or coarse database (one match carries all the weight and
the interval collapses to a point although its neighbours fit almost as well)
or too flat for a dense one. Measured on 80 queries grown from parameters not
in the database (1,500 simulations at 6 mm, best mean Dice 0.6–0.7), the 95%
intervals covered the truth of mu_D in 90%, of mu_rho in 98% and of the
origin in 95% of cases; a fixed τ = 0.02 covered only 35–60%
(benchmarks/RESULTS.md). The floor TAU_MIN = 0.01 keeps near-perfect fits
from collapsing onto one entry. From the weights: weighted mean, weighted
standard deviation and the 95% interval as weighted 2.5% and 97.5% quantiles
(midpoint interpolation), per parameter and per origin axis. Seed points of
a database sit at voxel centres of its grid, so a stored origin stands for
any point of its voxel: the origin's interval is widened by half a voxel on
each side and its variance gains the quantisation term spacing²/12.
"""

from __future__ import annotations

import numpy as np

from gliofit.common.units import derived_parameters

__all__ = [
    "PARAMETER_KEYS",
    "SCALAR_KEYS",
    "TAU_MIN",
    "TAU_SHORTFALL_FRACTION",
    "SUPPORT_FRACTION",
    "entry_parameters",
    "temperature",
    "match_weights",
    "weighted_quantile",
    "summarise",
    "parameters_of",
    "holding",
]

SCALAR_KEYS = (
    "D_mm2_per_day",
    "rho_per_day",
    "T_days",
    "mu_D_mm",
    "mu_rho",
    "infiltration_length_mm",
    "velocity_mm_per_day",
)
PARAMETER_KEYS = SCALAR_KEYS + ("origin_mm", "threshold_edema", "threshold_core")
"""Keys of ``parameters`` in result.json, in order (INTERFACES.md)."""
TAU_MIN = 0.01
TAU_SHORTFALL_FRACTION = 0.5
SUPPORT_FRACTION = 0.5


def entry_parameters(db, ids: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """Parameters of entries: arrays (n,) per scalar key, ``origin_mm`` (n, 3), thresholds (n,)."""
    e = db.entries
    rows = db.rows_of(ids)
    D, rho, T = e["D_mm2_per_day"][rows], e["rho_per_day"][rows], e["T_days"][rows]
    derived = derived_parameters(D, rho, T)
    out = {"D_mm2_per_day": D, "rho_per_day": rho, "T_days": T, **{k: np.asarray(v) for k, v in derived.items()}}
    out["origin_mm"] = np.stack([e["origin_x_mm"][rows], e["origin_y_mm"][rows], e["origin_z_mm"][rows]], axis=1)
    th = np.asarray(thresholds, dtype=np.float64).reshape(-1, 2)
    out["threshold_edema"], out["threshold_core"] = th[:, 0], th[:, 1]
    return {k: out[k] for k in PARAMETER_KEYS}


def parameters_of(params: dict[str, np.ndarray], i: int) -> dict:
    """JSON-ready parameters of match ``i`` (floats; origin a list of 3)."""
    return {k: ([float(v) for v in params[k][i]] if k == "origin_mm" else float(params[k][i])) for k in PARAMETER_KEYS}


def temperature(scores: np.ndarray) -> float:
    """τ = max(TAU_MIN, TAU_SHORTFALL_FRACTION · (1 − best score)) for scores (Dice) in [0, 1]."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return TAU_MIN
    return max(TAU_MIN, TAU_SHORTFALL_FRACTION * (1.0 - float(s.max())))


def match_weights(scores: np.ndarray, tau: float | None = None) -> np.ndarray:
    """(n,) normalised weights exp((s_i − s_max)/τ), zero where s_i < SUPPORT_FRACTION · s_max.

    τ from :func:`temperature` when None.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = temperature(s) if tau is None else float(tau)
    w = np.exp((s - s.max()) / t)
    w[s < SUPPORT_FRACTION * s.max()] = 0.0
    return w / w.sum()


def weighted_quantile(x: np.ndarray, w: np.ndarray, q) -> np.ndarray:
    """Weighted quantiles of samples ``x`` (n,) with weights ``w`` (n,) at ``q`` in [0, 1] (midpoint rule)."""
    x, w = np.asarray(x, dtype=np.float64), np.asarray(w, dtype=np.float64)
    x, w = x[w > 0], w[w > 0]  # samples without weight do not move the quantiles
    order = np.argsort(x, kind="stable")
    xs, ws = x[order], w[order]
    c = (np.cumsum(ws) - 0.5 * ws) / ws.sum()
    return np.interp(q, c, xs)


def _stats(x: np.ndarray, w: np.ndarray) -> tuple[float, float, list[float], list[float]]:
    mean = float(np.sum(w * x))
    std = float(np.sqrt(max(np.sum(w * (x - mean) ** 2), 0.0)))
    lo, q1, q3, hi = weighted_quantile(x, w, [0.025, 0.25, 0.75, 0.975])
    return mean, std, [float(lo), float(hi)], [float(q1), float(q3)]


def summarise(params: dict[str, np.ndarray], weights: np.ndarray, *, origin_spacing_mm: float = 0.0) -> dict:
    """Uncalibrated ``uncertainty``: ``{key: {"mean", "std", "ci95": [low, high], "ci50": [low, high]}}``.

    For ``origin_mm`` mean and std are [x, y, z] and ci95 / ci50 are ``[[x, y, z] low, [x, y, z] high]``,
    widened by ``origin_spacing_mm / 2`` (the database grid's voxel: seed points are voxel centres).
    """
    out = {}
    half = 0.5 * float(origin_spacing_mm)
    for k in PARAMETER_KEYS:
        v = params[k]
        if v.ndim == 2:
            cols = [_stats(v[:, a], weights) for a in range(v.shape[1])]
            out[k] = {
                "mean": [c[0] for c in cols],
                "std": [float(np.sqrt(c[1] ** 2 + origin_spacing_mm**2 / 12.0)) for c in cols],
                "ci95": [[c[2][0] - half for c in cols], [c[2][1] + half for c in cols]],
                "ci50": [[c[3][0] - half for c in cols], [c[3][1] + half for c in cols]],
            }
        else:
            m, s, ci, ci50 = _stats(v, weights)
            out[k] = {"mean": m, "std": s, "ci95": ci, "ci50": ci50}
    return out


def holding(summary: dict, point: dict) -> dict:
    """``summary`` (of :func:`summarise`) with every interval widened, where needed, to hold the reported
    estimate ``point``: the estimate (the refined simulation) can lie outside the spread of the matches."""
    out = {}
    for k, v in summary.items():
        p = point[k]
        if k == "origin_mm":
            lo95, hi95 = (np.minimum(v["ci95"][0], p), np.maximum(v["ci95"][1], p))
            lo50, hi50 = (np.minimum(v["ci50"][0], p), np.maximum(v["ci50"][1], p))
            out[k] = {**v, "ci95": [lo95.tolist(), hi95.tolist()], "ci50": [lo50.tolist(), hi50.tolist()]}
        else:
            p = float(p)
            out[k] = {
                **v,
                "ci95": [min(v["ci95"][0], p), max(v["ci95"][1], p)],
                "ci50": [min(v["ci50"][0], p), max(v["ci50"][1], p)],
            }
    return out
