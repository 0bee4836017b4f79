"""The two-scan refinement: a CMA-ES over the infiltration length and the seed point, the time scale fixed by
the growth between the scans.

The Fisher–Kolmogorov solution depends on (D, rho, t) only through ``lambda = sqrt(D / rho)`` and ``rho t``:
a run at ``(lambda² rho_0, rho_0)`` is every patient ``(s lambda² rho_0, s rho_0)`` at times ``t / s``. Each
evaluated point ``(lambda, origin)`` is one run with :data:`N_SNAPSHOTS` snapshots (log-spaced around the
expected times, :data:`SPAN`); along them the times ``t_e`` and ``t_l`` at which the visible whole tumour has the observed
volumes of the two scans are interpolated (log time against log volume), so the growth between the scans is
matched by construction and fixes ``s = (t_l - t_e) / days_between``:

    D = s lambda² rho_0,   rho = s rho_0,   T (first scan) = t_e / s.

The densities at ``t_e`` and ``t_l`` (interpolated linearly in log time between the bracketing snapshots) are
scored against the scans; the objective is the mean over the two scans of the weighted mean Dice (whole
tumour, core), i.e. how well the shape and position fit once the volumes agree. Search coordinates (zero at
the start): ``log(lambda / lambda_0) / LOG_SCALE`` and ``(origin - origin_0) / ORIGIN_SCALE_MM``. Every
evaluated point is kept: they are the posterior samples of
:func:`~gliofit.inverse.two_scan_calibration.two_scan_uncertainty`.
"""

from __future__ import annotations

import math
import time

import numpy as np

from gliofit.common.errors import InputError
from gliofit.growth.atlas import TISSUE_THRESHOLD, Atlas
from gliofit.growth.solver import SolverConfig, simulate
from gliofit.inverse.refine import CMAES, LOG_SCALE, ORIGIN_SCALE_MM
from gliofit.simulations_db.dice import dice

__all__ = [
    "MIN_GROWTH",
    "SEGMENTATION_SHIFT_MM",
    "LAMBDA_STEPS",
    "N_SNAPSHOTS",
    "SPAN",
    "REFINE_CONFIG",
    "Samples",
    "interp_time",
    "refine_two_scans",
    "scan_dice",
    "scan_times",
    "volume_log_sd",
]

N_SNAPSHOTS = 24
"""Snapshots per refinement run, log-spaced over :data:`SPAN` times the expected times of the two scans."""
SPAN = (0.75, 1.35)
"""The snapshots run from ``SPAN[0]`` times the expected first-scan time to ``SPAN[1]`` times the later one,
both widened by ``r = lambda_start / lambda`` where it moves them out (the earliest times by min(1, r), the
latest by max(1, r)): at one rho the front speed is 2 lambda rho, so a developed tumour's times scale with r,
while the lag before a tumour appears does not. Tumours still appearing (the seed's profile rising through
the threshold) grow by far more than the front speed in a short interval: dense snapshots keep their times
apart."""
LAMBDA_STEPS = (-0.9, -0.6, -0.3, 0.3, 0.6, 0.9)
"""Steps of log(lambda) tried at the best start's seed point before the CMA-ES (lambda times 0.41-2.46): the
database's lambda is coarse, and the CMA-ES's first steps (:data:`~gliofit.inverse.refine.LOG_SCALE`) are
too short to cross that range within the budget."""
MIN_GROWTH = 0.02
"""Floor of the growth between the scans: ``t_l - t_e >= 2 %`` of ``t_e`` (keeps s > 0 when the volumes agree)."""
SEGMENTATION_SHIFT_MM = 0.5
"""Standard deviation of the mean displacement of a segmented boundary, mm: a scan's volume V is known to
``3 SEGMENTATION_SHIFT_MM / r`` on a log scale (r: the radius of a sphere of volume V). Through the times at
which a run reaches the two volumes this bounds how well the time scale s is known (:func:`scan_times`):
small tumours a short interval apart grow less than their segmentations' noise."""
MAX_LOG_SD = 2.0
"""Cap of the time scale's log standard deviation (a run whose volume stalls between the scans)."""
_LAMBDA_LIMITS = (0.05, 30.0)  # mm
_RHO_LIMITS = (1e-4, 1.0)  # 1/day, after rescaling
_D_LIMITS = (1e-3, 5.0)  # mm²/day
REFINE_CONFIG = SolverConfig()
"""Solver settings of the refinement: the defaults, as the single-scan refinement (on the CPU the fused numba
kernels; ``compile=False`` would fall back to the eager torch operator, several times slower)."""


def _log_volumes(vox: np.ndarray) -> np.ndarray:
    """log of a run's whole-tumour voxel counts, non-decreasing (floored at half a voxel)."""
    return np.log(np.maximum.accumulate(np.maximum(np.asarray(vox, dtype=np.float64), 0.5)))


def interp_time(volume: float, vox: np.ndarray, times: np.ndarray) -> float:
    """Time (days) at which a run's whole tumour reaches ``volume`` voxels: log time against log volume
    through its snapshots ``(times, vox)``, extrapolated from the last two beyond the last."""
    lv = _log_volumes(vox)
    lt, x = np.log(np.asarray(times, dtype=np.float64)), math.log(max(float(volume), 0.5))
    if len(lv) >= 2 and x > lv[-1] and lv[-1] > lv[-2]:
        return float(np.exp(lt[-1] + (x - lv[-1]) * (lt[-1] - lt[-2]) / (lv[-1] - lv[-2])))
    return float(np.exp(np.interp(x, lv, lt)))


def volume_log_sd(voxels: float, voxel_mm3: float) -> float:
    """Log standard deviation of a segmented volume of ``voxels`` voxels (:data:`SEGMENTATION_SHIFT_MM`)."""
    r_mm = (3.0 * max(float(voxels), 1.0) * voxel_mm3 / (4.0 * math.pi)) ** (1.0 / 3.0)
    return 3.0 * SEGMENTATION_SHIFT_MM / r_mm


def _log_growth_rate(volume: float, vox: np.ndarray, times: np.ndarray) -> float:
    """d ln V / dt (1/day) of a run where its whole tumour has ``volume`` voxels: between the bracketing
    snapshots (the last two beyond the last; 0 with fewer than two)."""
    lv = _log_volumes(vox)
    if len(lv) < 2:
        return 0.0
    k = int(np.clip(np.searchsorted(lv, math.log(max(float(volume), 0.5))) - 1, 0, len(lv) - 2))
    dt = float(times[k + 1] - times[k])
    return float(lv[k + 1] - lv[k]) / dt if dt > 0 else 0.0


def scan_times(
    volumes: tuple[float, float], log_sds: tuple[float, float], vox: np.ndarray, times: np.ndarray
) -> tuple[float, float, float]:
    """(t_e, t_l, sd of log s): the run's times (days) at the two observed whole-tumour volumes (voxels;
    :func:`interp_time`, ``t_l - t_e`` floored at :data:`MIN_GROWTH` t_e) and the log standard deviation of
    the time scale ``s = (t_l - t_e) / days_between`` that the volumes' log standard deviations ``log_sds``
    give through the run's growth rate there (capped at :data:`MAX_LOG_SD`)."""
    t_e = interp_time(volumes[0], vox, times)
    t_l = max(interp_time(volumes[1], vox, times), t_e * (1.0 + MIN_GROWTH))
    sd_t = [sd / max(_log_growth_rate(v, vox, times), 1e-12) for v, sd in zip(volumes, log_sds)]
    return t_e, t_l, min(math.hypot(*sd_t) / (t_l - t_e), MAX_LOG_SD)


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


def _at(u: np.ndarray, times: np.ndarray, t: float) -> np.ndarray:
    """The snapshots ``u`` (K, X, Y, Z) at time ``t``: linear in log time between the bracketing two (the
    first or last one outside their span)."""
    lt = np.log(times)
    x = math.log(t)
    if x <= lt[0]:
        return u[0]
    if x >= lt[-1]:
        return u[-1]
    k = int(np.searchsorted(lt, x)) - 1
    a = (x - lt[k]) / (lt[k + 1] - lt[k])
    return (1.0 - a) * u[k] + a * u[k + 1]


class _GrowthObjective:
    """Batched runs at ``(lambda² rho_0, rho_0)``; times fixed by the observed volumes; Dice per scan."""

    def __init__(self, grid: Atlas, scans, days_between: float, thresholds, weights, config, device) -> None:
        self.grid, self.scans, self.n = grid, scans, float(days_between)
        self.thresholds, self.config, self.device = thresholds, config, device
        w = np.asarray(weights, dtype=np.float64)
        self.weights = w / w.sum()
        self.volumes = tuple(float(np.count_nonzero(wt)) for wt, _ in scans)
        self.log_sds = tuple(volume_log_sd(v, grid.voxel_volume_mm3) for v in self.volumes)
        self.runs = 0

    def __call__(
        self, lam: np.ndarray, rho0: float, lam_start: float, t_guess: tuple[float, float], origins: np.ndarray
    ):
        """Per point: (2, 2) Dice (scan x region; -1 where not run) and (D, rho, T at the first scan, t_e, t_l,
        sd of log s): t_e, t_l the run's times (days at ``rho0``) of the two scans (:func:`scan_times`).

        ``t_guess``: the expected run times of the two scans at ``lam_start`` (the span of the snapshots)."""
        b = len(lam)
        out, params = np.full((b, 2, 2), -1.0), np.full((b, 6), np.nan)
        ok = np.array([self.grid.tissue_at(o) >= TISSUE_THRESHOLD for o in origins])
        if not ok.any():
            return out, params
        r = lam_start / lam[ok]
        times = np.stack(
            [
                np.geomspace(SPAN[0] * t_guess[0] * min(1.0, r_i), SPAN[1] * t_guess[1] * max(1.0, r_i), N_SNAPSHOTS)
                for r_i in r
            ]
        )
        u = simulate(
            self.grid,
            lam[ok] ** 2 * rho0,
            np.full(int(ok.sum()), rho0),
            origins[ok],
            times,
            config=self.config,
            device=self.device,
        )
        self.runs += int(ok.sum())
        for b_i, snaps, tb in zip(np.flatnonzero(ok), u, times):
            vox = (snaps.reshape(len(tb), -1) >= self.thresholds[0]).sum(axis=1)
            t_e, t_l, sd = scan_times(self.volumes, self.log_sds, vox, tb)
            for k, (t, (wt, core)) in enumerate(zip((t_e, t_l), self.scans)):
                out[b_i, k] = scan_dice(_at(snaps, tb, t), wt, core, self.thresholds)
            s = (t_l - t_e) / self.n
            params[b_i] = (lam[b_i] ** 2 * rho0 * s, rho0 * s, t_e / s, t_e, t_l, sd)
        return out, params

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
    """Fit the infiltration length and the seed point to both scans, D, rho and T following (module docstring).

    Parameters
    ----------
    grid : the database grid the masks live on.
    scans : ``((wt_early, core_early), (wt_later, core_later))`` bool (X, Y, Z) masks on ``grid``.
    days_between : interval between the scans, days (> 0).
    start : ``D_mm2_per_day``, ``rho_per_day``, ``T_days`` (at the first scan), ``origin_mm``.
    thresholds : (edema, core) imaging thresholds of both scans.
    budget : forward runs at most, the starts included (>= 1).
    samples : collects every evaluated point (for the posterior).
    others : further start points (e.g. the next database candidates), evaluated with ``start`` in the
        first batch; the CMA-ES starts from the best of them.

    Returns
    -------
    dict: ``D_mm2_per_day``, ``rho_per_day``, ``T_days``, ``origin_mm`` of the best point seen, its
    ``sd_log_time_scale`` (:func:`scan_times`), ``dice`` ((2, 2) list: scan x region), ``score``,
    ``start_score`` (``start`` re-simulated),
    ``n_forward_runs``, ``seconds``.
    """
    t0 = time.perf_counter()
    if int(budget) < 1:
        raise InputError(f"refine: budget must be >= 1 forward run, got {budget}")
    if not days_between > 0:
        raise InputError(f"days between the scans must be > 0, got {days_between}")
    rho0 = float(start["rho_per_day"])
    lam0 = math.sqrt(float(start["D_mm2_per_day"]) / rho0)
    # the snapshots' span: lambda and run times (days at rho0) of the scans at the best point so far
    anchor = {"lam": lam0, "t": (float(start["T_days"]), float(start["T_days"]) + float(days_between))}
    o0 = np.asarray(start["origin_mm"], dtype=np.float64).reshape(3)
    obj = _GrowthObjective(grid, scans, days_between, thresholds, weights, config, device)
    samples = samples if samples is not None else Samples()

    def decode(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = np.atleast_2d(z)
        return np.clip(lam0 * np.exp(LOG_SCALE * z[:, 0]), *_LAMBDA_LIMITS), o0 + ORIGIN_SCALE_MM * z[:, 1:4]

    def evaluate(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lam, origins = decode(z)
        d, p = obj(lam, rho0, anchor["lam"], anchor["t"], origins)
        s = obj.score(d)
        keep = s >= 0
        p[:, 0] = np.clip(p[:, 0], *_D_LIMITS)
        p[:, 1] = np.clip(p[:, 1], *_RHO_LIMITS)
        samples.add(p[keep, 0], p[keep, 1], p[keep, 2], origins[keep], s[keep])
        return d, s, p

    def reanchor(z: np.ndarray, p: np.ndarray) -> None:
        if np.isfinite(p[3:5]).all():
            anchor.update(lam=float(decode(z)[0][0]), t=(float(p[3]), float(p[4])))

    def encode(q: dict) -> np.ndarray:
        lam = math.sqrt(float(q["D_mm2_per_day"]) / float(q["rho_per_day"]))
        o = np.asarray(q["origin_mm"], dtype=np.float64).reshape(3)
        return np.concatenate([[math.log(lam / lam0) / LOG_SCALE], (o - o0) / ORIGIN_SCALE_MM])

    z0 = np.stack([encode(q) for q in [start, *(others or [])][: max(1, int(budget))]])
    d0, s0, p0 = evaluate(z0)
    k0 = int(np.argmax(s0))
    best = (z0[k0], d0[k0], float(s0[k0]), p0[k0])
    start_score = float(s0[0])
    reanchor(best[0], best[3])
    if obj.runs < budget:
        z1 = np.repeat(best[0][None], len(LAMBDA_STEPS), axis=0)[: budget - obj.runs]
        z1[:, 0] += np.asarray(LAMBDA_STEPS[: len(z1)]) / LOG_SCALE
        d1, s1, p1 = evaluate(z1)
        k1 = int(np.argmax(s1))
        if s1[k1] > best[2]:
            best = (z1[k1], d1[k1], float(s1[k1]), p1[k1])
            reanchor(best[0], best[3])
    es = CMAES(best[0], 1.0, popsize=popsize, rng=np.random.default_rng(seed))
    while obj.runs < budget:
        z = es.ask(min(es.lam, budget - obj.runs))
        d, s, p = evaluate(z)
        k = int(np.argmax(s))
        if s[k] > best[2]:
            best = (z[k], d[k], float(s[k]), p[k])
        if len(z) < es.lam or not (s >= 0).any():
            break
        es.tell(-s)
    z_best, d_best, score_best, p_best = best
    origin = decode(z_best)[1][0]
    return {
        "D_mm2_per_day": float(np.clip(p_best[0], *_D_LIMITS)),
        "rho_per_day": float(np.clip(p_best[1], *_RHO_LIMITS)),
        "T_days": float(p_best[2]),
        "sd_log_time_scale": float(p_best[5]),
        "origin_mm": [float(v) for v in origin],
        "dice": np.asarray(d_best).tolist(),
        "score": score_best,
        "start_score": start_score,
        "n_forward_runs": obj.runs,
        "seconds": round(time.perf_counter() - t0, 3),
    }
