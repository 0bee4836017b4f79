"""Cold start of ``gliofit infer``: process start to result.json (report included), with the caches
against the same command with the caches removed.

    python benchmarks/cold_start.py [--quick] [--db DB] [--entries N] [--repeats R]

The database: ``--db``, else the ``--quick`` 4 mm database of ``benchmarks/_shared.py``, grown to
``--entries`` (default 100,000; quick 20,000) by SYNTHETIC copies of its entries (same stored arrays,
feature vectors jittered by 1 %, new ids, FAISS index rebuilt): the query then searches and loads an
index and entry table of that size, while the arrays it reads are real simulations. The query: a
solver tumour (not a database entry) written as a BraTS-2023 segmentation on the 1 mm atlas grid
(``--in-atlas-space``, ``--no-refine``). Each repeat runs the command twice, interleaved: warm user cache
(``GLIOFIT_CACHE``: the ICBM152 maps and the entries table), then an empty one, so the atlas is read
through nilearn and the entries from SQL. Reported per kind: wall and CPU seconds of the command
(CPU = user + system of the process: what a quiet machine would wait, near enough, when other jobs share
the cores), and, from one more process per kind that runs the same steps in turn, the seconds of each
step: imports, atlas, database (entries table and index), query (reading the segmentation included),
density, NIfTI files, report (figure, HTML, result.json). Ends with one line ``BENCH {json}``.
"""

from __future__ import annotations

import time

_START = time.perf_counter()  # the steps' imports are timed from here (CPU: from process start)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

GLIOFIT = str(Path(sys.executable).with_name("gliofit"))


def grow_synthetic(src: Path, dst: Path, n_entries: int, seed: int = 0) -> int:
    """Copy database ``src`` to ``dst`` and add jittered copies of its entries until it holds n_entries."""
    import numpy as np
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
    import numpy as np

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


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _env(cache_dir: Path) -> dict:
    return dict(os.environ, GLIOFIT_CACHE=str(cache_dir), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))


def run_infer(db: Path, seg: Path, out: Path, cache_dir: Path) -> dict:
    """Wall and CPU seconds of one ``gliofit infer`` process, and the stage seconds of its result.json."""
    if out.exists():
        shutil.rmtree(out)
    c0, t0 = _cpu_children(), time.perf_counter()
    r = subprocess.run(
        [GLIOFIT, "infer", "--db", str(db), "--seg", str(seg), "--in-atlas-space", "--no-refine", "-o", str(out)],
        capture_output=True,
        text=True,
        env=_env(cache_dir),
    )
    wall, cpu = time.perf_counter() - t0, _cpu_children() - c0
    if r.returncode != 0:
        raise RuntimeError(f"gliofit infer failed ({r.returncode}): {r.stderr[-2000:]}")
    timings = json.loads((out / "result.json").read_text()).get("timings_s", {})
    return {"wall_s": wall, "cpu_s": cpu, **{f"{k}_s": v for k, v in timings.items()}}


STEPS = ("imports", "atlas", "database", "query", "density", "report")


def _steps(db: str, seg: str, out: str) -> None:
    """The steps of ``gliofit infer`` in turn, timed (wall and CPU); prints one JSON line. Runs in a fresh
    process (``--steps``) that has imported only the standard library (imports: CPU from process start)."""
    t = [(_START, 0.0)]
    got: dict[str, float] = {}

    def step(name: str) -> None:
        t.append((time.perf_counter(), time.process_time()))
        got[f"{name}_wall_s"] = t[-1][0] - t[-2][0]
        got[f"{name}_cpu_s"] = t[-1][1] - t[-2][1]

    import gliofit.cli  # noqa: F401 - what the command imports before it starts
    from gliofit.inverse.api import atlas_of, infer
    from gliofit.simulations_db.database import open_database

    step("imports")
    d = open_database(db)
    atlas = atlas_of(d)
    step("atlas")
    d.entries, d.index  # noqa: B018 - load the table and the index
    step("database")
    res = infer(d, seg, in_atlas_space=True, refine=False, atlas=atlas)
    step("query")
    res.density_array  # noqa: B018 - computed on first use
    step("density")
    res.save(out)
    step("report")
    print(json.dumps(got))


def run_steps(db: Path, seg: Path, out: Path, cache_dir: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, __file__, "--steps", str(db), str(seg), str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(cache_dir))
    if r.returncode != 0:
        raise RuntimeError(f"steps failed ({r.returncode}): {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--db", default=None, help="an existing database (default: the quick 4 mm one, grown)")
    ap.add_argument("--entries", type=int, default=None, help="grow the database to this many entries")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--steps", nargs=3, metavar=("DB", "SEG", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.steps:
        _steps(*args.steps)
        return
    import numpy as np
    from _shared import benchmark_database

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
                f"repeat {i + 1}/{repeats}: cached {runs['cached'][-1]['wall_s']:.2f} s "
                f"({runs['cached'][-1]['cpu_s']:.2f} s CPU), uncached {runs['uncached'][-1]['wall_s']:.2f} s "
                f"({runs['uncached'][-1]['cpu_s']:.2f} s CPU)",
                flush=True,
            )
        shutil.rmtree(empty_cache, ignore_errors=True)
        for kind, cache in (("cached", warm_cache), ("uncached", empty_cache)):
            for key, v in run_steps(db, seg, root / f"steps-{kind}", cache).items():
                out[f"{kind}_step_{key}"] = v
        for kind, rs in runs.items():
            for key in rs[0]:
                out[f"{kind}_{key}"] = float(np.median([r[key] for r in rs]))
        out["uncached_over_cached"] = out["uncached_wall_s"] / out["cached_wall_s"]
    out["load_average_end"] = os.getloadavg()[0]
    for kind in ("cached", "uncached"):
        steps = ", ".join(
            f"{k} {out[f'{kind}_step_{k}_wall_s']:.2f} ({out[f'{kind}_step_{k}_cpu_s']:.2f})" for k in STEPS
        )
        print(f"{kind} steps, wall (CPU) s: {steps}")
    print(
        f"gliofit infer --no-refine, {out['database']}: cached {out['cached_wall_s']:.2f} s wall, "
        f"{out['cached_cpu_s']:.2f} s CPU; uncached {out['uncached_wall_s']:.2f} s wall, "
        f"{out['uncached_cpu_s']:.2f} s CPU; target <= 3 s wall "
        f"(load average {out['load_average_start']:.1f} -> {out['load_average_end']:.1f})"
    )
    print("BENCH " + json.dumps(out))


if __name__ == "__main__":
    main()
