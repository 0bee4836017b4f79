"""Check that a database agrees with itself: SQL rows, array shards, checksums, features and the index.

:func:`verify_database` returns a list of problems, one line each, naming the
entry, simulation, shard or file concerned; an empty list means everything
agrees (``gliofit db verify`` exits 0 only then).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from gliofit.simulations_db.database import Database, open_database
from gliofit.simulations_db.schema import atlas_t, entries_t, simulations_t
from gliofit.simulations_db.store import SHARD_SUFFIX, VISIBLE_LEVEL, decode, decode_visible, threshold_level

__all__ = ["verify_database"]

CHUNK = 2000


def _check_grid(db: Database) -> list[str]:
    probs = []
    try:
        checksum = db.grid.checksum()
    except (OSError, ValueError, KeyError) as exc:
        return [f"{db.path / 'grid.npz'}: unreadable grid ({exc})"]
    if checksum != db.manifest.atlas_checksum:
        probs.append(f"{db.path / 'grid.npz'}: grid checksum differs from the manifest's atlas_checksum")
    with db.engine.connect() as conn:
        if conn.execute(select(atlas_t.c.id).where(atlas_t.c.checksum == db.manifest.atlas_checksum)).first() is None:
            probs.append("SQL atlas table has no row with the manifest's atlas checksum")
    return probs


def _check_simulations(db: Database) -> list[str]:
    probs = []
    with db.engine.connect() as conn:
        sims = conn.execute(select(simulations_t.c.id, simulations_t.c.status, simulations_t.c.n_entries)).all()
        counts = dict(
            conn.execute(select(entries_t.c.simulation_id, func.count()).group_by(entries_t.c.simulation_id)).all()
        )
    known = set()
    for sid, status, n in sims:
        known.add(sid)
        if status in ("pending", "claimed"):
            probs.append(f"simulation {sid}: {status} (an unfinished build; run `gliofit db build` again)")
        elif status == "done" and counts.get(sid, 0) != (n or 0):
            probs.append(f"simulation {sid}: row says {n} entries, SQL holds {counts.get(sid, 0)}")
        elif status == "failed" and counts.get(sid, 0):
            probs.append(f"simulation {sid}: failed but has {counts[sid]} entries")
    for sid in set(counts) - known:
        probs.append(f"entries of simulation {sid}: no such simulation row")
    return probs


def _check_entry(db: Database, r: int, spec, levels: tuple[int, int], blob: bytes | None) -> str | None:
    """One entry's shard slice, checksum, shape, volumes and features; a problem line or None."""
    from gliofit.simulations_db.features import entry_features

    e = db.entries
    eid, shard = int(e["id"][r]), db.shards[e["shard"][r]]
    bbox = tuple(int(v) for v in e["bbox"][r])
    where = f"entry {eid} (shard {shard}, offset {int(e['offset'][r])})"
    try:
        payload = db.reader.payload(shard, int(e["offset"][r]), int(e["length"][r]))
    except (OSError, IndexError) as exc:
        return f"{where}: array unreadable ({exc})"
    if zlib.crc32(payload) != int(e["crc32"][r]):
        return f"{where}: checksum mismatch (array corrupted)"
    try:
        crop = decode(payload, bbox)
        vbox, vcrop = decode_visible(payload, bbox)
        vfull = np.zeros_like(crop)
        vfull[tuple(slice(vbox[i] - bbox[i], vbox[i + 3] - bbox[i]) for i in range(3))] = vcrop
        if not np.array_equal(vfull >= VISIBLE_LEVEL, crop >= VISIBLE_LEVEL):
            return f"{where}: visible box does not hold every voxel >= {VISIBLE_LEVEL}/255"
    except (zlib.error, ValueError) as exc:
        return f"{where}: array does not decode to its bbox {bbox} ({exc})"
    wt, core = crop >= levels[0], crop >= levels[1]
    if int(wt.sum()) != int(e["wt_voxels"][r]) or int(core.sum()) != int(e["core_voxels"][r]):
        return f"{where}: volumes in SQL differ from the array's"
    if spec is not None:
        stored = np.frombuffer(blob or b"", dtype="<f4")
        fresh = entry_features(spec, wt, core, bbox[:3])
        if stored.shape != fresh.shape or not np.allclose(stored, fresh, atol=1e-5):
            return f"{where}: stored feature vector differs from the array's"
    return None


def _check_arrays(db: Database) -> list[str]:
    from gliofit.simulations_db.features import FeatureSpec

    spec = FeatureSpec.from_dict(db.manifest.features) if db.manifest.features else None
    levels = (threshold_level(db.manifest.thresholds["edema"]), threshold_level(db.manifest.thresholds["core"]))
    ids, probs = db.entries["id"], []
    for start in range(0, len(ids), CHUNK):
        stop = min(start + CHUNK, len(ids))
        with db.engine.connect() as conn:
            blobs = dict(
                conn.execute(
                    select(entries_t.c.id, entries_t.c.features).where(
                        entries_t.c.id >= int(ids[start]), entries_t.c.id <= int(ids[stop - 1])
                    )
                ).all()
            )
        probs += [p for r in range(start, stop) if (p := _check_entry(db, r, spec, levels, blobs.get(int(ids[r]))))]
    referenced = set(db.shards)
    for p in sorted((db.path / "arrays").iterdir()):
        if p.name not in referenced:
            kind = "half-written" if not p.name.endswith(SHARD_SUFFIX) else "unreferenced"
            probs.append(f"shard {p.name}: {kind} file no SQL entry points to (removed by the next build)")
    return probs


def _check_index(db: Database) -> list[str]:
    from gliofit.common.io import file_sha256

    ids = db.entries["id"]
    row = db.index_row()
    if row is None:
        return [f"{db.path}: no FAISS index recorded (run `gliofit db index`)"] if len(ids) else []
    path = db.path / row["path"]
    if not path.is_file():
        return [f"index {path}: file missing (version {row['version']})"]
    if file_sha256(path) != row["checksum"]:
        return [f"index {path}: checksum differs from the one recorded in SQL"]
    try:
        index = db.index
    except ValueError as exc:
        return [f"index {path}: {exc}"]
    if index.ntotal != len(ids):
        return [f"index {path}: holds {index.ntotal} entries, the database {len(ids)} (run `gliofit db index`)"]
    indexed = np.sort(index.ids())
    if not np.array_equal(indexed, ids):
        missing = np.setdiff1d(ids, indexed)
        return [f"index {path}: entry ids differ from SQL (e.g. entry {int(missing[0]) if len(missing) else '?'})"]
    return []


def verify_database(path: str | Path, database_url: str | None = None) -> list[str]:
    """Every disagreement between SQL, arrays, checksums and the index, one line each ([] if none)."""
    db = open_database(path, database_url)
    try:
        return _check_grid(db) + _check_simulations(db) + _check_arrays(db) + _check_index(db)
    finally:
        db.close()
