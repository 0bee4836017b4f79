"""Database build throughput: batched fused simulations vs one at a time (the eager operator), their
Dice against an explicit Euler reference, the warm read time of 1,000 entries, and (``--dask``) the
Dask speed-up 1 -> 2 workers.

    python benchmarks/build.py [--quick] [--simulations N] [--resolution MM] [--workers K] [--rounds R] [--dask]

Both builds use the local pool with ``--workers`` processes on fresh databases of the same design
(creation, i.e. loading the atlas, is not timed; nor is the FAISS index). They are interleaved: in
each of ``--rounds`` rounds the one-by-one database and then the batched one are extended by
N / R simulations, so both see the same load from other jobs. The Dice set: the first design
simulations whose last snapshot is at most 400 days, every snapshot, one by one and batched, against
explicit Euler at a fixed 0.1-day step.
Ends with one line ``BENCH {json}``.
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

ONE_BY_ONE = {"compile": False}
"""The solver settings of the baseline: eager torch operator, one simulation per solver call."""
EULER_DT_DAYS = 0.1
DICE_MAX_DAYS, DICE_SEARCH = 400.0, 64
"""The Dice set: the first design indices (of DICE_SEARCH) whose last snapshot is at most DICE_MAX_DAYS
(explicit Euler at 0.1 day over 1,500 days would take an hour a simulation here)."""
THRESHOLDS = (0.25, 0.675)


def _timed_build(db: Path, n: int, resolution_mm: float, **kwargs) -> float:
    if not db.exists():
        create_database(db, resolution_mm=resolution_mm)
    t0 = time.perf_counter()
    report = build_database(db, n, progress=False, index_kind=None, **kwargs)
    seconds = time.perf_counter() - t0
    if report["simulations"] != n:
        raise RuntimeError(f"{db}: built {report['simulations']} of {n} simulations")
    return seconds


def _compile_kernels() -> None:
    """Compile (or load from numba's disk cache) the fused CPU kernels once, before anything is timed."""
    from gliofit.growth.atlas import load_atlas, resample_atlas
    from gliofit.growth.solver import simulate

    grid = resample_atlas(load_atlas(), 8.0)
    simulate(grid, [0.2], [0.05], [[-30.0, -10.0, 20.0]], [20.0])


def interleaved_rates(root: Path, n: int, rounds: int, resolution_mm: float, workers: int) -> dict:
    """Seconds and simulations/hour of the one-by-one and the batched build, extended round by round."""
    seconds = {"one_by_one": 0.0, "batched": 0.0}
    for r in range(1, rounds + 1):
        target = round(n * r / rounds)
        seconds["one_by_one"] += _timed_build(
            root / "one_by_one", target, resolution_mm, workers=workers, solver=ONE_BY_ONE
        )
        seconds["batched"] += _timed_build(root / "batched", target, resolution_mm, workers=workers)
        print(
            f"round {r}/{rounds}: {target} simulations, one by one {seconds['one_by_one']:.1f} s, "
            f"batched {seconds['batched']:.1f} s",
            flush=True,
        )
    out = {f"{k}_seconds": v for k, v in seconds.items()}
    out |= {f"{k}_simulations_per_hour": 3600.0 * n / v for k, v in seconds.items()}
    out["speedup"] = seconds["one_by_one"] / seconds["batched"]
    return out


def solver_cpu_seconds(db: Path, n: int, batch: int = 8) -> dict:
    """CPU seconds (this process, one thread) per simulation of the solver alone, one by one vs batched.

    The same design indices and snapshot times as the build; batches alternate with their one-by-one
    runs. CPU time, unlike wall time, barely moves with the load of other jobs.
    """
    import torch

    from gliofit.growth.solver import SolverConfig, simulate
    from gliofit.simulations_db.manifest import read_manifest
    from gliofit.simulations_db.worker import load_grid

    torch.set_num_threads(1)
    m, grid = read_manifest(db), load_grid(db)
    p = m.design_obj.parameters(grid, np.arange(n))
    times = [m.snapshot_rule.times(D, r) for D, r in zip(p["D_mm2_per_day"], p["rho_per_day"])]
    cpu = {"one_by_one": 0.0, "batched": 0.0}
    for start in range(0, n, batch):
        idx = list(range(start, min(n, start + batch)))
        c0 = time.process_time()
        for i in idx:
            simulate(
                grid,
                [p["D_mm2_per_day"][i]],
                [p["rho_per_day"][i]],
                [p["origin_mm"][i]],
                [times[i]],
                config=SolverConfig(**ONE_BY_ONE),
            )
        c1 = time.process_time()
        k = max(len(times[i]) for i in idx)
        padded = np.array([np.concatenate([times[i], np.full(k - len(times[i]), times[i][-1])]) for i in idx])
        simulate(grid, p["D_mm2_per_day"][idx], p["rho_per_day"][idx], p["origin_mm"][idx], padded)
        cpu["one_by_one"] += c1 - c0
        cpu["batched"] += time.process_time() - c1
    return {
        "solver_cpu_s_per_simulation_one_by_one": cpu["one_by_one"] / n,
        "solver_cpu_s_per_simulation_batched": cpu["batched"] / n,
        "solver_cpu_speedup": cpu["one_by_one"] / cpu["batched"],
        "solver_cpu_simulations": n,
    }


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def dice_against_euler(db: Path, n_dice: int) -> dict:
    """Dice (whole tumour, core) of both solver paths against explicit Euler, every snapshot of the first sims."""
    from gliofit.growth.solver import SolverConfig, simulate
    from gliofit.simulations_db.manifest import read_manifest
    from gliofit.simulations_db.worker import load_grid

    m, grid = read_manifest(db), load_grid(db)
    p = m.design_obj.parameters(grid, np.arange(DICE_SEARCH))
    end = np.array([m.snapshot_rule.times(D, r)[-1] for D, r in zip(p["D_mm2_per_day"], p["rho_per_day"])])
    pick = np.flatnonzero(end <= DICE_MAX_DAYS)[:n_dice]
    p = {k: v[pick] for k, v in p.items()}
    n_dice = len(pick)
    times = [m.snapshot_rule.times(D, r) for D, r in zip(p["D_mm2_per_day"], p["rho_per_day"])]
    k = max(len(t) for t in times)
    padded = np.array([np.concatenate([t, np.full(k - len(t), t[-1])]) for t in times])
    batched = simulate(grid, p["D_mm2_per_day"], p["rho_per_day"], p["origin_mm"], padded)
    scores: dict[str, list] = {f"{path}_{thr}": [] for path in ("one_by_one", "batched") for thr in THRESHOLDS}
    for i in range(n_dice):
        args = (grid, [p["D_mm2_per_day"][i]], [p["rho_per_day"][i]], [p["origin_mm"][i]], [times[i]])
        ref = simulate(*args, config=SolverConfig(method="euler", dt_days=EULER_DT_DAYS))[0]
        single = simulate(*args, config=SolverConfig(**ONE_BY_ONE))[0]
        for kk in range(len(times[i])):
            for thr in THRESHOLDS:
                r = ref[kk] >= thr
                if r.sum() < 10:
                    continue
                scores[f"one_by_one_{thr}"].append(_dice(r, single[kk] >= thr))
                scores[f"batched_{thr}"].append(_dice(r, batched[i, kk] >= thr))
        print(f"dice set {i + 1}/{n_dice} done", flush=True)
    out = {"dice_design_indices": [int(i) for i in pick], "euler_dt_days": EULER_DT_DAYS}
    for key, vals in scores.items():
        out[f"dice_mean_{key}"] = float(np.mean(vals)) if vals else None
        out[f"dice_min_{key}"] = float(np.min(vals)) if vals else None
    return out


def _warm(client) -> None:
    def imports() -> None:
        import gliofit.growth.solver  # noqa: F401
        import gliofit.simulations_db.worker  # noqa: F401

    client.run(imports)


def dask_seconds(root: Path, n: int, resolution_mm: float, n_workers: int) -> float:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        _warm(client)
        return _timed_build(
            root / f"dask{n_workers}", n, resolution_mm, scheduler=cluster.scheduler_address, batch_size=1
        )


def read_ms(db_dir: Path, n_read: int = 1000, repeats: int = 5) -> dict:
    """Median wall time (ms) of ``read_entries`` on n_read ids (with replacement if fewer exist), warm."""
    db = open_database(db_dir)
    ids = db.entries["id"]
    pick = np.random.default_rng(0).choice(ids, size=n_read, replace=len(ids) < n_read)
    out = {}
    for name, read in (("read_1000_visible_ms", db.read_visible), ("read_1000_full_ms", db.read_entries)):
        read(pick)  # warm: maps open, pages cached
        wall, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            crops = read(pick)
            wall.append(1000 * (time.perf_counter() - t0))
            cpu.append(1000 * (time.process_time() - c0))
        out[name] = float(np.median(wall))
        out[name.replace("_ms", "_cpu_ms")] = float(np.median(cpu))
        out[name.replace("read_1000_", "mean_crop_voxels_").replace("_ms", "")] = float(
            np.mean([c.size for _, c in crops])
        )
    info = db.info()
    db.close()
    return out | {"distinct_entries": int(len(ids)), "bytes_per_entry": info["array_bytes"] / max(info["entries"], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small builds (a few minutes)")
    ap.add_argument("--simulations", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 2, quick 1)")
    ap.add_argument("--resolution", type=float, default=2.0)
    ap.add_argument(
        "--dice-simulations", type=int, default=None, help="simulations of the Dice set (default 4, quick 2)"
    )
    ap.add_argument("--dask", action="store_true", help="also time a Dask LocalCluster with 1 and 2 workers")
    ap.add_argument(
        "--dask-resolution", type=float, default=None, help="grid of the Dask comparison (default: --resolution)"
    )
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    n = args.simulations or (8 if args.quick else 32)
    rounds = args.rounds or (1 if args.quick else 2)
    n_dice = args.dice_simulations or (2 if args.quick else 4)
    out: dict = {
        "resolution_mm": args.resolution,
        "simulations": n,
        "rounds": rounds,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "load_average_start": os.getloadavg()[0],
    }
    _compile_kernels()
    with tempfile.TemporaryDirectory(prefix="gliofit-bench-build-") as tmp:
        root = Path(tmp)
        out.update(interleaved_rates(root, n, rounds, args.resolution, args.workers))
        out["load_average_end"] = os.getloadavg()[0]
        print(
            f"local pool x{args.workers} at {args.resolution} mm, {n} simulations: one by one "
            f"{out['one_by_one_simulations_per_hour']:.0f}/h, batched {out['batched_simulations_per_hour']:.0f}/h, "
            f"speed-up {out['speedup']:.2f}x (load average {out['load_average_start']:.1f} -> "
            f"{out['load_average_end']:.1f})",
            flush=True,
        )
        out.update(solver_cpu_seconds(root / "batched", n))
        print(
            f"solver alone, CPU seconds per simulation (one thread): one by one "
            f"{out['solver_cpu_s_per_simulation_one_by_one']:.2f}, batched "
            f"{out['solver_cpu_s_per_simulation_batched']:.2f}, speed-up {out['solver_cpu_speedup']:.2f}x",
            flush=True,
        )
        out.update(dice_against_euler(root / "batched", n_dice))
        print(
            "Dice vs Euler (mean, min) whole tumour / core: one by one "
            f"{out['dice_mean_one_by_one_0.25']:.4f}/{out['dice_mean_one_by_one_0.675']:.4f}, batched "
            f"{out['dice_mean_batched_0.25']:.4f}/{out['dice_mean_batched_0.675']:.4f}",
            flush=True,
        )
        out.update(read_ms(root / "batched"))
        print(
            f"read 1000 entries warm: visible part {out['read_1000_visible_ms']:.1f} ms, whole crops "
            f"{out['read_1000_full_ms']:.1f} ms",
            flush=True,
        )
        if args.dask:
            dask_res = args.dask_resolution or args.resolution
            t1 = dask_seconds(root, n, dask_res, 1)
            t2 = dask_seconds(root, n, dask_res, 2)
            out.update(
                dask_resolution_mm=dask_res,
                dask_1_worker_seconds=t1,
                dask_2_workers_seconds=t2,
                dask_speedup_1_to_2=t1 / t2,
            )
            print(f"dask at {dask_res} mm: 1 worker {t1:.1f} s, 2 workers {t2:.1f} s, speed-up {t1 / t2:.2f}x")
    print("BENCH " + json.dumps(out))


if __name__ == "__main__":
    main()
