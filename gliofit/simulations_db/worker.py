"""The build task: simulate a claimed batch, write its shard, commit its rows (or nothing).

The same function runs in a local process pool or on a Dask worker
(:func:`run_task`); it needs only the database directory (shared) and the SQL
URL. Each process loads the database grid (``DB/grid.npz``) and opens its SQL
engine once and reuses them for every task.

Commit protocol of one task: (1) simulate the claimed simulations as one
solver batch (:func:`~gliofit.growth.solver.simulate`) and encode their
snapshots; (2) write them to ``arrays/<token>.bin.tmp``, fsync, rename to
``arrays/<token>.bin``, fsync the directory; (3) in ONE SQL transaction mark
each simulation done (``UPDATE ... WHERE claim_token = token``; if any row no
longer carries the token the claim was lost and everything rolls back) and
insert its entries. The transaction is the commit point; a crash anywhere
before it leaves only an unreferenced file, which :func:`~.claims.collect_garbage`
removes.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import numpy as np
from sqlalchemy import insert, update

from gliofit.common.io import atomic_write
from gliofit.common.units import derived_parameters
from gliofit.growth.atlas import Atlas
from gliofit.simulations_db.schema import entries_t, make_engine, simulations_t
from gliofit.simulations_db.store import ShardWriter, encode_density, threshold_level

__all__ = ["run_task", "save_grid", "load_grid", "GRID_NAME", "entry_id"]

GRID_NAME = "grid.npz"
_CACHE: dict = {}


class LostClaim(RuntimeError):
    """The task's claim was taken over (its run was presumed dead); nothing was committed."""


def entry_id(simulation_id: int, snapshot: int, snapshots_per_simulation: int) -> int:
    """Stable entry id: design index x K + snapshot index (same in every build of the design)."""
    return int(simulation_id) * int(snapshots_per_simulation) + int(snapshot)


def save_grid(db_dir: str | Path, grid: Atlas) -> Path:
    """Write the simulation grid to ``DB/grid.npz`` atomically."""
    p = Path(db_dir) / GRID_NAME
    arrays = {"gm": grid.gm, "wm": grid.wm, "csf": grid.csf, "affine": grid.affine, "name": np.array(grid.name)}
    if grid.t1 is not None:
        arrays["t1"] = grid.t1
    with atomic_write(p) as tmp:
        np.savez(tmp, **arrays)
    return p


def load_grid(db_dir: str | Path) -> Atlas:
    """The simulation grid of a database (``DB/grid.npz``)."""
    with np.load(Path(db_dir) / GRID_NAME) as z:
        t1 = z["t1"] if "t1" in z.files else None
        return Atlas(str(z["name"]), z["gm"], z["wm"], z["csf"], z["affine"], t1)


def _context(task: dict) -> dict:
    key = (task["db_dir"], task["database_url"])
    ctx = _CACHE.get(key)
    if ctx is None:
        from gliofit.simulations_db.features import FeatureSpec
        from gliofit.simulations_db.manifest import read_manifest

        m = read_manifest(task["db_dir"])
        ctx = {
            "grid": load_grid(task["db_dir"]),
            "manifest": m,
            "engine": make_engine(task["database_url"]),
            "spec": FeatureSpec.from_dict(m.features),
        }
        _CACHE[key] = ctx
    return ctx


def _simulate_batch(ctx: dict, sims: list[dict], device: str, config) -> list[np.ndarray]:
    """Snapshots of every claimed row in ONE batched solver call: a (k_i, X, Y, Z) array per simulation.

    On the CPU each simulation keeps its own steps and box in the batch (bit-identical to a run
    alone, whatever the batch). On CUDA the batch shares its step, so the rows are ordered by rho
    and D first and simulated in groups of similar parameters.
    """
    from gliofit.growth.solver import simulate

    rule = ctx["manifest"].snapshot_rule
    times = [rule.times(s["D_mm2_per_day"], s["rho_per_day"]) for s in sims]
    k = max(len(t) for t in times)
    padded = np.array([np.concatenate([t, np.full(k - len(t), t[-1])]) for t in times])
    origins = [[s["origin_x_mm"], s["origin_y_mm"], s["origin_z_mm"]] for s in sims]
    ratios = {s["diffusivity_ratio"] for s in sims}
    if len(ratios) != 1:
        raise ValueError(f"one batch needs one diffusivity ratio, got {sorted(ratios)}")
    u = simulate(
        ctx["grid"],
        [s["D_mm2_per_day"] for s in sims],
        [s["rho_per_day"] for s in sims],
        origins,
        padded,
        diffusivity_ratio=ratios.pop(),
        config=config,
        device=device,
    )
    return [u[n, : len(t)] for n, t in enumerate(times)]


def _encode_snapshots(ctx: dict, sim: dict, u: np.ndarray) -> list[dict]:
    """The storable snapshots of one simulation (entry dicts with ``payload``) from its (k, X, Y, Z) densities."""
    from gliofit.simulations_db.features import entry_features

    m, grid = ctx["manifest"], ctx["grid"]
    rule = m.snapshot_rule
    times = rule.times(sim["D_mm2_per_day"], sim["rho_per_day"])
    lv_wt, lv_core = threshold_level(m.thresholds["edema"]), threshold_level(m.thresholds["core"])
    cm3 = grid.voxel_volume_mm3 / 1000.0
    out = []
    for k, T in enumerate(times):
        enc = encode_density(u[k])
        if enc is None:
            continue
        wt, core = enc.crop >= lv_wt, enc.crop >= lv_core
        n_wt, n_core = int(wt.sum()), int(core.sum())
        if n_wt == 0 or n_wt * cm3 > rule.max_store_cm3:
            continue
        d = derived_parameters(sim["D_mm2_per_day"], sim["rho_per_day"], float(T))
        feats = entry_features(ctx["spec"], wt, core, tuple(enc.bbox[:3]))
        out.append(
            {
                "id": entry_id(sim["id"], k, rule.count),
                "simulation_id": sim["id"],
                "snapshot": k,
                "T_days": float(T),
                "mu_D_mm": d["mu_D_mm"],
                "mu_rho": d["mu_rho"],
                "wt_voxels": n_wt,
                "core_voxels": n_core,
                "wt_cm3": n_wt * cm3,
                "core_cm3": n_core * cm3,
                "x0": enc.bbox[0],
                "y0": enc.bbox[1],
                "z0": enc.bbox[2],
                "x1": enc.bbox[3],
                "y1": enc.bbox[4],
                "z1": enc.bbox[5],
                "crc32": enc.crc32,
                "features": np.asarray(feats, dtype="<f4").tobytes(),
                "payload": enc.payload,
            }
        )
    return out


def _failure(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(exc)).strip()[:2000]


def _group(sims: list[dict], device: str, group_size: int | None, config) -> list[list[dict]]:
    """Solver batches of a task: all of it with the fused CPU kernels; one at a time on the CPU
    without them (their batches share steps); on CUDA runs of similar rho and D."""
    import torch

    from gliofit.growth.solver import uses_cpu_kernels

    if not device.startswith("cuda"):
        return [sims] if uses_cpu_kernels(config, torch.device(device)) else [[s] for s in sims]
    ordered = sorted(sims, key=lambda s: (s["rho_per_day"], s["D_mm2_per_day"], s["id"]))
    size = group_size or len(ordered)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def _run_simulations(
    ctx: dict, sims: list[dict], device: str, group_size: int | None = None, solver: dict | None = None
):
    """Simulate and encode the claimed rows; yields (row, entries, status, error, seconds) in claim order.

    A batch that raises is retried one simulation at a time, so that one bad row fails alone
    (on the CPU every simulation's result is the same either way).
    """
    from gliofit.growth.solver import SolverConfig

    config = SolverConfig(**(solver or {}))
    results: dict[int, tuple] = {}
    for group in _group(sims, device, group_size, config):
        t0 = time.perf_counter()
        try:
            snaps = _simulate_batch(ctx, group, device, config)
        except Exception:  # noqa: BLE001 - isolate the failing row below
            snaps = None
        share = (time.perf_counter() - t0) / len(group)
        for n, sim in enumerate(group):
            t1 = time.perf_counter()
            try:
                u = snaps[n] if snaps is not None else _simulate_batch(ctx, [sim], device, config)[0]
                rows, status, err = _encode_snapshots(ctx, sim, u), "done", None
            except Exception as exc:  # noqa: BLE001 - recorded in the row; the rest of the batch goes on
                rows, status, err = [], "failed", _failure(exc)
            results[sim["id"]] = (rows, status, err, share + time.perf_counter() - t1)
        del snaps
    for sim in sims:
        yield (sim, *results[sim["id"]])


def _commit(engine, token: str, outcomes: list[dict], entries: list[dict]) -> None:
    """One transaction: every simulation row still claimed by ``token`` -> done/failed, entries inserted."""
    with engine.begin() as conn:
        for o in outcomes:
            res = conn.execute(
                update(simulations_t)
                .where(
                    simulations_t.c.id == o["id"],
                    simulations_t.c.claim_token == token,
                    simulations_t.c.status == "claimed",
                )
                .values(status=o["status"], runtime_s=o["runtime_s"], n_entries=o["n_entries"], error=o["error"])
            )
            if res.rowcount != 1:
                raise LostClaim(f"simulation {o['id']}: claim {token} was taken over")
        if entries:
            conn.execute(insert(entries_t), entries)


def run_task(task: dict) -> dict:
    """Run one claimed batch end to end (see the module docstring).

    Parameters
    ----------
    task : ``{"db_dir", "database_url", "token", "simulations": [row dicts], "device", "threads"}``
        and optionally ``"group_size"`` (CUDA: simulations per solver batch; default the whole task) and
        ``"solver"`` (:class:`~gliofit.growth.solver.SolverConfig` fields).

    Returns
    -------
    ``{"token", "done", "failed", "entries", "lost", "seconds"}``.
    """
    t_start = time.perf_counter()
    if task.get("threads"):
        import torch

        torch.set_num_threads(int(task["threads"]))
    ctx = _context(task)
    outcomes, entries = [], []
    for sim, rows, status, err, seconds in _run_simulations(
        ctx, task["simulations"], task.get("device", "cpu"), task.get("group_size"), task.get("solver")
    ):
        entries += rows
        outcomes.append({"id": sim["id"], "status": status, "runtime_s": seconds, "n_entries": len(rows), "error": err})
    writer = ShardWriter(Path(task["db_dir"]) / "arrays", task["token"]) if entries else None
    try:
        if writer is not None:
            for e in entries:
                e["offset"], e["length"] = writer.append(e.pop("payload"))
                e["shard"] = writer.name
            writer.commit()
        _commit(ctx["engine"], task["token"], outcomes, entries)
    except LostClaim:
        if writer is not None:
            writer.abort()
            (Path(task["db_dir"]) / "arrays" / writer.name).unlink(missing_ok=True)
        return {
            "token": task["token"],
            "done": 0,
            "failed": 0,
            "entries": 0,
            "lost": True,
            "seconds": time.perf_counter() - t_start,
        }
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return {
        "token": task["token"],
        "done": sum(o["status"] == "done" for o in outcomes),
        "failed": sum(o["status"] == "failed" for o in outcomes),
        "entries": len(entries),
        "lost": False,
        "seconds": time.perf_counter() - t_start,
    }
