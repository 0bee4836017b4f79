"""Cold start of ``gliofit infer``: process start to result.json (report included), with the caches
against the same command with the caches removed.

    python benchmarks/cold_start.py [--quick] [--db DB] [--entries N] [--repeats R]

The database: ``--db``, else the ``--quick`` 4 mm database of ``benchmarks/_shared.py``, grown to
``--entries`` (default 100,000; quick 20,000) by SYNTHETIC copies of its entries (same stored arrays,
feature vectors jittered by 1 %, new ids, FAISS index rebuilt): the query then searches and loads an
index and entry table of that size, while the arrays it reads are real simulations. The query: a
solver tumour (not a database entry) written as a BraTS-2023 segmentation on the 1 mm atlas grid
(``--in-atlas-space``, ``--no-refine``). Each repeat runs the command twice, interleaved: warm user cache, then a
cache directory that is empty (``GLIOFIT_CACHE``), so the atlas is read through nilearn. Reported:
wall seconds of both, the import time of the command's modules, and the stage times result.json
records (load, query, total). Ends with one line ``BENCH {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _shared import benchmark_database  # noqa: E402

GLIOFIT = str(Path(sys.executable).with_name("gliofit"))


def grow_synthetic(src: Path, dst: Path, n_entries: int, seed: int = 0) -> int:
    """Copy database ``src`` to ``dst`` and add jittered copies of its entries until it holds n_entries."""
    from sqlalchemy import func, insert, select

    from gliofit.simulations_db.reindex import rebuild_index
    from gliofit.simulations_db.schema import entries_t, make_engine, sqlite_url

    shutil.copytree(src, dst)
    engine = make_engine(sqlite_url(dst))
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(entries_t)).mappings().all()]
        n0 = conn.execute(select(func.count()).select_from(entries_t)).scalar_one()
    rng = np.random.default_rng(seed)
    base = int(max(r["id"] for r in rows)) + 1
    copies = []
    for c in range(n_entries - n0):
        r = dict(rows[c % len(rows)])
        r["id"] = base + c
        f = np.frombuffer(r["features"], dtype="<f4")
        r["features"] = (f * (1.0 + 0.01 * rng.standard_normal(f.shape))).astype("<f4").tobytes()
        copies.append(r)
    with engine.begin() as conn:
        for i in range(0, len(copies), 5000):
            conn.execute(insert(entries_t), copies[i : i + 5000])
    engine.dispose()
    rebuild_index(dst, "auto")
    return n_entries


def query_segmentation(db: Path, out: Path) -> Path:
    """A BraTS-2023 segmentation on the 1 mm atlas grid from a solver tumour with fresh parameters."""
    import nibabel as nib

    from gliofit.growth.atlas import load_atlas, to_atlas_grid
    from gliofit.growth.solver import simulate_one
    from gliofit.simulations_db.worker import load_grid

    grid, atlas = load_grid(db), load_atlas()
    u = to_atlas_grid(simulate_one(grid, 0.13, 0.031, [-28.0, -12.0, 18.0], 320.0), grid, atlas)
    seg = np.where(u >= 0.675, 1, np.where(u >= 0.25, 2, 0)).astype(np.uint8)
    if not (seg == 1).any():
        raise RuntimeError("the query tumour has no core; pick other parameters")
    nib.save(nib.Nifti1Image(seg, atlas.affine), out)
    return out


def run_infer(db: Path, seg: Path, out: Path, cache_dir: Path) -> dict:
    env = dict(os.environ, GLIOFIT_CACHE=str(cache_dir), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    r = subprocess.run(
        [GLIOFIT, "infer", "--db", str(db), "--seg", str(seg), "--in-atlas-space", "--no-refine", "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"gliofit infer failed ({r.returncode}): {r.stderr[-2000:]}")
    timings = json.loads((out / "result.json").read_text()).get("timings_s", {})
    return {"wall_s": wall, **{f"{k}_s": v for k, v in timings.items()}}


def import_seconds() -> float:
    """Seconds to import what ``gliofit infer`` imports before it starts work (a fresh interpreter)."""
    code = (
        "import time; t=time.perf_counter(); import gliofit.cli, gliofit.inverse.api, "
        "gliofit.simulations_db.database; print(time.perf_counter()-t)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(r.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--db", default=None, help="an existing database (default: the quick 4 mm one, grown)")
    ap.add_argument("--entries", type=int, default=None, help="grow the database to this many entries")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    n_entries = args.entries or (20_000 if args.quick else 100_000)
    repeats = args.repeats or (1 if args.quick else 3)
    out: dict = {"cpus": os.cpu_count(), "load_average_start": os.getloadavg()[0], "repeats": repeats}
    with tempfile.TemporaryDirectory(prefix="gliofit-bench-cold-") as tmp:
        root = Path(tmp)
        src = benchmark_database(args.db, True, root)
        db = src
        if args.db is None:
            t0 = time.perf_counter()
            db = root / "DB-grown"
            out["entries"] = grow_synthetic(src, db, n_entries)
            out["synthetic_grow_seconds"] = time.perf_counter() - t0
            out["database"] = f"4 mm, 60 simulations, grown by synthetic copies to {n_entries} entries"
        else:
            out["database"] = str(db)
        seg = query_segmentation(db, root / "seg.nii.gz")
        warm_cache, empty_cache = root / "cache-warm", root / "cache-empty"
        run_infer(db, seg, root / "prime", warm_cache)  # fills the warm cache once
        runs: dict[str, list] = {"cached": [], "uncached": []}
        for i in range(repeats):
            runs["cached"].append(run_infer(db, seg, root / "out-cached", warm_cache))
            shutil.rmtree(empty_cache, ignore_errors=True)
            runs["uncached"].append(run_infer(db, seg, root / "out-uncached", empty_cache))
            print(
                f"repeat {i + 1}/{repeats}: cached {runs['cached'][-1]['wall_s']:.2f} s, "
                f"uncached {runs['uncached'][-1]['wall_s']:.2f} s",
                flush=True,
            )
        for kind, rs in runs.items():
            for key in rs[0]:
                out[f"{kind}_{key}"] = float(np.median([r[key] for r in rs]))
        out["uncached_over_cached"] = out["uncached_wall_s"] / out["cached_wall_s"]
        out["import_s"] = float(np.median([import_seconds() for _ in range(repeats)]))
    out["load_average_end"] = os.getloadavg()[0]
    print(
        f"gliofit infer --no-refine, {out['database']}: cached {out['cached_wall_s']:.2f} s wall "
        f"(load {out.get('cached_load_s', 0):.2f}, query {out.get('cached_query_s', 0):.2f}), uncached "
        f"{out['uncached_wall_s']:.2f} s; imports {out['import_s']:.2f} s; target <= 3 s "
        f"(load average {out['load_average_start']:.1f} -> {out['load_average_end']:.1f})"
    )
    print("BENCH " + json.dumps(out))


if __name__ == "__main__":
    main()
