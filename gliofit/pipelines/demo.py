"""The embedded default run, end to end and offline: database, phantom patient, the whole pipeline.

1. A small simulation database on the default atlas is built once under the cache folder
   (``~/.cache/gliofit`` or ``--cache``); :func:`~gliofit.simulations_db.build.build_database` resumes an
   interrupted build and does nothing when it is complete.
2. A patient is grown from known parameters (:data:`DEMO_PARAMETERS`) at 1 mm — another resolution than the
   database's — and segmented with noise (:mod:`gliofit.inverse.synthetic`); its four MRI modalities are
   rendered from those labels (:func:`gliofit.segmentation.phantoms.render_phantom`) and written with the
   segmentation as a BraTS 2023 patient folder; cached beside the database.
3. :func:`gliofit.pipelines.run.run_patient` (``gliofit run``) registers, infers, plans and reports; ``OUT/``
   receives everything ``run`` writes plus truth.json, and :func:`table_lines` sets the true values against
   the recovered ones and their 95 % intervals, with a one-line :func:`verdict`.

The database is 2 mm (:data:`DEMO_RESOLUTION_MM`), 300 simulations (1,700 entries), built on all cores; the
first run takes minutes (benchmarks/RESULTS.md), later ones reuse it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gliofit.common.cache import cache_dir
from gliofit.common.errors import InputError
from gliofit.common.wording import unit

__all__ = [
    "DEMO_CASE",
    "DEMO_PARAMETERS",
    "DEMO_RESOLUTION_MM",
    "DEMO_SIMULATIONS",
    "RECOVERED_DICE_MEAN",
    "RECOVERED_ORIGIN_VOXELS",
    "Row",
    "run_demo",
    "comparison_rows",
    "interval_checks",
    "origin_error_mm",
    "table_lines",
    "verdict",
    "demo_database",
    "demo_patient_folder",
    "demo_simulations",
]

DEMO_PARAMETERS = {"D_mm2_per_day": 0.3, "rho_per_day": 0.04, "T_days": 250.0, "origin_mm": (-28.0, -12.0, 22.0)}
"""A left-frontal white-matter tumour of about 130 cm³ (whole tumour at 1 mm)."""
DEMO_RESOLUTION_MM = 2.0
"""Spacing of the demo database grid, mm."""
DEMO_SIMULATIONS = 300
"""Simulations in the demo database (1,700 entries)."""
DEMO_SEED = 7
"""Seed of the demo patient's segmentation noise."""


def demo_simulations() -> int:
    """``$GLIOFIT_DEMO_SIMULATIONS`` or :data:`DEMO_SIMULATIONS` (a smaller demo database for tests and
    slow machines; a larger one for a better fit)."""
    value = os.environ.get("GLIOFIT_DEMO_SIMULATIONS", "")
    try:
        n = int(value) if value else DEMO_SIMULATIONS
    except ValueError:
        raise InputError(f"GLIOFIT_DEMO_SIMULATIONS must be a positive integer, got {value!r}") from None
    if n < 1:
        raise InputError(f"GLIOFIT_DEMO_SIMULATIONS must be a positive integer, got {value!r}")
    return n


def demo_database(cache: str | Path | None = None, *, progress: bool = True) -> Path:
    """The demo database directory, built on first use (resumed if interrupted) under ``cache``."""
    return _database(Path(cache or cache_dir()), demo_simulations(), DEMO_RESOLUTION_MM, progress)[0]


def demo_patient_folder(cache: str | Path | None = None, *, progress: bool = True) -> Path:
    """The demo patient's BraTS 2023 folder (MRI, segmentation, truth.json), made on first use."""
    from gliofit.growth.atlas import load_atlas

    cache = Path(cache or cache_dir())
    atlas = load_atlas()
    _, patient, _ = _patient(cache, atlas, 1.0, progress)
    return _patient_folder(cache, atlas, patient, 1.0)


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
        patient = grow_patient(
            atlas,
            DEMO_PARAMETERS,
            rng=np.random.default_rng(DEMO_SEED),
            resolution_mm=resolution_mm,
            on_step=time_reporter(bar, "growing the patient"),
        )
    patient.write(case)
    return case, patient, time.perf_counter() - t0


DEMO_CASE = "DemoPatient"
"""Name of the demo's BraTS 2023 patient folder."""


def _patient_folder(cache: Path, atlas, patient, resolution_mm: float) -> Path:
    """The demo patient as a BraTS 2023 folder (four rendered modalities + its segmentation), made once."""
    from gliofit.segmentation.phantoms import THRESHOLD_NECROSIS, PhantomTruth, render_phantom, write_case

    root = cache / f"demo-patient-{resolution_mm:g}mm-seed{DEMO_SEED}-brats"
    folder = root / DEMO_CASE
    if (folder / "truth.json").is_file():
        return folder
    t = patient.truth
    truth = PhantomTruth(
        case=DEMO_CASE,
        seed=DEMO_SEED,
        D_mm2_per_day=t["D_mm2_per_day"],
        rho_per_day=t["rho_per_day"],
        T_days=t["T_days"],
        origin_mm=tuple(t["origin_mm"]),
        threshold_edema=t["threshold_edema"],
        threshold_core=t["threshold_core"],
        threshold_necrosis=THRESHOLD_NECROSIS,
        noise_sigma=0.03,
        bias_strength=0.1,
        scales=(1.0, 1.0, 1.0, 1.0),
    )
    images = render_phantom(atlas, patient.labels, truth, np.random.default_rng(DEMO_SEED))
    return write_case(
        root,
        truth,
        images,
        patient.labels,
        atlas.affine,
        "brats2023",
        extra={k: v for k, v in t.items() if k not in ("origin_mm",)},
    )


@dataclass(frozen=True)
class Row:
    """One row of the demo's table: a parameter, its unit, the true and recovered values, the 95 % interval."""

    name: str
    unit: str
    true: float
    recovered: float
    low: float
    high: float

    @property
    def inside(self) -> bool:
        """Whether the 95 % interval holds the true value (bounds included; False when the interval is NaN)."""
        return bool(self.low <= self.true <= self.high)


TABLE_PARAMETERS = (
    "mu_D_mm",
    "mu_rho",
    "infiltration_length_mm",
    "velocity_mm_per_day",
    "D_mm2_per_day",
    "rho_per_day",
    "T_days",
)
"""The parameters of the table, in order (the seed point's three axes follow)."""
RECOVERED_DICE_MEAN = 0.8
"""Least mean Dice (whole tumour and core) of a recovered demo patient."""
RECOVERED_ORIGIN_VOXELS = 2.0
"""Largest seed-point error of a recovered demo patient, in voxels of the database grid (4 mm at 2 mm)."""


def comparison_rows(truth: dict, result: dict) -> list[Row]:
    """The table's rows: :data:`TABLE_PARAMETERS`, then ``origin_x_mm``, ``origin_y_mm``, ``origin_z_mm``.

    ``truth``: the patient's true parameters (truth.json); ``result``: result.json as a dict. A parameter
    without an interval gets a NaN one (so its truth counts as outside).
    """
    nan = [float("nan")] * 2
    rows = []
    for key in TABLE_PARAMETERS:
        lo, hi = (result["uncertainty"].get(key) or {}).get("ci95", nan)
        rows.append(
            Row(key, unit(key) or "-", float(truth[key]), float(result["parameters"][key]), float(lo), float(hi))
        )
    lo3, hi3 = (result["uncertainty"].get("origin_mm") or {}).get("ci95", [[float("nan")] * 3] * 2)
    for a, axis in enumerate("xyz"):
        rows.append(
            Row(
                f"origin_{axis}_mm",
                unit("origin_mm"),
                float(truth["origin_mm"][a]),
                float(result["parameters"]["origin_mm"][a]),
                float(lo3[a]),
                float(hi3[a]),
            )
        )
    return rows


def interval_checks(truth: dict, result: dict) -> dict[str, bool]:
    """Whether the 95 % interval holds the truth, per row of :func:`comparison_rows`."""
    return {row.name: row.inside for row in comparison_rows(truth, result)}


def origin_error_mm(truth: dict, result: dict) -> float:
    """Distance between the true and the recovered seed point, mm."""
    return float(np.linalg.norm(np.subtract(result["parameters"]["origin_mm"], truth["origin_mm"])))


def verdict(truth: dict, result: dict) -> str:
    """One line: ``recovered`` when the seed point lies within :data:`RECOVERED_ORIGIN_VOXELS` voxels of the
    database grid and the mean Dice reaches :data:`RECOVERED_DICE_MEAN`, else ``not recovered`` with what
    missed; then how many 95 % intervals hold the truth."""
    error = origin_error_mm(truth, result)
    limit = RECOVERED_ORIGIN_VOXELS * float(result["database"]["resolution_mm"])
    dice = float(result["fit"]["dice_mean"])
    origin_ok, dice_ok = error <= limit, dice >= RECOVERED_DICE_MEAN
    parts = [
        f"origin error {error:.1f} mm {'<=' if origin_ok else '>'} {limit:g} mm",
        f"mean Dice {dice:.3f} {'>=' if dice_ok else '<'} {RECOVERED_DICE_MEAN:g}",
    ]
    checks = interval_checks(truth, result)
    head = "recovered" if origin_ok and dice_ok else "not recovered"
    return f"{head}: {', '.join(parts)}; truth inside {sum(checks.values())} of {len(checks)} 95% intervals"


def _number(x: float) -> str:
    return f"{x:.4g}"


def table_lines(truth: dict, result: dict) -> list[str]:
    """The demo's table (header, one row per parameter with its unit and whether the 95 % interval holds the
    truth), the Dice line and the :func:`verdict`."""
    lines = [f"{'parameter':24s} {'unit':8s} {'true':>9s} {'recovered':>10s}   {'95% interval':22s} truth"]
    for r in comparison_rows(truth, result):
        interval = f"[{_number(r.low)}, {_number(r.high)}]"
        lines.append(
            f"{r.name:24s} {r.unit:8s} {_number(r.true):>9s} {_number(r.recovered):>10s}   {interval:22s} "
            f"{'inside' if r.inside else 'OUTSIDE'}"
        )
    fit = result["fit"]
    lines.append(
        f"Dice whole tumour {fit['dice_whole_tumor']:.3f}, core {fit['dice_core']:.3f}, mean {fit['dice_mean']:.3f}"
    )
    lines.append(verdict(truth, result))
    return lines


def run_demo(
    out_dir: str | Path,
    *,
    cache: str | Path | None = None,
    simulations: int = DEMO_SIMULATIONS,
    resolution_mm: float = DEMO_RESOLUTION_MM,
    patient_resolution_mm: float = 1.0,
    registration: str = "syn",
    progress: bool = True,
    on_stage: Callable[[str], None] | None = None,
) -> dict:
    """Build (once) the demo database and patient folder, run the whole pipeline on it, write ``out_dir``.

    Parameters
    ----------
    out_dir : output folder (replaced when complete): everything ``gliofit run`` writes, and truth.json.
    cache : where the database and the patient are kept (default :func:`gliofit.common.cache.cache_dir`).
    simulations, resolution_mm : size and grid spacing (mm) of the demo database.
    patient_resolution_mm : solver grid of the patient, mm (1 mm by default).
    registration : ``syn``, ``affine`` or ``none`` (:func:`gliofit.pipelines.run.run_patient`).
    progress : progress bars on stderr.
    on_stage : called with each stage's name of the run as it begins (:func:`gliofit.pipelines.run.run_patient`).

    Returns
    -------
    dict (JSON-ready): truth, recovered parameters, fit, the 95 % interval checks and the :func:`verdict`,
    warnings, database size, outputs, seconds per stage. :func:`table_lines` of ``OUT/truth.json`` and
    ``OUT/result.json`` puts it in words.
    """
    from gliofit.pipelines.run import output_folder_ready, run_patient
    from gliofit.growth.atlas import load_atlas

    out = output_folder_ready(out_dir)
    cache = Path(cache) if cache is not None else cache_dir()
    t0 = time.perf_counter()
    db_path, build_s = _database(cache, int(simulations), float(resolution_mm), progress)
    atlas = load_atlas()
    _, patient, grow_s = _patient(cache, atlas, float(patient_resolution_mm), progress)
    folder = _patient_folder(cache, atlas, patient, float(patient_resolution_mm))
    tr = time.perf_counter()
    result = run_patient(folder, db_path, out, registration=registration, atlas=atlas, on_stage=on_stage)
    run_s = time.perf_counter() - tr
    shutil.copyfile(folder / "truth.json", out / "truth.json")
    voxel_cm3 = atlas.voxel_volume_mm3 / 1000.0
    return {
        "truth": {
            k: patient.truth[k]
            for k in (
                "D_mm2_per_day",
                "rho_per_day",
                "T_days",
                "origin_mm",
                "mu_D_mm",
                "mu_rho",
                "infiltration_length_mm",
                "velocity_mm_per_day",
            )
        },
        "recovered": result["parameters"],
        "fit": result["fit"],
        "interval_check_95": interval_checks(patient.truth, result),
        "origin_error_mm": round(origin_error_mm(patient.truth, result), 3),
        "verdict": verdict(patient.truth, result),
        "warnings": result.get("warnings", []),
        "database": result["database"],
        "patient_folder": str(folder),
        "whole_tumor_cm3": round(float(patient.whole_tumor.sum()) * voxel_cm3, 2),
        "core_cm3": round(float(patient.core.sum()) * voxel_cm3, 2),
        "plan": result.get("plan"),
        "outputs": sorted(str(p) for p in out.rglob("*") if p.is_file()),
        "timings_s": result["timings_s"],
        "seconds": {
            "database": round(build_s, 2),
            "patient": round(grow_s, 2),
            "run": round(run_s, 2),
            "total": round(time.perf_counter() - t0, 2),
        },
    }
