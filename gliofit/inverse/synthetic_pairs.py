"""Synthetic two-scan patients: one tumour grown by the solver and seen at two times, each scan with its own noise.

Built from :mod:`gliofit.inverse.synthetic`: the parameters come from :func:`sample_parameters` (the visible
tumour at the FIRST scan is realistic), the interval between the scans is drawn log-uniformly in
:data:`INTERVAL_DAYS`, a check simulation on a coarse grid refuses pairs whose later tumour exceeds
:data:`MAX_LATER_CM3` (larger than a database stores), one solver run at ``resolution_mm`` gives both
snapshots (T and T + interval), and each scan gets independent segmentation noise
(:func:`~gliofit.inverse.synthetic.segment_patient`: its own misregistration and boundary jitter).

>>> rng = np.random.default_rng(0)
>>> params = sample_pair(rng, resample_atlas(atlas, 4.0))             # doctest: +SKIP
>>> early, later = grow_pair(atlas, params, rng=rng)                   # doctest: +SKIP
>>> write_pair("case-000", early, later)                               # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gliofit.common.errors import InputError
from gliofit.common.units import DEFAULT_THRESHOLD_CORE, DEFAULT_THRESHOLD_EDEMA
from gliofit.growth.atlas import Atlas, resample_atlas, to_atlas_grid
from gliofit.growth.solver import simulate
from gliofit.inverse.synthetic import (
    SyntheticPatient,
    read_patient,
    sample_parameters,
    segment_patient,
    truth_record,
)

__all__ = ["INTERVAL_DAYS", "MAX_LATER_CM3", "grow_pair", "read_pair", "sample_pair", "write_pair"]

INTERVAL_DAYS = (20.0, 180.0)
"""Range of the interval between the two scans (log-uniform), days."""
MAX_LATER_CM3 = 300.0
"""Largest whole tumour accepted at the later scan, cm³ (a database stores snapshots up to ~300-400 cm³)."""


def sample_pair(
    rng: np.random.Generator,
    grid: Atlas,
    *,
    interval_days: tuple[float, float] = INTERVAL_DAYS,
    max_tries: int = 50,
    **kwargs,
) -> dict:
    """Parameters of a two-scan patient: :func:`sample_parameters` plus ``days_between``.

    ``grid`` is the coarse check grid; a draw whose later whole tumour there exceeds :data:`MAX_LATER_CM3`
    is drawn again. Keywords go to :func:`sample_parameters`.
    """
    for _ in range(max_tries):
        p = sample_parameters(rng, grid, **kwargs)
        n = float(np.exp(rng.uniform(*np.log(interval_days))))
        u = simulate(grid, [p["D_mm2_per_day"]], [p["rho_per_day"]], [p["origin_mm"]], [p["T_days"] + n])[0, 0]
        later_cm3 = float((u >= DEFAULT_THRESHOLD_EDEMA).sum()) * grid.voxel_volume_mm3 / 1000.0
        if later_cm3 <= MAX_LATER_CM3:
            return {**p, "days_between": n, "check_later_whole_tumor_cm3": round(later_cm3, 3)}
    raise InputError(f"no two-scan patient with a later tumour <= {MAX_LATER_CM3} cm³ in {max_tries} draws")


def grow_pair(
    atlas: Atlas,
    params: dict,
    *,
    rng: np.random.Generator,
    resolution_mm: float = 1.0,
    sim_grid: Atlas | None = None,
    thresholds: tuple[float, float] = (DEFAULT_THRESHOLD_EDEMA, DEFAULT_THRESHOLD_CORE),
    rim_mm: tuple[float, float] = (2.0, 5.0),
    jitter_voxels: tuple[float, float] = (1.0, 2.0),
    shift_mm: float = 2.0,
    rotation_deg: float = 2.0,
) -> tuple[SyntheticPatient, SyntheticPatient]:
    """Grow ``params`` (with ``days_between``) once and segment it at T and T + days_between.

    Returns the early and the later :class:`SyntheticPatient` (1 mm atlas grid); each truth records the
    common parameters, ``T_days`` at that scan, ``days_between`` and ``T_early_days``.
    """
    grid = sim_grid if sim_grid is not None else resample_atlas(atlas, resolution_mm)
    D, rho, T, n = (float(params[k]) for k in ("D_mm2_per_day", "rho_per_day", "T_days", "days_between"))
    if n <= 0:
        raise InputError(f"days_between must be > 0, got {n}")
    origin = np.asarray(params["origin_mm"], dtype=np.float64)
    u = simulate(grid, [D], [rho], [origin], [T, T + n])[0]
    scans = []
    for k, t in enumerate((T, T + n)):
        density = np.clip(to_atlas_grid(u[k], grid, atlas), 0.0, 1.0).astype(np.float32)
        truth = truth_record(
            D, rho, t, origin, thresholds=thresholds, resolution_mm=min(grid.spacing_mm), atlas=atlas.name
        )
        truth.update({"days_between": n, "T_early_days": T, "scan": ("early", "later")[k]})
        scans.append(
            segment_patient(
                atlas,
                density,
                truth,
                rng=rng,
                thresholds=thresholds,
                rim_mm=rim_mm,
                jitter_voxels=jitter_voxels,
                shift_mm=shift_mm,
                rotation_deg=rotation_deg,
            )
        )
    return scans[0], scans[1]


def write_pair(
    case_dir: str | Path, early: SyntheticPatient, later: SyntheticPatient, *, density: bool = False
) -> Path:
    """``case_dir/early`` and ``case_dir/later`` (each as :meth:`SyntheticPatient.write`), later last."""
    d = Path(case_dir)
    early.write(d / "early", density=density)
    later.write(d / "later", density=density)
    return d


def read_pair(case_dir: str | Path, *, density: bool = False) -> tuple[SyntheticPatient, SyntheticPatient]:
    """The pair written by :func:`write_pair`."""
    d = Path(case_dir)
    return read_patient(d / "early", density=density), read_patient(d / "later", density=density)
