"""The embedded default run, end to end and offline: database, synthetic patient, inference, report.

1. A small simulation database on the default atlas is built once under the cache folder
   (``~/.cache/gliofit`` or ``--cache``); :func:`~gliofit.simulations_db.build.build_database` resumes an
   interrupted build and does nothing when it is complete.
2. A patient is grown from known parameters (:data:`DEMO_PARAMETERS`) at 1 mm — another resolution than the
   database's — and segmented with noise (:mod:`gliofit.inverse.synthetic`); cached beside the database.
3. :func:`gliofit.infer` recovers the parameters; true against recovered values and the Dice are returned
   and ``OUT/`` receives result.json, report.png, the densities, the observed segmentation and truth.json.

The database is 2 mm (:data:`DEMO_RESOLUTION_MM`), 300 simulations (~1,900 entries): about 0.8 s of CPU per
simulation with the solver's default steps (measured on two shared cores), so the first run takes a few
minutes on two cores (all cores build in parallel).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from gliofit.common.errors import InputError

__all__ = ["DEMO_PARAMETERS", "DEMO_RESOLUTION_MM", "DEMO_SIMULATIONS", "default_cache", "run_demo",
           "comparison_rows"]

DEMO_PARAMETERS = {"D_mm2_per_day": 0.3, "rho_per_day": 0.04, "T_days": 250.0, "origin_mm": (-28.0, -12.0, 22.0)}
"""A left-frontal white-matter tumour of about 130 cm³ (whole tumour at 1 mm)."""
DEMO_RESOLUTION_MM = 2.0
"""Spacing of the demo database grid, mm."""
DEMO_SIMULATIONS = 300
"""Simulations in the demo database (about 1,900 entries)."""
DEMO_SEED = 7
"""Seed of the demo patient's segmentation noise."""


def default_cache() -> Path:
    """``$GLIOFIT_CACHE`` or ``~/.cache/gliofit``."""
    return Path(os.environ.get("GLIOFIT_CACHE", Path.home() / ".cache" / "gliofit"))


def _database(cache: Path, simulations: int, resolution_mm: float, progress: bool) -> tuple[Path, float]:
    from gliofit.simulations_db.build import build_database

    db = cache / f"demo-db-{resolution_mm:g}mm"
    t0 = time.perf_counter()
    build_database(db, simulations, resolution_mm=resolution_mm, progress=progress)
    return db, time.perf_counter() - t0


def _patient(cache: Path, atlas, resolution_mm: float, progress: bool):
    from gliofit.common.progress import progress_bar, time_reporter
    from gliofit.inverse.synthetic import grow_patient, read_patient

    case = cache / f"demo-patient-{resolution_mm:g}mm-seed{DEMO_SEED}"
    if (case / "truth.json").is_file():
        return case, read_patient(case, density=False), 0.0
    t0 = time.perf_counter()
    with progress_bar(disable=not progress) as bar:
        patient = grow_patient(atlas, DEMO_PARAMETERS, rng=np.random.default_rng(DEMO_SEED),
                               resolution_mm=resolution_mm, on_step=time_reporter(bar, "growing the patient"))
    patient.write(case)
    return case, patient, time.perf_counter() - t0


def comparison_rows(truth: dict, result) -> list[tuple[str, float, float, tuple[float, float]]]:
    """(name, true, recovered, 95% interval) for the identifiable and interpretable parameters."""
    rows = []
    for key in ("mu_D_mm", "mu_rho", "infiltration_length_mm", "velocity_mm_per_day", "D_mm2_per_day",
                "rho_per_day", "T_days"):
        ci = result.uncertainty.get(key, {}).get("ci95", [float("nan")] * 2)
        rows.append((key, float(truth[key]), float(result.parameters[key]), (float(ci[0]), float(ci[1]))))
    return rows


def _print_table(truth: dict, result, err) -> None:
    err("parameter                     true   recovered   95% interval")
    for name, t, r, (lo, hi) in comparison_rows(truth, result):
        err(f"{name:24s} {t:9.4g} {r:11.4g}   [{lo:.4g}, {hi:.4g}]")
    o = np.asarray(result.parameters["origin_mm"]) - np.asarray(truth["origin_mm"])
    err(f"origin error {np.linalg.norm(o):.1f} mm; Dice whole tumour {result.fit['dice_whole_tumor']:.3f}, "
        f"core {result.fit['dice_core']:.3f}, mean {result.fit['dice_mean']:.3f}")


def run_demo(out_dir: str | Path, *, cache: str | Path | None = None, simulations: int = DEMO_SIMULATIONS,
             resolution_mm: float = DEMO_RESOLUTION_MM, patient_resolution_mm: float = 1.0,
             progress: bool = True, echo=None) -> dict:
    """Build (once) the demo database, grow the demo patient, infer its parameters, write ``out_dir``.

    Parameters
    ----------
    out_dir : output folder (created): result.json, report.png, tumor_density*.nii.gz, seg.nii.gz, truth.json.
    cache : where the database and the patient are kept (default :func:`default_cache`).
    simulations, resolution_mm : size and grid spacing (mm) of the demo database.
    patient_resolution_mm : solver grid of the patient, mm (1 mm by default).
    progress : progress bars on stderr.
    echo : called with each line of the true-against-recovered table (default: print to stderr).

    Returns
    -------
    dict (JSON-ready): truth, recovered parameters, fit, database size, outputs, seconds per stage.
    """
    import sys

    import gliofit
    from gliofit.simulations_db.atlas import load_atlas

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output path is a file, not a folder")
    cache = Path(cache) if cache is not None else default_cache()
    t0 = time.perf_counter()
    db_path, build_s = _database(cache, int(simulations), float(resolution_mm), progress)
    atlas = load_atlas()
    case, patient, grow_s = _patient(cache, atlas, float(patient_resolution_mm), progress)
    db = gliofit.open_database(db_path)
    try:
        ti = time.perf_counter()
        result = gliofit.infer(db, case / "seg.nii.gz", in_atlas_space=True, atlas=atlas)
        infer_s = time.perf_counter() - ti
        files = result.save(out)
        entries = int(len(db.entries["id"]))
    finally:
        db.close()
    for name in ("seg.nii.gz", "truth.json"):
        shutil.copyfile(case / name, out / name)
    _print_table(patient.truth, result, echo or (lambda line: print(line, file=sys.stderr)))
    voxel_cm3 = atlas.voxel_volume_mm3 / 1000.0
    return {
        "truth": {k: patient.truth[k] for k in ("D_mm2_per_day", "rho_per_day", "T_days", "origin_mm", "mu_D_mm",
                                                "mu_rho", "infiltration_length_mm", "velocity_mm_per_day")},
        "recovered": result.parameters,
        "fit": result.fit,
        "origin_error_mm": round(float(np.linalg.norm(np.subtract(result.parameters["origin_mm"],
                                                                  patient.truth["origin_mm"]))), 3),
        "database": {"path": str(db_path), "entries": entries, "resolution_mm": float(resolution_mm)},
        "whole_tumor_cm3": round(float(patient.whole_tumor.sum()) * voxel_cm3, 2),
        "core_cm3": round(float(patient.core.sum()) * voxel_cm3, 2),
        "outputs": [str(p) for p in files.values()] + [str(out / "seg.nii.gz"), str(out / "truth.json")],
        "seconds": {"database": round(build_s, 2), "patient": round(grow_s, 2), "infer": round(infer_s, 2),
                    "total": round(time.perf_counter() - t0, 2)},
    }

