"""Database build throughput: simulations per hour with the local pool, Dask speed-up 1 -> 2 workers,
and the warm read time of 1,000 entries (the re-ranking read).

    python benchmarks/build.py [--quick] [--simulations N] [--resolution MM] [--workers K]

Each build runs on a freshly created database (creation, i.e. loading the
atlas, is not timed; nor is the FAISS index). The Dask figures come from a
``LocalCluster`` on loopback with one thread per worker, warmed (imports done)
before timing; both builds simulate the same design indices. Ends with one
line ``BENCH {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from gliofit.simulations_db.build import build_database, create_database
from gliofit.simulations_db.database import open_database


def _timed_build(db: Path, n: int, resolution_mm: float, **kwargs) -> float:
    create_database(db, resolution_mm=resolution_mm)
    t0 = time.perf_counter()
    report = build_database(db, n, progress=False, index_kind=None, **kwargs)
    seconds = time.perf_counter() - t0
    if report["simulations"] != n:
        raise RuntimeError(f"{db}: built {report['simulations']} of {n} simulations")
    return seconds


def _warm(client) -> None:
    def imports() -> None:
        import gliofit.growth.solver  # noqa: F401
        import gliofit.simulations_db.worker  # noqa: F401

    client.run(imports)


def dask_seconds(root: Path, n: int, resolution_mm: float, n_workers: int) -> float:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        _warm(client)
        return _timed_build(root / f"dask{n_workers}", n, resolution_mm, scheduler=cluster.scheduler_address,
                            batch_size=1)


def read_ms(db_dir: Path, n_read: int = 1000, repeats: int = 5) -> dict:
    """Median wall time (ms) of ``read_entries`` on n_read ids (with replacement if fewer exist), warm."""
    db = open_database(db_dir)
    ids = db.entries["id"]
    pick = np.random.default_rng(0).choice(ids, size=n_read, replace=len(ids) < n_read)
    out = {}
    for name, read in (("read_1000_visible_ms", db.read_visible), ("read_1000_full_ms", db.read_entries)):
        read(pick)                                                # warm: maps open, pages cached
        wall, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            crops = read(pick)
            wall.append(1000 * (time.perf_counter() - t0))
            cpu.append(1000 * (time.process_time() - c0))
        out[name] = float(np.median(wall))
        out[name.replace("_ms", "_cpu_ms")] = float(np.median(cpu))
        out[name.replace("read_1000_", "mean_crop_voxels_").replace("_ms", "")] = float(np.mean([c.size for _, c in crops]))
    info = db.info()
    db.close()
    return out | {"distinct_entries": int(len(ids)), "bytes_per_entry": info["array_bytes"] / max(info["entries"], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small builds (about a minute)")
    ap.add_argument("--simulations", type=int, default=None)
    ap.add_argument("--resolution", type=float, default=2.0)
    ap.add_argument("--dask-resolution", type=float, default=None, help="grid of the Dask comparison (default: --resolution)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    n = args.simulations or (4 if args.quick else 32)
    dask_res = args.dask_resolution or (4.0 if args.quick else args.resolution)
    out: dict = {"resolution_mm": args.resolution, "simulations": n, "workers": args.workers, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="gliofit-bench-build-") as tmp:
        root = Path(tmp)
        s = _timed_build(root / "pool", n, args.resolution, workers=args.workers)
        out["pool_seconds"] = s
        out["pool_simulations_per_hour"] = 3600.0 * n / s
        out.update(read_ms(root / "pool"))
        print(f"local pool x{args.workers}: {n} simulations at {args.resolution} mm in {s:.1f} s "
              f"= {out['pool_simulations_per_hour']:.0f}/h; read 1000 entries warm: visible part (re-ranking) "
              f"{out['read_1000_visible_ms']:.1f} ms (cpu {out['read_1000_visible_cpu_ms']:.1f}), whole crops "
              f"{out['read_1000_full_ms']:.1f} ms (target < 50 ms)")
        t1 = dask_seconds(root, n, dask_res, 1)
        t2 = dask_seconds(root, n, dask_res, 2)
        out.update(dask_resolution_mm=dask_res, dask_1_worker_seconds=t1, dask_2_workers_seconds=t2,
                   dask_speedup_1_to_2=t1 / t2)
        print(f"dask at {dask_res} mm: 1 worker {t1:.1f} s, 2 workers {t2:.1f} s, speed-up {t1 / t2:.2f}x "
              f"(target >= 1.6x)")
    print("BENCH " + json.dumps(out))


if __name__ == "__main__":
    main()
