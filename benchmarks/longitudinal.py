"""Two scans against one: D, rho and T separately from a pair of scans, on synthetic patient pairs.

Pairs (``gliofit.inverse.synthetic_pairs``): parameters from the FACTS.md reference ranges with a realistic
visible tumour at the first scan (``sample_parameters`` of benchmarks/inverse.py), an interval drawn
log-uniformly in 20-180 days, both scans from ONE solver run at ``--patient-resolution`` (1 mm), each with its
own segmentation noise (the noise model of benchmarks/inverse.py: boundary jitter 1-2 voxels, misregistration
<= 2 mm and <= 2 degrees); cached under ``--cache``.

On one database, in one process, per pair: the single-scan estimate (``gliofit.infer`` on the LATER scan, its
defaults) and the two-scan estimate (``infer_two_scans``, refinement on). Reported (median and IQR): relative
errors at the later scan of D, rho, T, the infiltration length sqrt(D/rho), mu_D, mu_rho and the front speed,
the origin error, Dice per scan; seconds per patient (wall and CPU: the machine may be shared); errors by
interval (20-40, 40-100, 100-180 days). Intervals: the single-scan calibration method
(``gliofit.inverse.calibration``), fitted on ``--calibration-pairs`` OTHER pairs (``--calibration-seed``, run
uncalibrated) and written to ``--calibration-out`` (default ``CACHE/gliofit-calibration-two-scan.json``; copy
it into the database folder to use it); the test pairs then run with it, and the coverage is the share of
their printed 50 % and 95 % intervals (result.json ``ci50``, ``ci95``) that hold the truth. (A leave-one-out
coverage on the calibration pairs themselves is ``ceil((n + 1) level) / n``-like by construction for
exchangeable errors, not a measurement.)

    python benchmarks/longitudinal.py [--quick] [--pairs N] [--calibration-pairs M] [--db DIR] [--cache DIR]
                                      [--patient-resolution MM] [--refine-budget K] [--seed S] [--jobs J]

Ends with one line ``BENCH {json}``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from gliofit.inverse.calibration import write_calibration
from gliofit.inverse.two_scan_calibration import CALIBRATION_FILE

CACHE = Path(os.environ.get("GLIOFIT_CACHE", Path.home() / ".cache" / "gliofit"))


def ensure_pairs(
    root: Path, n: int, seed: int, atlas, resolution_mm: float, check_mm: float
) -> tuple[list[Path], float]:
    """Pair folders ``root/pair-XXX`` (grown when missing); returns (folders, seconds spent growing)."""
    from gliofit.common.progress import progress_bar
    from gliofit.growth.atlas import resample_atlas
    from gliofit.inverse.synthetic import SEED_DRAWS, grid_tissue_ok
    from gliofit.inverse.synthetic_pairs import grow_pair, sample_pair, write_pair

    cases = [root / f"pair-{i:03d}" for i in range(n)]
    missing = [c for c in cases if not (c / "later" / "truth.json").is_file()]
    if not missing:
        return cases, 0.0
    t0 = time.perf_counter()
    sim_grid = resample_atlas(atlas, resolution_mm)
    check_grid = resample_atlas(atlas, check_mm)
    with progress_bar() as bar:
        task = bar.add_task("growing patient pairs", total=len(missing))
        for case in missing:
            i = int(case.name.split("-")[1])
            for attempt in range(SEED_DRAWS):  # the seed point must lie in tissue on the growth grid too
                key = [seed, i] if attempt == 0 else [seed, i, 100 + attempt]
                rng = np.random.default_rng(key)
                params = sample_pair(rng, check_grid)
                if grid_tissue_ok(sim_grid, params["origin_mm"]):
                    break
            early, later = grow_pair(atlas, params, rng=rng, resolution_mm=resolution_mm, sim_grid=sim_grid)
            for p in (early, later):
                p.truth["case"] = case.name
                p.truth["sample"] = {
                    "seed": key,
                    "check_grid_mm": check_mm,
                    **{k: v for k, v in params.items() if k.startswith("check_")},
                }
            write_pair(case, early, later)
            bar.update(task, advance=1)
    return cases, time.perf_counter() - t0


TARGETS = {
    "rel_error_D": 0.25,
    "rel_error_rho": 0.25,
    "rel_error_T": 0.20,
    "rel_error_infiltration": 0.20,
    "coverage95": (0.90, 0.98),
    "seconds_per_patient": 20.0,
}
ERROR_KEYS = (
    "D_mm2_per_day",
    "rho_per_day",
    "T_days",
    "infiltration_length_mm",
    "mu_D_mm",
    "mu_rho",
    "velocity_mm_per_day",
)
COVERAGE_TARGET_KEYS = ("D_mm2_per_day", "rho_per_day", "T_days", "infiltration_length_mm")
INTERVAL_BINS = ((20.0, 40.0), (40.0, 100.0), (100.0, 180.01))
SHARED_DB = Path("/work/cache/db-2mm")
QUICK_DB_SIMULATIONS, QUICK_DB_RESOLUTION_MM = 150, 6.0


def _args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 pairs grown at 3 mm on a 6 mm database of 150 simulations")
    ap.add_argument("--pairs", type=int, help="synthetic pairs (default 50; quick 4)")
    ap.add_argument(
        "--db",
        type=Path,
        help="database directory (default: the shared 2 mm database when ready, else one built under --cache)",
    )
    ap.add_argument("--cache", type=Path, default=CACHE / "bench-longitudinal", help="cache of pairs and databases")
    ap.add_argument("--patient-resolution", type=float, help="growth grid of the pairs, mm (default 1; quick 3)")
    ap.add_argument("--refine-budget", type=int, help="forward runs of the two-scan refinement (default 64; quick 24)")
    ap.add_argument("--seed", type=int, default=2024, help="seed of the synthetic pairs")
    ap.add_argument("--jobs", type=int, default=1, help="pairs run at once, one process each (default 1)")
    ap.add_argument("--calibration-pairs", type=int, help="pairs the calibration is fitted on (default 50; quick 4)")
    ap.add_argument("--calibration-seed", type=int, help="seed of the calibration pairs (default --seed + 1)")
    ap.add_argument(
        "--time-limit",
        type=float,
        help="start no further pair after this many seconds (the pairs done are summarised; the count is reported)",
    )
    ap.add_argument(
        "--calibration-out",
        type=Path,
        help=f"two-scan calibration written here (default CACHE/{CALIBRATION_FILE}; copy it into the database folder)",
    )
    ap.add_argument(
        "--grown-only",
        action="store_true",
        help="use only the pairs of the first --pairs already grown in the cache (grow none)",
    )
    a = ap.parse_args(argv)
    a.pairs = a.pairs or (4 if a.quick else 50)
    a.calibration_pairs = a.calibration_pairs or (4 if a.quick else 50)
    a.calibration_seed = a.seed + 1 if a.calibration_seed is None else a.calibration_seed
    a.patient_resolution = a.patient_resolution or (3.0 if a.quick else 1.0)
    a.refine_budget = a.refine_budget or (24 if a.quick else 64)
    return a


def database(a: argparse.Namespace) -> Path:
    """The database to run on (built under the cache for ``--quick`` or when the shared one is not ready)."""
    from gliofit.simulations_db.build import build_database
    from gliofit.simulations_db.design import SnapshotRule

    if a.db:
        return a.db
    if not a.quick and Path(str(SHARED_DB) + ".READY").exists():
        return SHARED_DB
    n, res = (QUICK_DB_SIMULATIONS, QUICK_DB_RESOLUTION_MM) if a.quick else (1000, 4.0)
    path = a.cache / f"db-{res:g}mm-{n}"
    build_database(
        path,
        n,
        resolution_mm=res,
        seed=0,
        workers=1,
        snapshots=SnapshotRule(count=20 if not a.quick else 10),
        progress=True,
    )
    return path


def _rel(est: float, truth: float) -> float:
    return abs(float(est) / float(truth) - 1.0)


def pair_metrics(single, two, truth: dict) -> dict:
    """Errors of both estimates against the truth at the later scan, and the two-scan fit per scan."""
    row = {"days_between": truth["days_between"], "whole_tumor_cm3_early": None}
    for k in ERROR_KEYS:
        row[f"two_{k}"] = _rel(two.parameters[k], truth[k])
        row[f"one_{k}"] = _rel(single.parameters[k], truth[k])
    o_true = np.asarray(truth["origin_mm"])
    row["two_origin_mm"] = float(np.linalg.norm(np.asarray(two.parameters["origin_mm"]) - o_true))
    row["one_origin_mm"] = float(np.linalg.norm(np.asarray(single.parameters["origin_mm"]) - o_true))
    row["two_dice_earlier"] = two.timepoints[0]["fit"]["dice_mean"]
    row["two_dice_later"] = two.timepoints[1]["fit"]["dice_mean"]
    row["one_dice_later"] = single.fit["dice_mean"]
    return row


def _median_iqr(v) -> list[float]:
    v = np.asarray([x for x in v if x is not None], dtype=np.float64)
    if v.size == 0:
        return [float("nan")] * 3
    return [float(np.median(v)), float(np.quantile(v, 0.25)), float(np.quantile(v, 0.75))]


def summarise(rows: list[dict]) -> dict:
    out = {}
    for who in ("one", "two"):
        for k in (*ERROR_KEYS, "origin_mm"):
            out[f"{who}_{k}"] = _median_iqr([r[f"{who}_{k}"] for r in rows])
    for k in ("two_dice_earlier", "two_dice_later", "one_dice_later", "seconds_two", "cpu_seconds_two", "seconds_one"):
        out[k] = _median_iqr([r[k] for r in rows])
    out["by_interval"] = {}
    for lo, hi in INTERVAL_BINS:
        sub = [r for r in rows if lo <= r["days_between"] < hi]
        out["by_interval"][f"{lo:g}-{hi:.0f} d"] = {
            "pairs": len(sub),
            **{
                k: _median_iqr([r[f"two_{k}"] for r in sub])[0]
                for k in ("D_mm2_per_day", "rho_per_day", "T_days", "infiltration_length_mm")
            },
        }
    return out


@functools.lru_cache(maxsize=1)
def _opened(db_path: str):
    """The database and the ICBM152 atlas, once per process."""
    import gliofit
    from gliofit.growth.atlas import load_atlas

    return gliofit.open_database(db_path), load_atlas("icbm152")


def run_pair(db_path: str, case: Path, refine_budget: int, calibration: str | bool) -> dict:
    """One pair: the single-scan estimate on the later scan and the two-scan estimate (``calibration``: its
    file, or False for none), their errors, times and which printed intervals hold the truth."""
    from _shared import covered

    import gliofit
    from gliofit.inverse.calibration import calibration_record
    from gliofit.inverse.longitudinal import infer_two_scans

    db, atlas = _opened(db_path)
    truth = json.loads((case / "later" / "truth.json").read_text())
    early, later = case / "early" / "seg.nii.gz", case / "later" / "seg.nii.gz"
    t0, c0 = time.perf_counter(), time.process_time()
    single = gliofit.infer(db, later, in_atlas_space=True, atlas=atlas)
    t1, c1 = time.perf_counter(), time.process_time()
    two = infer_two_scans(
        db,
        early,
        later,
        truth["days_between"],
        in_atlas_space=True,
        atlas=atlas,
        refine_budget=refine_budget,
        calibration=calibration,
    )
    t2, c2 = time.perf_counter(), time.process_time()
    row = pair_metrics(single, two, truth)
    row["record"] = calibration_record(two, truth, case.name)
    for level in ("ci95", "ci50"):
        row.update(
            {f"covered{level[2:]}_{k}": v for k, v in covered(two.uncertainty, truth, level, ERROR_KEYS).items()}
        )
    row.update(
        {
            "case": case.name,
            "seconds_one": t1 - t0,
            "seconds_two": t2 - t1,
            "cpu_seconds_two": c2 - c1,
            "cpu_seconds_one": c1 - c0,
            "sd_log_time_scale": two.extra.get("sd_log_time_scale"),
            "whole_tumor_cm3_early": json.loads((case / "early" / "truth.json").read_text())["whole_tumor_cm3"],
            "whole_tumor_cm3_later": truth["whole_tumor_cm3"],
        }
    )
    return row


def _print_row(row: dict) -> None:
    print(
        f"{row['case']}: N {row['days_between']:.0f} d, D err {row['two_D_mm2_per_day']:.2f} "
        f"(one scan {row['one_D_mm2_per_day']:.2f}), rho {row['two_rho_per_day']:.2f}, T {row['two_T_days']:.2f}, "
        f"lambda {row['two_infiltration_length_mm']:.2f} (one {row['one_infiltration_length_mm']:.2f}), "
        f"Dice {row['two_dice_earlier']:.2f}/{row['two_dice_later']:.2f}, {row['seconds_two']:.1f} s "
        f"({row['cpu_seconds_two']:.1f} s CPU)",
        file=sys.stderr,
        flush=True,
    )


def run_pairs(db_path: Path, cases: list[Path], a: argparse.Namespace, calibration: str | bool) -> list[dict]:
    """Rows of every pair, in order; ``--jobs`` pairs at once (each one process), ``--time-limit`` respected."""
    from gliofit.common.executors import make_executor

    ex = make_executor(workers=a.jobs)
    rows: dict[str, dict] = {}
    pending, running = list(cases), {}
    t_start = time.perf_counter()
    try:
        while pending or running:
            late = a.time_limit is not None and time.perf_counter() - t_start > a.time_limit
            while pending and len(running) < ex.slots and not late:
                case = pending.pop(0)
                running[ex.submit(run_pair, str(db_path), case, a.refine_budget, calibration)] = case
            if not running:
                break
            for fut in ex.wait_first(list(running)):
                running.pop(fut)
                row = fut.result()
                rows[row["case"]] = row
                _print_row(row)
    finally:
        ex.close()
    if len(rows) < len(cases):
        print(f"time limit: {len(rows)} of {len(cases)} pairs run", file=sys.stderr)
    return [rows[c.name] for c in cases if c.name in rows]


def _cases(a: argparse.Namespace, n: int, seed: int) -> tuple[list[Path], float]:
    """The first ``n`` pair folders of ``seed`` (grown when missing unless ``--grown-only``), growing seconds."""
    from gliofit.growth.atlas import load_atlas

    root = a.cache / f"pairs-{a.patient_resolution:g}mm-seed{seed}"
    if a.grown_only:
        cases = [root / f"pair-{i:03d}" for i in range(n)]
        return [c for c in cases if (c / "later" / "truth.json").is_file()], 0.0
    return ensure_pairs(root, n, seed, load_atlas("icbm152"), a.patient_resolution, 4.0)


def coverage(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Share of the pairs whose printed interval holds the truth, per level and key."""
    keys = [k[len("covered95_") :] for k in rows[0] if k.startswith("covered95_")] if rows else []
    return {
        f"coverage{lv}": {k: float(np.mean([r[f"covered{lv}_{k}"] for r in rows])) for k in keys} for lv in ("95", "50")
    }


def run(a: argparse.Namespace) -> dict:
    import gliofit
    from gliofit.inverse.calibration import fit_quantiles

    cal_cases, grow_cal = _cases(a, a.calibration_pairs, a.calibration_seed)
    cases, grow_s = _cases(a, a.pairs, a.seed)
    db_path = database(a)
    db = gliofit.open_database(db_path)
    print(f"calibration: {len(cal_cases)} pairs of seed {a.calibration_seed}", file=sys.stderr)
    cal_rows = run_pairs(db_path, cal_cases, a, False)
    records = [r["record"] for r in cal_rows]
    settings = {"pairs": len(records), "seed": a.calibration_seed, "patient_resolution_mm": a.patient_resolution}
    settings["refine_budget"] = a.refine_budget
    cal_path = str(write_calibration(db, records, settings, a.calibration_out or a.cache / CALIBRATION_FILE))
    print(f"test: {len(cases)} pairs of seed {a.seed}, intervals from {cal_path}", file=sys.stderr)
    rows = run_pairs(db_path, cases, a, cal_path)
    summary = summarise(rows)
    summary.update(coverage(rows))
    summary["quantiles"] = fit_quantiles(records)
    info = db.info()
    return {
        "pairs": len(rows),
        "calibration_pairs": len(cal_rows),
        "jobs": a.jobs,
        "grow_seconds": grow_s + grow_cal,
        "database": {"path": str(db_path), "entries": info["entries"], "resolution_mm": info["resolution_mm"]},
        "refine_budget": a.refine_budget,
        "summary": summary,
        "calibration_file": cal_path,
        "rows": rows,
        "calibration_rows": cal_rows,
    }


def check_targets(s: dict) -> dict:
    cov = [v for k, v in s["coverage95"].items() if k in COVERAGE_TARGET_KEYS]
    return {
        "D": s["two_D_mm2_per_day"][0] <= TARGETS["rel_error_D"],
        "rho": s["two_rho_per_day"][0] <= TARGETS["rel_error_rho"],
        "T": s["two_T_days"][0] <= TARGETS["rel_error_T"],
        "infiltration": s["two_infiltration_length_mm"][0] <= TARGETS["rel_error_infiltration"],
        "coverage95": bool(cov) and all(TARGETS["coverage95"][0] <= c <= TARGETS["coverage95"][1] for c in cov),
        "seconds_cpu": s["cpu_seconds_two"][0] <= TARGETS["seconds_per_patient"],
    }


def print_table(r: dict) -> None:
    s = r["summary"]
    print(
        f"{r['pairs']} pairs, database {r['database']['path']} ({r['database']['entries']} entries, "
        f"{r['database']['resolution_mm']:g} mm), refine budget {r['refine_budget']}",
        file=sys.stderr,
    )
    print(f"{'median rel. error [IQR]':32s} {'two scans':>24s} {'one scan (later)':>24s}", file=sys.stderr)
    for k in (*ERROR_KEYS, "origin_mm"):
        two, one = s[f"two_{k}"], s[f"one_{k}"]
        print(
            f"{k:32s} {two[0]:8.3f} [{two[1]:.3f}, {two[2]:.3f}] {one[0]:8.3f} [{one[1]:.3f}, {one[2]:.3f}]",
            file=sys.stderr,
        )
    print(
        f"coverage95 (test pairs, calibration of the others): {json.dumps({k: round(v, 3) for k, v in s['coverage95'].items()})}",
        file=sys.stderr,
    )
    print(f"coverage50: {json.dumps({k: round(v, 3) for k, v in s['coverage50'].items()})}", file=sys.stderr)
    print(f"by interval: {json.dumps(s['by_interval'])}", file=sys.stderr)
    print(
        f"seconds per patient, two scans: wall {s['seconds_two'][0]:.1f}, CPU {s['cpu_seconds_two'][0]:.1f}; "
        f"one scan wall {s['seconds_one'][0]:.1f}",
        file=sys.stderr,
    )


def main(argv=None) -> None:
    a = _args(argv)
    r = run(a)
    targets = check_targets(r["summary"])
    print_table(r)
    out = a.cache / "last-result.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=1, default=float))
    s = r["summary"]
    ratio = s["one_infiltration_length_mm"][0] / max(s["two_infiltration_length_mm"][0], 1e-9)
    print(
        "BENCH "
        + json.dumps(
            {
                "benchmark": "longitudinal",
                "pairs": r["pairs"],
                "database_entries": r["database"]["entries"],
                "resolution_mm": r["database"]["resolution_mm"],
                **{f"rel_error_{k}": round(s[f"two_{k}"][0], 4) for k in ERROR_KEYS},
                **{f"one_scan_rel_error_{k}": round(s[f"one_{k}"][0], 4) for k in ERROR_KEYS},
                "origin_error_mm": round(s["two_origin_mm"][0], 3),
                "infiltration_error_ratio_one_over_two": round(ratio, 3),
                "coverage95": {k: round(v, 3) for k, v in s["coverage95"].items()},
                "coverage50": {k: round(v, 3) for k, v in s["coverage50"].items()},
                "seconds_per_patient_wall": round(s["seconds_two"][0], 2),
                "seconds_per_patient_cpu": round(s["cpu_seconds_two"][0], 2),
                "by_interval": s["by_interval"],
                "targets_met": targets,
            }
        )
    )


if __name__ == "__main__":
    main()
