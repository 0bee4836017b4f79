"""Build (or extend, or resume) a simulation database, on local processes or a Dask cluster.

:func:`build_database` is idempotent: the design fixes what simulation ``i``
is, the SQL rows record which are done, and running it again (after a crash,
with the same or a larger N) does exactly the missing work. The driver claims
batches (:mod:`.claims`) and hands them to an executor; each task
(:func:`.worker.run_task`) simulates, writes its shard and commits its rows.

>>> build_database("DB", 100, resolution_mm=4.0)   # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gliofit.common.errors import InputError, check_positive
from gliofit.common.executors import Executor, make_executor
from gliofit.common.progress import progress_bar
from gliofit.simulations_db import claims
from gliofit.simulations_db.design import Design, SnapshotRule
from gliofit.simulations_db.manifest import Manifest, manifest_path, read_manifest, write_manifest
from gliofit.simulations_db.schema import atlas_t, database_url_for, make_engine, migrate
from gliofit.simulations_db.worker import GRID_NAME, load_grid, run_task, save_grid

__all__ = ["build_database", "create_database"]

DEFAULT_RESOLUTION_MM = 2.0
CPU_BATCH = 8
"""Most simulations per task on the CPU (fewer so every worker gets work)."""
CUDA_MAX_BATCH = 256
"""Most simulations per CUDA solver batch (host memory of the snapshots bounds it too)."""
_PRELOAD = ("gliofit.simulations_db.worker", "gliofit.growth.solver", "gliofit.growth.cpu_batch")
"""Modules the local pool's forkserver imports once."""
_CREATION_LEFTOVERS = {GRID_NAME, "arrays", "index", "gliofit.sqlite", "gliofit.sqlite-wal", "gliofit.sqlite-shm"}


def _check_same(m: Manifest, db_dir: Path, resolution_mm, seed, atlas, rule) -> None:
    p = manifest_path(db_dir)
    if resolution_mm is not None and not math.isclose(float(resolution_mm), m.resolution_mm):
        raise InputError(f"{p}: database was built at {m.resolution_mm} mm, not {resolution_mm} mm")
    if seed is not None and int(seed) != m.design["seed"]:
        raise InputError(f"{p}: database was built with seed {m.design['seed']}, not {seed}")
    if atlas is not None and str(atlas) not in (m.atlas_spec, m.atlas):
        raise InputError(f"{p}: database was built on atlas {m.atlas_spec}, not {atlas}")
    if rule is not None and rule.to_dict() != m.snapshots:
        raise InputError(f"{p}: database was built with another snapshot rule ({m.snapshots})")


def create_database(
    db_dir: str | Path,
    *,
    resolution_mm: float = DEFAULT_RESOLUTION_MM,
    seed: int = 0,
    atlas: str = "icbm152",
    snapshots: SnapshotRule | None = None,
    database_url: str | None = None,
) -> Manifest:
    """Make ``db_dir`` a new, empty database; the manifest is written last (it marks a database)."""
    from gliofit.growth.atlas import load_atlas, resample_atlas
    from gliofit.simulations_db.features import FeatureSpec

    db_dir = Path(db_dir)
    if db_dir.exists() and not db_dir.is_dir():
        raise InputError(f"{db_dir}: exists and is not a directory")
    if db_dir.is_dir():
        extra = sorted(
            p.name
            for p in db_dir.iterdir()
            if p.name not in _CREATION_LEFTOVERS
            and not p.name.startswith(("gliofit-db.json", ".gliofit-db.json.", ".grid.npz."))
        )
        if extra:
            raise InputError(f"{db_dir}: not a gliofit database (no gliofit-db.json) and not empty ({extra[0]} ...)")
    check_positive(resolution_mm, "resolution (mm)")
    grid = resample_atlas(load_atlas(atlas), float(resolution_mm))
    for sub in ("arrays", "index"):
        (db_dir / sub).mkdir(parents=True, exist_ok=True)
    save_grid(db_dir, grid)
    m = Manifest(
        atlas=grid.name,
        atlas_spec=str(atlas),
        atlas_checksum=grid.checksum(),
        resolution_mm=float(resolution_mm),
        grid_shape=grid.shape,
        design=Design(seed=int(seed)).to_dict(),
        snapshots=(snapshots or SnapshotRule()).to_dict(),
        features=FeatureSpec.for_grid(grid.shape, float(resolution_mm)).to_dict(),
        database_url=database_url,
    )
    engine = make_engine(database_url_for(db_dir, m, database_url))
    migrate(engine)
    _ensure_atlas_row(engine, grid, m)
    write_manifest(db_dir, m)
    return m


def _ensure_atlas_row(engine, grid, m: Manifest) -> None:
    import json

    from sqlalchemy import select, text

    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # concurrent creators: one inserts, the other sees it
            conn.execute(text("SELECT pg_advisory_xact_lock(74012)"))
        if conn.execute(select(atlas_t.c.id).where(atlas_t.c.checksum == m.atlas_checksum)).first() is None:
            conn.execute(
                atlas_t.insert().values(
                    name=grid.name,
                    shape=json.dumps(list(grid.shape)),
                    affine=json.dumps(np.asarray(grid.affine).tolist()),
                    resolution_mm=m.resolution_mm,
                    checksum=m.atlas_checksum,
                )
            )


def _check_device(device: str) -> str:
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available to torch on this machine")
    return device


def cuda_batch_size(grid, snapshots: int, memory_fraction: float = 0.5) -> int:
    """Simulations per CUDA solver batch that fit ``memory_fraction`` of the GPU's free memory.

    Per simulation: the state, ~8 stage temporaries of the active box (at most the grid) and
    its K snapshots, float32 on the device and in host memory for encoding.
    """
    import torch

    free_bytes, _ = torch.cuda.mem_get_info()
    per_sim = 4 * int(np.prod(grid.shape)) * (9 + snapshots)
    return int(max(1, min(CUDA_MAX_BATCH, memory_fraction * free_bytes // per_sim)))


def _rows_for(m: Manifest, grid):
    design = m.design_obj

    def rows(indices: np.ndarray) -> list[dict]:
        p = design.parameters(grid, indices)
        return [
            {
                "id": int(i),
                "D_mm2_per_day": float(p["D_mm2_per_day"][n]),
                "rho_per_day": float(p["rho_per_day"][n]),
                "diffusivity_ratio": design.diffusivity_ratio,
                "origin_x_mm": float(p["origin_mm"][n, 0]),
                "origin_y_mm": float(p["origin_mm"][n, 1]),
                "origin_z_mm": float(p["origin_mm"][n, 2]),
                "seed": design.seed,
                "status": "pending",
            }
            for n, i in enumerate(indices)
        ]

    return rows


def _drive(engine, executor: Executor, task_base: dict, run_id: int, n: int, batch_size: int, bar, bar_task) -> dict:
    """Claim, submit and collect until no work is left for this run; returns the counts."""
    counts = {"done": 0, "failed": 0, "entries": 0, "lost": 0, "tasks": 0}
    in_flight: dict = {}
    while True:
        while len(in_flight) < 2 * executor.slots:
            claim = claims.claim_batch(engine, run_id, n, batch_size)
            if claim is None:
                break
            token, rows = claim
            task = dict(task_base, token=token, simulations=rows)
            in_flight[executor.submit(run_task, task)] = len(rows)
        if not in_flight:
            if claims.release_dead_claims(engine):
                continue
            return counts
        for fut in executor.wait_first(list(in_flight)):
            in_flight.pop(fut)
            res = fut.result()
            counts["tasks"] += 1
            for key in ("done", "failed", "entries"):
                counts[key] += res[key]
            counts["lost"] += int(res["lost"])
            bar.update(bar_task, advance=res["done"] + res["failed"])


def _open(db_dir: Path, resolution_mm, seed, atlas, snapshots, database_url) -> Manifest:
    """The manifest of ``db_dir``, creating the database first when it has none."""
    if not manifest_path(db_dir).is_file():
        create_database(
            db_dir,
            resolution_mm=DEFAULT_RESOLUTION_MM if resolution_mm is None else resolution_mm,
            seed=0 if seed is None else seed,
            atlas=atlas or "icbm152",
            snapshots=snapshots,
            database_url=database_url,
        )
    m = read_manifest(db_dir)  # also when another builder created it meanwhile
    _check_same(m, db_dir, resolution_mm, seed, atlas, snapshots)
    return m


def build_database(
    db_dir: str | Path,
    n_simulations: int,
    resolution_mm: float | None = None,
    seed: int | None = None,
    atlas: str | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    database_url: str | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    snapshots: SnapshotRule | None = None,
    index_kind: str | None = "auto",
    device: str = "cpu",
    solver: dict | None = None,
) -> dict:
    """Build, extend or resume ``db_dir`` to hold simulations ``0 .. n_simulations-1``.

    Parameters
    ----------
    db_dir : database directory (created if missing or empty).
    n_simulations : N, the number of design indices the database must hold (> 0).
    resolution_mm, seed, atlas, snapshots : the grid spacing (default 2 mm), design seed (0), atlas
        (``"icbm152"``) and snapshot rule of a NEW database; for an existing one, None means "as
        built" and any other value must match the manifest.
    workers : local processes (default: all cores; 1 runs in this process).
    scheduler : ``tcp://HOST:PORT`` of an existing Dask distributed scheduler (instead of ``workers``);
        its workers must see ``db_dir`` at the same path.
    database_url : SQLAlchemy URL (default ``DB/gliofit.sqlite``; remembered in the manifest).
    batch_size : simulations per task (default: up to 8, fewer so every worker gets work).
    progress : show a progress bar (rate, ETA) on stderr.
    index_kind : rebuild the FAISS index with this kind when entries changed (None: do not).
    device : ``"cpu"`` (fused CPU kernels, every simulation bit-identical however batched) or
        ``"cuda"`` (one process per GPU; batches sized to its free memory, similar rho and D grouped).
    solver : :class:`~gliofit.growth.solver.SolverConfig` fields to override (default: none; e.g.
        ``{"compile": False}`` runs the eager operator one simulation at a time).

    Returns
    -------
    dict: ``simulations`` (done + failed with id < N), ``new`` counts of this call, ``run_id``, ``index``.
    """
    n = int(n_simulations)
    if n <= 0:
        raise InputError(f"n_simulations must be a positive integer, got {n_simulations}", parameter="n_simulations")
    if workers is not None and scheduler is not None:
        raise InputError("give either workers or scheduler, not both", parameter=("workers", "scheduler"))
    device = _check_device(device)
    db_dir = Path(db_dir)
    if database_url:
        make_engine(database_url).dispose()  # a URL that does not answer fails before anything is written
    m = _open(db_dir, resolution_mm, seed, atlas, snapshots, database_url)
    url = database_url_for(db_dir, m, database_url)
    engine = make_engine(url)
    migrate(engine)
    grid = load_grid(db_dir)
    if device == "cuda" and workers is None and scheduler is None:
        workers = 1
    executor = make_executor(workers, scheduler, preload=_PRELOAD)
    slots = executor.slots
    run_id = claims.register_run(engine, n, executor.description)
    status = "failed"
    try:
        with claims.Heartbeat(engine, run_id):
            claims.ensure_simulations(engine, _rows_for(m, grid), n)
            claims.release_dead_claims(engine)
            claims.collect_garbage(engine, db_dir / "arrays")
            before = claims.status_counts(engine, n)
            pending = before.get("pending", 0)
            group = cuda_batch_size(grid, m.snapshot_rule.count) if device == "cuda" else None
            per_task = group or CPU_BATCH
            bsize = int(batch_size) if batch_size else max(1, min(per_task, math.ceil(pending / (2 * slots))))
            task_base = {
                "db_dir": str(db_dir.resolve()),
                "database_url": url,
                "device": device,
                "threads": executor.threads,
                "group_size": group,
                "solver": dict(solver or {}),
            }
            with progress_bar(disable=not progress) as bar:
                t = bar.add_task("simulations", total=n, completed=before.get("done", 0) + before.get("failed", 0))
                counts = _drive(engine, executor, task_base, run_id, n, bsize, bar, t)
        status = "finished"
    finally:
        executor.close()
        claims.finish_run(engine, run_id, status, locals().get("counts", {}).get("done", 0))
    after = claims.status_counts(engine, n)
    index = None
    if index_kind is not None:
        from gliofit.simulations_db.reindex import index_is_current, rebuild_index

        if counts["entries"] or not index_is_current(db_dir, database_url):
            index = rebuild_index(db_dir, index_kind, database_url=database_url)
    return {
        "run_id": run_id,
        "simulations": after.get("done", 0) + after.get("failed", 0),
        "status": after,
        "new": counts,
        "index": index,
    }
