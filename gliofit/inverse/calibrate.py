"""``gliofit db calibrate``: fit a database's calibration from synthetic patients run through :func:`infer`.

Apart from :mod:`gliofit.inverse.calibration` because it drives :func:`~gliofit.inverse.api.infer`, which
reads calibrations through that module.
"""

from __future__ import annotations

import json
from pathlib import Path

from gliofit.common.errors import InputError
from gliofit.inverse.calibration import calibration_record, write_calibration

__all__ = ["calibrate"]


def calibrate(
    db,
    *,
    patients: int = 40,
    seed: int = 90_001,
    patient_resolution_mm: float = 1.5,
    patients_dir: str | Path | None = None,
    refine_budget: int | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Grow ``patients`` synthetic patients (cached in ``patients_dir``, default ``DB/calibration-patients``),
    infer each with the default settings (refinement on, no calibration), fit and write the calibration.

    Returns ``{"path", "patients", "quantiles", "coverage50", "coverage95", "seconds"}``.
    """
    import time

    from gliofit.common.progress import progress_bar
    from gliofit.inverse.api import atlas_of, check_refine, infer
    from gliofit.inverse.synthetic import grow_cohort, read_patient
    from gliofit.simulations_db.database import open_database

    if isinstance(db, (str, Path)):
        db = open_database(db)
    if int(patients) < 2:
        raise InputError(f"--patients must be >= 2, got {patients}")
    if not float(patient_resolution_mm) > 0:
        raise InputError(f"--patient-resolution must be > 0 mm, got {patient_resolution_mm}")
    check_refine(True, refine_budget)
    t0 = time.perf_counter()
    atlas = atlas_of(db)
    root = (
        Path(patients_dir)
        if patients_dir
        else Path(db.path) / "calibration-patients" / (f"seed{seed}-{patient_resolution_mm:g}mm")
    )
    cases, _ = grow_cohort(
        root,
        patients,
        seed,
        atlas,
        resolution_mm=patient_resolution_mm,
        check_mm=max(4.0, float(patient_resolution_mm)),
        progress=progress,
    )
    records = []
    with progress_bar(disable=not progress) as bar:
        task = bar.add_task("calibrating", total=len(cases))
        for case in cases:
            patient = read_patient(case, density=False)
            res = infer(
                db,
                case / "seg.nii.gz",
                in_atlas_space=True,
                atlas=atlas,
                calibration=False,
                refine_budget=refine_budget,
            )
            records.append(calibration_record(res, patient.truth, case.name))
            bar.update(task, advance=1)
    settings = {
        "seed": int(seed),
        "patient_resolution_mm": float(patient_resolution_mm),
        "refine_budget": refine_budget,
        "patients_dir": str(root),
    }
    path = write_calibration(db, records, settings, out)
    doc = json.loads(path.read_text())
    return {
        "path": str(path),
        "patients": len(records),
        "quantiles": doc["quantiles"],
        "coverage50": doc["coverage50"],
        "coverage95": doc["coverage95"],
        "seconds": round(time.perf_counter() - t0, 1),
    }
