"""``gliofit.infer``: from a segmentation to personalised parameters with uncertainty.

>>> import gliofit
>>> db = gliofit.open_database("DB")                        # doctest: +SKIP
>>> res = gliofit.infer(db, "seg.nii.gz")                   # doctest: +SKIP
>>> res.save("OUT")                                         # doctest: +SKIP
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np

from gliofit.common.errors import InputError
from gliofit.common.timing import Stopwatch
from gliofit.common.units import DEFAULT_DIFFUSIVITY_RATIO
from gliofit.inverse.calibration import calibrated_uncertainty, calibration_summary, read_calibration, spreads
from gliofit.inverse.density import DENSITY_METHODS, best_density, resimulated_density, seed_of, simulated_density
from gliofit.inverse.estimate import (
    entry_parameters,
    holding,
    match_weights,
    parameters_of,
    summarise,
    temperature,
)
from gliofit.inverse.observation import observe
from gliofit.inverse.query import DEFAULT_TOP_K, Matches, query
from gliofit.inverse.result import TIMING_KEYS, Result
from gliofit.growth.atlas import Atlas, load_atlas, to_atlas_grid

__all__ = [
    "METHODS",
    "N_MATCHES",
    "DEFAULT_REFINE_BUDGET",
    "REFINE_STARTS",
    "infer",
    "atlas_of",
    "check_refine",
    "shifted_origins",
]

METHODS = ("index", "exhaustive")
N_MATCHES = 10
"""Matches listed in result.json."""
DEFAULT_REFINE_BUDGET = 48
"""Forward runs of the default refinement (six batches of eight on the database grid: the starts, then
five CMA-ES generations)."""
REFINE_STARTS = 8
"""Matches of distinct simulations re-simulated as starts of the refinement (one solver batch)."""


@functools.lru_cache(maxsize=4)
def _load_atlas_cached(spec: str) -> Atlas:
    return load_atlas(spec)


def atlas_of(db) -> Atlas:
    """The 1 mm atlas a database was built on (loaded once per process); InputError if it changed."""
    atlas = _load_atlas_cached(str(db.manifest.atlas_spec))
    if atlas.name != db.manifest.atlas:
        raise InputError(
            f"{db.path}: database atlas {db.manifest.atlas} but {db.manifest.atlas_spec} now loads {atlas.name}"
        )
    return atlas


def _open(db):
    if isinstance(db, (str, Path)):
        from gliofit.simulations_db.database import open_database

        return open_database(db)
    return db


def check_refine(refine: bool, refine_budget) -> int:
    """The forward-run budget of the refinement (:data:`DEFAULT_REFINE_BUDGET` when not given);
    InputError for a budget < 1 or a budget without refinement."""
    if refine_budget is None:
        return DEFAULT_REFINE_BUDGET
    if not refine:
        raise InputError(
            f"refine_budget {refine_budget} given with no_refine: give one or the other",
            parameter=("refine_budget", "no_refine"),
        )
    try:
        b = int(refine_budget)
    except (TypeError, ValueError):
        raise InputError(
            f"refine_budget must be a whole number of forward runs, got {refine_budget!r}", parameter="refine_budget"
        ) from None
    if b != refine_budget or b < 1:
        raise InputError(
            f"refine_budget must be a whole number >= 1 of forward runs, got {refine_budget!r}",
            parameter="refine_budget",
        )
    return b


def _refined(db, atlas: Atlas, params: dict, out: dict, density: str):
    """Parameters and density function of a refine outcome (density simulated on the database grid and
    upsampled, or at 1 mm for ``density="resimulate"``)."""
    from gliofit.common.units import derived_parameters

    new = dict(params)
    new.update(
        {
            "D_mm2_per_day": float(out["D_mm2_per_day"]),
            "rho_per_day": float(out["rho_per_day"]),
            "T_days": float(out["T_days"]),
            "origin_mm": [float(v) for v in out["origin_mm"]],
        }
    )
    new.update(derived_parameters(new["D_mm2_per_day"], new["rho_per_day"], new["T_days"]))
    ratio = float(db.manifest.design.get("diffusivity_ratio", DEFAULT_DIFFUSIVITY_RATIO))

    def density_fn() -> np.ndarray:
        if density == "resimulate":
            return resimulated_density(new, atlas, diffusivity_ratio=ratio)
        return simulated_density(new, db.grid, atlas, diffusivity_ratio=ratio)

    return new, density_fn


def _other_starts(db, m: Matches, params: dict, n: int) -> list[dict]:
    """The best matches after the first, one per simulation other than the first's, at most ``n``."""
    sims = db.entries["simulation_id"][db.rows_of(m.ids)]
    seen = {int(sims[0])}
    out: list[dict] = []
    for i in range(1, len(m.ids)):
        if len(out) >= n:
            break
        if int(sims[i]) not in seen:
            seen.add(int(sims[i]))
            out.append(parameters_of(params, i))
    return out


def shifted_origins(db, origins_mm: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """(n, 3) seed points translated by ``shifts`` (n, 3) database voxels, world mm."""
    return np.asarray(origins_mm, dtype=np.float64) + np.asarray(shifts, dtype=np.float64) @ db.grid.affine[:3, :3].T


def _shifted_stored_density(db, entry_id: int, shift: np.ndarray, atlas: Atlas) -> np.ndarray:
    """The stored density translated by ``shift`` database voxels (zero where it moved in), upsampled."""
    u = db.density(int(entry_id))
    out = np.zeros_like(u)
    src, dst = [], []
    for s, n in zip((int(v) for v in shift), u.shape):
        src.append(slice(max(0, -s), n - max(0, s)))
        dst.append(slice(max(0, s), n - max(0, -s)))
    out[tuple(dst)] = u[tuple(src)]
    return np.clip(to_atlas_grid(out, db.grid, atlas), 0.0, 1.0).astype(np.float32)


def _fit(dice: np.ndarray, weights: tuple[float, float]) -> dict:
    return {
        "dice_whole_tumor": float(dice[0]),
        "dice_core": float(dice[1]),
        "dice_mean": float(weights[0] * dice[0] + weights[1] * dice[1]),
    }


def infer(
    db,
    seg,
    *,
    labels: str = "auto",
    core=None,
    t1=None,
    in_atlas_space: bool = False,
    top_k: int = DEFAULT_TOP_K,
    refine: bool = True,
    method: str = "index",
    weights=(0.5, 0.5),
    thresholds_search: bool = True,
    density: str = "upsample",
    atlas: Atlas | None = None,
    refine_budget: int | None = None,
    registration=None,
    shift: bool = True,
    calibration=None,
    progress: bool = False,
) -> Result:
    """Personalise the growth model for one segmentation.

    Parameters
    ----------
    db : a database directory or an open :class:`~gliofit.simulations_db.database.Database`.
    seg : label map NIfTI (BraTS 2021/2023) or the whole-tumour mask (``labels="masks"`` with ``core``).
    labels : ``auto``, ``brats2021``, ``brats2023`` or ``masks``.
    core : the core mask file (``labels="masks"``).
    t1 : the patient's T1 (patient-space input: registered to the atlas).
    in_atlas_space : the segmentation's affine is atlas world mm.
    top_k : candidates from the index (``method="index"``) or matches kept (``"exhaustive"``).
    refine : run the CMA-ES with the forward solver from the best (shift-aligned) match
        (:func:`gliofit.inverse.refine.refine`, ``refine_budget`` forward runs, default
        :data:`DEFAULT_REFINE_BUDGET`); the refined simulation is what is reported (parameters, fit,
        density), unless the best match is a stored simulation (no translation) that fits better: a
        translated match is no simulation that was run.
    method : ``"index"`` (FAISS + exact Dice, default) or ``"exhaustive"`` (the published baseline).
    weights : (whole tumour, core) weights of the mean Dice.
    thresholds_search : search the imaging thresholds per candidate (index method).
    density : ``"upsample"`` (default: the estimate solved uncropped on the database grid, interpolated to
        1 mm), ``"resimulate"`` (solved at 1 mm) or ``"stored"`` (the match's cropped stored density);
        :mod:`gliofit.inverse.density`.
    atlas : the database's atlas at 1 mm if already loaded (default: loaded from the manifest).
    registration : a registration of the patient to the atlas found beforehand (see
        :func:`~gliofit.inverse.observation.observe`); the density goes back through it.
    shift : score translations of each candidate (a continuous seed point, index method).
    calibration : the calibration file (default ``DB/gliofit-calibration.json``; ``False``: none).
    progress : progress bar for the exhaustive loop.
    """
    watch = Stopwatch(TIMING_KEYS[:-1])
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}", parameter="method")
    if density not in DENSITY_METHODS:
        raise InputError(f"density must be one of {', '.join(DENSITY_METHODS)}, got {density!r}", parameter="density")
    budget = check_refine(refine, refine_budget)
    with watch.stage("load"):
        db = _open(db)
        calib, warning = (None, None) if calibration is False else read_calibration(db, calibration)
        atlas = atlas if atlas is not None else atlas_of(db)
    obs = observe(
        seg,
        grid=db.grid,
        atlas=atlas,
        labels=labels,
        core=core,
        t1=t1,
        in_atlas_space=in_atlas_space,
        registration=registration,
    )
    for stage, seconds in obs.timings_s.items():
        watch.add(stage, seconds)
    spacing = float(db.manifest.resolution_mm)
    with watch.stage("query"):
        if method == "index":
            m = query(
                db, obs.wt, obs.core, top_k=top_k, weights=weights, thresholds_search=thresholds_search, shift=shift
            )
        else:
            from gliofit.inverse.baseline import exhaustive_query

            m = exhaustive_query(db, obs.wt, obs.core, top_k=top_k, weights=weights, progress=progress)
        if len(m.ids) == 0:
            raise InputError(f"{db.path}: the database returned no candidates (is it empty?)")
        params = entry_parameters(db, m.ids, m.thresholds)
        params["origin_mm"] = shifted_origins(db, params["origin_mm"], m.shifts)
        w = match_weights(m.mean_dice)
    best = parameters_of(params, 0)
    fit = _fit(m.dice[0], m.weights)
    best_id = int(m.ids[0])
    if m.shifts[0].any() and density == "stored":
        density_fn = functools.partial(_shifted_stored_density, db, best_id, m.shifts[0], atlas)
    else:
        density_fn = functools.partial(best_density, db, best_id, best, atlas, density)
    extra: dict[str, Any] = {
        "seed": seed_of(db.manifest),
        "method": method,
        "candidates": m.n_candidates,
        "scored": len(m.ids),
        "temperature": temperature(m.mean_dice),
        "effective_matches": float(1.0 / np.sum(w**2)),
        "match_fit": dict(fit),
        "warnings": [warning] if warning else [],
    }
    if refine:
        from gliofit.inverse.refine import refine as run_refine

        tr = time.perf_counter()
        out = run_refine(
            db.grid,
            obs.wt,
            obs.core,
            best,
            thresholds=(best["threshold_edema"], best["threshold_core"]),
            budget=budget,
            weights=m.weights,
            alternatives=_other_starts(db, m, params, REFINE_STARTS - 1),
        )
        # Report a simulation that was run: the refined one, unless the stored (untranslated) match fits better.
        adopt = bool(m.shifts[0].any()) or out["dice_mean"] > fit["dice_mean"]
        extra["refine"] = {**out, "seconds": time.perf_counter() - tr, "adopted": adopt}
        if adopt:
            best, density_fn = _refined(db, atlas, best, out, density)
            fit = _fit(np.array([out["dice_whole_tumor"], out["dice_core"]]), m.weights)
    spread = spreads(params, w, spacing)
    extra["spread"] = spread
    if calib is None:
        uncertainty = holding(summarise(params, w, origin_spacing_mm=spacing), best)
    else:
        uncertainty = calibrated_uncertainty(best, params, w, spread, calib["quantiles"])
    calibration_doc = calibration_summary(
        calib, warning, "the uncalibrated match summary (weighted quantiles, widened to hold the estimate)"
    )
    matches = _matches(db, m, params)
    timings = watch.timings()
    database = {
        "path": str(db.path),
        "entries": int(len(db.entries["id"])),
        "atlas": db.manifest.atlas,
        "resolution_mm": spacing,
    }
    return Result(
        parameters=best,
        uncertainty=uncertainty,
        matches=matches,
        fit=fit,
        timings=timings,
        space=obs.space,
        database=database,
        observation=obs,
        atlas=atlas,
        density_fn=density_fn,
        extra=extra,
        calibration=calibration_doc,
    )


def _matches(db, m: Matches, params: dict) -> list[dict]:
    rows = db.rows_of(m.ids[:N_MATCHES])
    sims = db.entries["simulation_id"][rows]
    return [
        {
            "rank": i + 1,
            "entry_id": int(m.ids[i]),
            "simulation_id": int(sims[i]),
            "dice_whole_tumor": float(m.dice[i, 0]),
            "dice_core": float(m.dice[i, 1]),
            "shift_voxels": [int(v) for v in m.shifts[i]],
            "parameters": parameters_of(params, i),
        }
        for i in range(len(rows))
    ]
