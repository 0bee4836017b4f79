"""Two scans before treatment: D, rho and the tumour's age T separately, from the growth between them.

From one scan the masks identify only ``mu_D = sqrt(D T)`` and ``mu_rho = sqrt(rho T)``. The
Fisher–Kolmogorov solution is invariant under ``(D, rho, t) -> (s D, s rho, t / s)``: every stored simulation
(D_s, rho_s) with snapshots at times t_k stands for a whole family of patients, and a PAIR of its times
(t_e, t_l) matches two scans ``days_between`` apart exactly when ``s = (t_l - t_e) / days_between``; then

    D = s D_s,   rho = s rho_s,   T (first scan) = t_e / s.

:func:`joint_candidates` (the query):

1. the single-scan query (:func:`gliofit.inverse.query.query`) on each scan; the simulations behind the
   best ``n_simulations`` matches of either scan are the candidates;
2. every stored snapshot of a candidate simulation is scored (exact Dice, threshold search) against the
   scan(s) whose volume window it falls in; a simulation's joint score is the best
   ``(score_early(k) + score_later(j)) / 2`` over snapshot pairs k <= j;
3. its times are not the coarse snapshot times: t_e and t_l are interpolated along the simulation's own
   snapshots (log time against log whole-tumour volume) at the observed volumes of the two scans, so any
   interval, also one shorter than the snapshot spacing, maps to a scale ``s`` (a floor of 2 % of t_e keeps
   s > 0 when the two volumes coincide).

Then :func:`~gliofit.inverse.two_scan_refine.refine_two_scans` re-simulates forward from the best candidate
with both snapshots per run and fits D, rho, T and the seed point to both scans; the calibrated intervals
come from :func:`~gliofit.inverse.two_scan_calibration.two_scan_uncertainty`. Parameters are reported at the later
scan (T there = T at the first + days_between), with the density at the later scan and, optionally,
projected ``project_days`` further.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gliofit.common.errors import InputError
from gliofit.common.units import derived_parameters
from gliofit.inverse.estimate import PARAMETER_KEYS
from gliofit.inverse.observation import Observation, observe
from gliofit.inverse.query import (
    DEFAULT_TOP_K,
    check_weights,
    query,
    shift_candidates,
    threshold_grid,
)
from gliofit.inverse.calibration import calibration_summary
from gliofit.inverse.two_scan_calibration import read_two_scan_calibration, two_scan_uncertainty
from gliofit.inverse.two_scan_refine import Samples, refine_two_scans, scan_times, volume_log_sd
from gliofit.inverse.two_scan_result import TwoScanResult
from gliofit.simulations_db.dice import volume_window

__all__ = [
    "N_SIMULATIONS",
    "N_STARTS",
    "SHRINK_BOUNDARY_MM",
    "PairCandidates",
    "check_interval",
    "check_same_grid",
    "infer_two_scans",
    "joint_candidates",
    "shrinkage_warning",
]

N_SIMULATIONS = 40
"""Simulations taken from the best matches of each scan."""
SHRINK_BOUNDARY_MM = 2.0
"""The later scan may be smaller than the earlier by this boundary displacement (segmentation noise) over
the earlier whole tumour's surface before a warning."""
N_STARTS = 4
"""Best joint candidates re-simulated as the refinement's first batch."""


def check_interval(days_between) -> float:
    """``days_between`` as a float; InputError unless finite and > 0."""
    try:
        n = float(days_between)
    except (TypeError, ValueError):
        raise InputError(f"--days-between must be a number of days, got {days_between!r}") from None
    if not math.isfinite(n) or n <= 0:
        raise InputError(f"--days-between must be > 0 days (the later scan after the earlier), got {days_between!r}")
    return n


def check_same_grid(early: str | Path, later: str | Path) -> None:
    """InputError naming ``later`` unless both NIfTI files share shape and affine (:func:`common.grids.check_same_grid`)."""
    from gliofit.common.grids import check_same_grid as same_grid
    from gliofit.common.nifti import nib

    heads = []
    for p in (early, later):
        try:
            img = nib.load(str(p))
        except Exception as err:  # noqa: BLE001 - any reader failure is bad input
            raise InputError(f"{p}: cannot read NIfTI ({err})") from None
        heads.append((tuple(int(v) for v in img.shape[:3]), np.asarray(img.affine, dtype=np.float64)))
    same_grid(
        later,
        *heads[1],
        *heads[0],
        what="later scan",
        ref=f"the earlier scan {early} (register the later scan to the earlier one first)",
    )


def _surface_voxels(mask: np.ndarray) -> int:
    from scipy import ndimage

    return int(np.count_nonzero(mask & ~ndimage.binary_erosion(mask)))


def shrinkage_warning(early: Observation, later: Observation, voxel_mm: float = 1.0) -> str | None:
    """A warning when the later whole tumour is smaller than the earlier beyond segmentation noise.

    Allowed: the earlier volume minus :data:`SHRINK_BOUNDARY_MM` times its surface (atlas grid).
    """
    v_e, v_l = int(early.wt_atlas.sum()), int(later.wt_atlas.sum())
    allowed = v_e - SHRINK_BOUNDARY_MM / voxel_mm * _surface_voxels(early.wt_atlas)
    if v_l >= allowed:
        return None
    voxel_cm3 = voxel_mm**3 / 1000.0
    return (
        f"{later.source}: the later whole tumour ({v_l * voxel_cm3:.1f} cm³) is smaller than the earlier "
        f"({v_e * voxel_cm3:.1f} cm³) beyond segmentation noise (treatment or steroids?); the growth model "
        "assumes untreated growth"
    )


@dataclass
class PairCandidates:
    """Simulations scored against both scans, best joint score first.

    Attributes (n rows)
    -------------------
    simulation_id, entry_early, entry_later : (n,) int64.
    dice : (n, 2, 2) float64 Dice per scan (early, later) and region (whole tumour, core).
    thresholds : (n, 2) edema and core thresholds (those of the early entry's best Dice).
    score : (n,) joint score. D_mm2_per_day, rho_per_day, T_days (at the first scan): (n,) rescaled.
    sd_log_time_scale : (n,) how well the volumes fix the rescaling (:func:`~gliofit.inverse.two_scan_refine.scan_times`).
    origin_mm : (n, 3). n_entries : snapshots scored.
    """

    simulation_id: np.ndarray
    entry_early: np.ndarray
    entry_later: np.ndarray
    dice: np.ndarray
    thresholds: np.ndarray
    score: np.ndarray
    D_mm2_per_day: np.ndarray
    rho_per_day: np.ndarray
    T_days: np.ndarray
    sd_log_time_scale: np.ndarray
    origin_mm: np.ndarray
    n_entries: int

    def __len__(self) -> int:
        return len(self.score)


def _scores(
    db, wt, core, ids, rows_vol, edema, core_th, weights
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dice (n, 2), thresholds (n, 2), weighted score (n,) and translation (n, 3) database voxels of ``ids``,
    each at its best translation (:func:`~gliofit.inverse.query.shift_candidates`: every entry aligned, the
    best searched around the alignment); score zero outside the volume window."""
    lo, hi = volume_window(int(wt.sum()), 0.2)
    ok = (rows_vol >= lo) & (rows_vol <= hi)
    dice = np.zeros((len(ids), 2))
    th = np.tile([edema[len(edema) // 2], core_th[len(core_th) // 2]], (len(ids), 1))
    shifts = np.zeros((len(ids), 3), dtype=np.int64)
    if ok.any():
        sel = ids[ok]
        crops = db.read_visible(sel)
        dice[ok], th[ok], shifts[ok] = shift_candidates(db, wt, core, sel, crops, edema, core_th, weights)
    return dice, th, dice @ np.asarray(weights), shifts


def joint_candidates(
    db,
    early: tuple[np.ndarray, np.ndarray],
    later: tuple[np.ndarray, np.ndarray],
    days_between: float,
    *,
    top_k: int = DEFAULT_TOP_K,
    n_simulations: int = N_SIMULATIONS,
    weights=(0.5, 0.5),
    thresholds_search: bool = True,
) -> PairCandidates:
    """Score the database's simulations against two scans ``days_between`` apart (module docstring).

    ``early`` and ``later`` are (wt, core) bool masks on the database grid.
    """
    n_days = check_interval(days_between)
    w = check_weights(weights)
    sims = []
    for wt, core in (early, later):
        m = query(db, wt, core, top_k=top_k, weights=w, thresholds_search=thresholds_search)
        sims.append(db.entries["simulation_id"][db.rows_of(m.ids[:n_simulations])])
    e = db.entries
    sim_ids = np.unique(np.concatenate(sims))
    rows = np.flatnonzero(np.isin(e["simulation_id"], sim_ids))
    rows = rows[np.lexsort((e["T_days"][rows], e["simulation_id"][rows]))]
    ids, vol = e["id"][rows], e["wt_voxels"][rows]
    edema, core_th = threshold_grid(db.manifest.thresholds, thresholds_search)
    de, the, se, sh_e = _scores(db, *early, ids, vol, edema, core_th, w)
    dl, _, sl, sh_l = _scores(db, *later, ids, vol, edema, core_th, w)
    volumes = (float(early[0].sum()), float(later[0].sum()))
    log_sds = tuple(volume_log_sd(v, db.grid.voxel_volume_mm3) for v in volumes)
    out = []
    for sim in sim_ids:
        r = np.flatnonzero(e["simulation_id"][rows] == sim)
        best_later = np.maximum.accumulate(sl[r][::-1])[::-1]  # best later score at j >= k
        k = int(np.argmax(se[r] + best_later))
        j = k + int(np.argmax(sl[r][k:]))
        joint = 0.5 * (se[r][k] + sl[r][j])
        times, vox = e["T_days"][rows][r], e["wt_voxels"][rows][r]
        t_e, t_l, sd = scan_times(volumes, log_sds, vox, times)
        s = (t_l - t_e) / n_days
        row = rows[r[k]]
        shift_mm = 0.5 * (sh_e[r[k]] + sh_l[r[j]]) @ db.grid.affine[:3, :3].T
        out.append(
            (
                int(sim),
                int(ids[r[k]]),
                int(ids[r[j]]),
                np.stack([de[r[k]], dl[r[j]]]),
                the[r[k]],
                joint,
                e["D_mm2_per_day"][row] * s,
                e["rho_per_day"][row] * s,
                t_e / s,
                sd,
                np.array([e["origin_x_mm"][row], e["origin_y_mm"][row], e["origin_z_mm"][row]]) + shift_mm,
            )
        )
    out.sort(key=lambda c: (-c[5], c[0]))
    cols = list(zip(*out)) if out else [[]] * 11
    return PairCandidates(
        np.asarray(cols[0], dtype=np.int64),
        np.asarray(cols[1], dtype=np.int64),
        np.asarray(cols[2], dtype=np.int64),
        np.asarray(cols[3], dtype=np.float64).reshape(-1, 2, 2),
        np.asarray(cols[4], dtype=np.float64).reshape(-1, 2),
        np.asarray(cols[5], dtype=np.float64),
        np.asarray(cols[6], dtype=np.float64),
        np.asarray(cols[7], dtype=np.float64),
        np.asarray(cols[8], dtype=np.float64),
        np.asarray(cols[9], dtype=np.float64),
        np.asarray(cols[10], dtype=np.float64).reshape(-1, 3),
        len(ids),
    )


def _fit(d: np.ndarray, weights) -> dict:
    return {
        "dice_whole_tumor": float(d[0]),
        "dice_core": float(d[1]),
        "dice_mean": float(weights[0] * d[0] + weights[1] * d[1]),
    }


def _parameters(p: dict, T_days: float, thresholds) -> dict:
    out = {"D_mm2_per_day": float(p["D_mm2_per_day"]), "rho_per_day": float(p["rho_per_day"]), "T_days": float(T_days)}
    out.update(derived_parameters(out["D_mm2_per_day"], out["rho_per_day"], out["T_days"]))
    out["origin_mm"] = [float(v) for v in p["origin_mm"]]
    out["threshold_edema"], out["threshold_core"] = float(thresholds[0]), float(thresholds[1])
    return {k: out[k] for k in PARAMETER_KEYS}


def _densities(db, atlas, params: dict, times: list[float], density: str) -> list[np.ndarray]:
    """Densities on the atlas grid at ``times`` (days since onset), one solver run (db grid or 1 mm)."""
    from gliofit.growth.atlas import resample_atlas, to_atlas_grid
    from gliofit.growth.solver import simulate

    grid = resample_atlas(atlas, 1.0) if density == "resimulate" else db.grid
    ratio = float(db.manifest.design.get("diffusivity_ratio", 10.0))
    u = simulate(
        grid, [params["D_mm2_per_day"]], [params["rho_per_day"]], [params["origin_mm"]], times, diffusivity_ratio=ratio
    )[0]
    return [np.clip(to_atlas_grid(v, grid, atlas), 0.0, 1.0).astype(np.float32) for v in u]


def infer_two_scans(
    db,
    seg,
    seg_later,
    days_between,
    *,
    labels: str = "auto",
    core=None,
    core_later=None,
    t1=None,
    in_atlas_space: bool = False,
    registration=None,
    registration_later=None,
    top_k: int = DEFAULT_TOP_K,
    refine: bool = True,
    refine_budget: int = 64,
    weights=(0.5, 0.5),
    thresholds_search: bool = False,
    project_days: float | None = None,
    density: str = "upsample",
    calibration: str | Path | bool | None = None,
    atlas=None,
    seed: int = 0,
) -> TwoScanResult:
    """Personalise the growth model from two scans ``days_between`` days apart (module docstring).

    Parameters
    ----------
    db : a database directory or an open database.
    seg, seg_later : the earlier and the later segmentation (label maps, or whole-tumour masks with
        ``labels="masks"`` and ``core`` / ``core_later``), on the same grid.
    days_between : days from the earlier to the later scan (> 0).
    t1 : the patient's T1 on the earlier scan's grid (patient space; the later scan shares the grid, so one
        registration serves both). in_atlas_space, registration : as :func:`gliofit.infer`.
    registration_later : the later scan's own registration (``run`` registers it rigidly to the earlier
        scan, then through the earlier's transform); default: the earlier's.
    refine : fit D, rho, T and the seed point to both scans with the solver (``refine_budget`` runs).
    thresholds_search : search the imaging thresholds per candidate. Off by default: the rim between the
        whole-tumour and core contours is about ``lambda`` times a function of the two thresholds, so with
        free thresholds lambda, and with it D and rho separately, is not identified; the database's
        thresholds (the model's assumption, as in the single-scan fit without search) are used.
    project_days : also the density this many days after the later scan (``density_projected``).
    density : ``"upsample"`` (database grid) or ``"resimulate"`` (1 mm) for the densities.
    calibration : the two-scan calibration file (default ``DB/gliofit-calibration-two-scan.json``,
        :func:`~gliofit.inverse.two_scan_calibration.read_two_scan_calibration`); ``False``: none.
    """
    from gliofit.inverse.api import _open, atlas_of

    t0 = time.perf_counter()
    n_days = check_interval(days_between)
    if project_days is not None and not (math.isfinite(float(project_days)) and float(project_days) > 0):
        raise InputError(f"--project-days must be > 0 days, got {project_days!r}")
    if density not in ("upsample", "resimulate"):
        raise InputError(f"density must be upsample or resimulate, got {density!r}")
    check_same_grid(seg, seg_later)
    w = check_weights(weights)
    db = _open(db)
    atlas = atlas if atlas is not None else atlas_of(db)
    calib, cal_warning = (
        (None, None)
        if calibration is False
        else read_two_scan_calibration(db, None if calibration in (None, True) else calibration)
    )
    obs_e = observe(
        seg,
        grid=db.grid,
        atlas=atlas,
        labels=labels,
        core=core,
        t1=t1,
        in_atlas_space=in_atlas_space,
        registration=registration,
    )
    obs_l = observe(
        seg_later,
        grid=db.grid,
        atlas=atlas,
        labels=labels,
        core=core_later,
        registration=registration_later or obs_e.registration,
        in_atlas_space=obs_e.space == "atlas",
    )
    notes = [m for m in [shrinkage_warning(obs_e, obs_l, float(min(atlas.spacing_mm)))] if m]
    for m in notes:
        warnings.warn(m, stacklevel=2)
    load_s = time.perf_counter() - t0 - obs_e.timings_s["registration"] - obs_l.timings_s["registration"]
    tq = time.perf_counter()
    scans = ((obs_e.wt, obs_e.core), (obs_l.wt, obs_l.core))
    cands = joint_candidates(
        db, scans[0], scans[1], n_days, top_k=top_k, weights=w, thresholds_search=thresholds_search
    )
    if len(cands) == 0:
        raise InputError(f"{db.path}: the database returned no candidates (is it empty?)")
    query_s = time.perf_counter() - tq
    samples = Samples()
    samples.add(cands.D_mm2_per_day, cands.rho_per_day, cands.T_days, cands.origin_mm, cands.score)
    best = {
        "D_mm2_per_day": cands.D_mm2_per_day[0],
        "rho_per_day": cands.rho_per_day[0],
        "T_days": cands.T_days[0],
        "origin_mm": cands.origin_mm[0],
    }
    dice, thresholds = cands.dice[0], tuple(cands.thresholds[0])
    sd_log_s = float(cands.sd_log_time_scale[0])
    extra = {"candidates": len(cands), "entries_scored": cands.n_entries, "start_score": float(cands.score[0])}
    tr = time.perf_counter()
    if refine:
        others = [
            {
                "D_mm2_per_day": cands.D_mm2_per_day[i],
                "rho_per_day": cands.rho_per_day[i],
                "T_days": cands.T_days[i],
                "origin_mm": cands.origin_mm[i],
            }
            for i in range(1, min(N_STARTS, len(cands)))
        ]
        out = refine_two_scans(
            db.grid,
            scans,
            n_days,
            best,
            thresholds=thresholds,
            budget=refine_budget,
            weights=w,
            seed=seed,
            samples=samples,
            others=others,
        )
        extra["refine"] = {k: out[k] for k in ("score", "start_score", "n_forward_runs", "seconds")}
        best, dice, sd_log_s = out, np.asarray(out["dice"]), out["sd_log_time_scale"]
    refine_s = time.perf_counter() - tr
    T_e = float(best["T_days"])
    params = _parameters(best, T_e + n_days, thresholds)
    uncertainty, spread = two_scan_uncertainty(
        samples.arrays(), params, n_days, calib, float(db.manifest.resolution_mm), sd_log_s
    )
    timepoints = [
        {
            "scan": "earlier",
            "segmentation": str(obs_e.source),
            "days_after_first_scan": 0.0,
            "T_days": T_e,
            **{k: v for k, v in _parameters(best, T_e, thresholds).items() if k in ("mu_D_mm", "mu_rho")},
            "fit": _fit(dice[0], w),
        },
        {
            "scan": "later",
            "segmentation": str(obs_l.source),
            "days_after_first_scan": n_days,
            "T_days": T_e + n_days,
            "mu_D_mm": params["mu_D_mm"],
            "mu_rho": params["mu_rho"],
            "fit": _fit(dice[1], w),
        },
    ]
    times = [T_e + n_days] + ([T_e + n_days + float(project_days)] if project_days else [])
    density_fn = functools.lru_cache(maxsize=1)(functools.partial(_densities, db, atlas, params, times, density))
    matches = [
        {
            "rank": i + 1,
            "entry_id": int(cands.entry_later[i]),
            "simulation_id": int(cands.simulation_id[i]),
            "dice_whole_tumor": float(cands.dice[i, 1, 0]),
            "dice_core": float(cands.dice[i, 1, 1]),
            "entry_id_earlier": int(cands.entry_early[i]),
            "joint_score": float(cands.score[i]),
            "fit_earlier": _fit(cands.dice[i, 0], w),
            "parameters": _parameters(
                {
                    "D_mm2_per_day": cands.D_mm2_per_day[i],
                    "rho_per_day": cands.rho_per_day[i],
                    "origin_mm": cands.origin_mm[i],
                },
                cands.T_days[i] + n_days,
                cands.thresholds[i],
            ),
        }
        for i in range(min(10, len(cands)))
    ]
    timings = {
        "load": load_s,
        "segmentation": 0.0,
        "registration": obs_e.timings_s["registration"] + obs_l.timings_s["registration"],
        "query": query_s + refine_s,
        "total": time.perf_counter() - t0,
    }
    database = {
        "path": str(db.path),
        "entries": len(db.entries["id"]),
        "atlas": db.manifest.atlas,
        "resolution_mm": float(db.manifest.resolution_mm),
    }
    warns = notes + ([cal_warning] if cal_warning else [])
    extra.update(
        {"spread": spread, "sd_log_time_scale": sd_log_s, "refine_s": refine_s, "query_s": query_s, "warnings": warns}
    )
    return TwoScanResult(
        parameters=params,
        uncertainty=uncertainty,
        matches=matches,
        fit=_fit(dice[1], w),
        timings=timings,
        space=obs_l.space,
        database=database,
        observation=obs_l,
        atlas=atlas,
        density_fn=lambda: density_fn()[0],
        extra=extra,
        timepoints=timepoints,
        calibration=calibration_summary(calib, cal_warning, "the uncalibrated weighted quantiles of the samples"),
        days_between=n_days,
        project_days=project_days,
        projected_fn=(lambda: density_fn()[1]) if project_days else None,
    )
