"""Benchmark: a cohort of phantom patients with 1 and 2 local workers and on a 2-worker Dask LocalCluster.

Eight phantom patient folders (BraTS 2023, MRI + segmentation) at 2 mm go through
:func:`gliofit.pipelines.cohort.run_cohort` three times into fresh output folders: one local worker
(the baseline), two local processes, and a Dask ``LocalCluster`` of two single-threaded workers on
loopback. Prints patients per hour and the speed-up of each over one worker; checks the three runs
agree on every patient's parameters.

    python benchmarks/cohort.py [--quick] [--db DB]

``--db`` defaults to the demo database (built once under ~/.cache/gliofit). ``--quick``: four patients
at 3 mm on a 60-simulation 4 mm database, affine registration. Ends with ``BENCH {json}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

from _shared import benchmark_database

from gliofit.pipelines.cohort import run_cohort
from gliofit.segmentation.phantoms import make_phantoms
from gliofit.growth.atlas import load_atlas


def _rows(out: Path) -> dict[str, dict]:
    with open(out / "results.csv", newline="") as fh:
        return {r["patient"]: r for r in csv.DictReader(fh)}


def _timed(label: str, cohort: Path, db: Path, out: Path, registration: str, **kw) -> dict:
    t0 = time.perf_counter()
    summary = run_cohort(cohort, db, out, progress=False, registration=registration, **kw)
    seconds = time.perf_counter() - t0
    per_hour = summary["ok"] / seconds * 3600.0
    print(f"{label:28s} {seconds:7.1f} s  {per_hour:7.1f} patients/h  ok {summary['ok']} failed {summary['failed']}")
    return {
        "seconds": round(seconds, 2),
        "patients_per_hour": round(per_hour, 1),
        "ok": summary["ok"],
        "failed": summary["failed"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 patients at 3 mm, small database")
    parser.add_argument("--db", help="database directory (default: the demo database)")
    parser.add_argument("--patients", type=int, default=None, help="cohort size (default 8; 4 with --quick)")
    parser.add_argument("--registration", default=None, help="syn, affine or none (default syn; affine with --quick)")
    args = parser.parse_args()
    args.registration = args.registration or ("affine" if args.quick else "syn")
    n = args.patients or (4 if args.quick else 8)
    mm = 3.0 if args.quick else 2.0
    atlas = load_atlas()
    with tempfile.TemporaryDirectory(prefix="gliofit-bench-cohort-") as td:
        tmp = Path(td)
        db = benchmark_database(args.db, args.quick, tmp)
        make_phantoms(tmp / "COHORT", n, seed=21, resolution_mm=mm, atlas=atlas, sim_resolution_mm=mm)
        print(f"{n} phantom patients at {mm:g} mm, database {db}, registration {args.registration}")
        runs = {
            "local_1": _timed(
                "1 local worker (baseline)", tmp / "COHORT", db, tmp / "L1", args.registration, workers=1
            ),
            "local_2": _timed("2 local processes", tmp / "COHORT", db, tmp / "L2", args.registration, workers=2),
        }
        from distributed import LocalCluster

        with LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", processes=True, dashboard_address=None
        ) as cluster:
            runs["dask_2"] = _timed(
                "Dask LocalCluster, 2 workers",
                tmp / "COHORT",
                db,
                tmp / "D2",
                args.registration,
                scheduler=cluster.scheduler_address,
            )
        ref = _rows(tmp / "L1")
        agree = all(
            _rows(tmp / name)[p][k] == ref[p][k]
            for name in ("L2", "D2")
            for p in ref
            for k in ("status", "mu_D_mm", "mu_rho", "origin_x_mm")
        )
    base = runs["local_1"]["seconds"]
    speedup = {k: round(base / v["seconds"], 2) for k, v in runs.items()}
    print(
        f"speed-up over 1 worker: 2 local {speedup['local_2']:.2f}x, Dask 2 workers {speedup['dask_2']:.2f}x; "
        f"results agree: {agree}"
    )
    print(
        "BENCH "
        + json.dumps(
            {
                "quick": args.quick,
                "patients": n,
                "resolution_mm": mm,
                "registration": args.registration,
                "runs": runs,
                "speedup_vs_1_worker": speedup,
                "results_agree": agree,
            }
        )
    )


if __name__ == "__main__":
    main()
