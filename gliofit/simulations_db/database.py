"""Open a built database: its manifest, grid, entries table (numpy arrays), arrays and index.

>>> db = open_database("DB")                     # doctest: +SKIP
>>> db.info()["entries"]                         # doctest: +SKIP
>>> crops = db.read_entries(db.entries["id"][:1000])   # doctest: +SKIP
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from gliofit.common.errors import InputError
from gliofit.simulations_db.manifest import MANIFEST_NAME, Manifest, read_manifest
from gliofit.simulations_db.schema import (
    check_schema,
    database_url_for,
    entries_t,
    make_engine,
    migrate,
    simulations_t,
)
from gliofit.simulations_db.store import (
    QUANT_SCALE,
    VISIBLE_LEVEL,
    ShardReader,
    decode,
    decode_visible,
    threshold_level,
)

__all__ = ["Database", "migrate_database", "open_database"]

_ENTRY_COLUMNS = (
    "id",
    "simulation_id",
    "snapshot",
    "T_days",
    "mu_D_mm",
    "mu_rho",
    "wt_voxels",
    "core_voxels",
    "wt_cm3",
    "core_cm3",
    "offset",
    "length",
    "crc32",
)
_SIM_COLUMNS = ("D_mm2_per_day", "rho_per_day", "diffusivity_ratio", "origin_x_mm", "origin_y_mm", "origin_z_mm")
_INDEX_ATTEMPTS = 5
"""Times an index is looked up again when a rebuild replaced it while it was being opened."""
ENTRIES_CACHE_MIN = 10_000
"""Databases with at least this many entries keep their entries table in the user cache (memory-mapped)."""
ENTRIES_CACHE_KEEP = 8
"""Entries tables kept in the user cache (the most recently written)."""


class Database:
    """A simulation database opened for reading.

    Attributes
    ----------
    path : the database directory.
    manifest : its :class:`~.manifest.Manifest`.
    engine : the SQLAlchemy engine.
    """

    def __init__(self, path: str | Path, manifest: Manifest, engine) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.engine = engine
        self.reader = ShardReader(self.path / "arrays")
        self._entries: dict[str, np.ndarray] | None = None
        self._shards: list[str] = []
        self._grid = None
        self._index = None

    @property
    def grid(self):
        """The simulation grid (:class:`~.atlas.Atlas`) every entry lives on."""
        if self._grid is None:
            from gliofit.simulations_db.worker import load_grid

            self._grid = load_grid(self.path)
        return self._grid

    @property
    def entries(self) -> dict[str, np.ndarray]:
        """The entries table as arrays sorted by ``id``: the SQL columns, ``bbox`` (n, 6) int64,
        ``shard`` (n,) int32 codes into :attr:`shards`, and the simulation's parameters."""
        if self._entries is None:
            self._entries = self._load_entries()
        return self._entries

    @property
    def shards(self) -> list[str]:
        self.entries  # noqa: B018 - loads the table
        return self._shards

    def _load_entries(self) -> dict[str, np.ndarray]:
        """The table from the user cache when it was written for this database in its present state
        (same manifest file, entry count and largest id: entries are only ever added), else from SQL
        (then cached when large)."""
        from gliofit.common.array_cache import load_arrays, prune, save_arrays

        key = self._entries_key()
        folder = _entries_cache(self.path)
        found = load_arrays(folder, key, mmap=True) if key["entries"] >= ENTRIES_CACHE_MIN else None
        if found is not None:
            self._shards = [str(v) for v in found[1]]
            return found[0]
        out = self._entries_from_sql()
        if key["entries"] >= ENTRIES_CACHE_MIN and save_arrays(folder, out, key, self._shards):
            prune(folder.parent, ENTRIES_CACHE_KEEP)
        return out

    def _entries_key(self) -> dict:
        st = (self.path / MANIFEST_NAME).stat()
        with self.engine.connect() as conn:
            n, top = conn.execute(select(func.count(), func.max(entries_t.c.id)).select_from(entries_t)).one()
        return {
            "path": str(self.path.resolve()),
            "url": self.engine.url.render_as_string(hide_password=True),
            "manifest": [st.st_ino, st.st_mtime_ns, st.st_size],
            "entries": int(n or 0),
            "max_id": int(top or 0),
        }

    def _entries_from_sql(self) -> dict[str, np.ndarray]:
        e, s = entries_t.c, simulations_t.c
        cols = (
            [e[c] for c in _ENTRY_COLUMNS]
            + [e.shard, e.x0, e.y0, e.z0, e.x1, e.y1, e.z1]
            + [s[c] for c in _SIM_COLUMNS]
        )
        q = select(*cols).join(simulations_t, simulations_t.c.id == e.simulation_id).order_by(e.id)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        names = list(_ENTRY_COLUMNS) + ["shard", "x0", "y0", "z0", "x1", "y1", "z1"] + list(_SIM_COLUMNS)
        raw = {name: [r[i] for r in rows] for i, name in enumerate(names)}
        ints = {"id", "simulation_id", "snapshot", "wt_voxels", "core_voxels", "offset", "length", "crc32"}
        out = {k: np.asarray(raw[k], dtype=np.int64 if k in ints else np.float64) for k in _ENTRY_COLUMNS}
        for k in _SIM_COLUMNS:
            out[k] = np.asarray(raw[k], dtype=np.float64)
        out["bbox"] = (
            np.stack([np.asarray(raw[k], dtype=np.int64) for k in ("x0", "y0", "z0", "x1", "y1", "z1")], axis=1)
            if rows
            else np.zeros((0, 6), dtype=np.int64)
        )
        shards, codes = (
            np.unique(np.asarray(raw["shard"], dtype=object).astype(str), return_inverse=True)
            if rows
            else (np.array([], dtype=str), np.zeros(0, dtype=np.int64))
        )
        self._shards = [str(v) for v in shards]
        out["shard"] = codes.astype(np.int32)
        return out

    def rows_of(self, ids) -> np.ndarray:
        """Row numbers in :attr:`entries` of entry ``ids`` (InputError for an unknown id)."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        all_ids = self.entries["id"]
        pos = np.searchsorted(all_ids, ids)
        bad = (
            (pos >= len(all_ids)) | (all_ids[np.minimum(pos, max(len(all_ids) - 1, 0))] != ids)
            if len(all_ids)
            else ids == ids
        )
        if np.any(bad):
            raise InputError(f"{self.path}: no entry with id {int(ids[np.argmax(bad)])}")
        return pos

    def read_entries(self, ids) -> list[tuple[tuple[int, ...], np.ndarray]]:
        """``[(bbox (x0, y0, z0, x1, y1, z1), uint8 crop (x1-x0, y1-y0, z1-z0))]`` for entry ``ids``, in order.

        Densities are ``crop / 255``; voxels outside the bbox are 0.
        """
        e = self.entries
        out = []
        for r in self.rows_of(ids):
            bbox = tuple(int(v) for v in e["bbox"][r])
            out.append((bbox, decode(self._checked_payload(r), bbox)))
        return out

    def _checked_payload(self, row: int) -> memoryview:
        """The stored bytes of entry row ``row`` after their crc32 matched SQL's (before they are decoded)."""
        e = self.entries
        shard = self._shards[e["shard"][row]]
        try:
            payload = self.reader.payload(shard, int(e["offset"][row]), int(e["length"][row]))
        except IndexError as exc:
            raise InputError(f"{self.path / 'arrays' / shard}: {exc} (shard truncated or replaced)") from None
        if zlib.crc32(payload) != int(e["crc32"][row]):
            raise InputError(
                f"{self.path / 'arrays' / shard}: entry {int(e['id'][row])} does not match its "
                f"checksum in SQL (shard replaced or damaged)"
            )
        return payload

    def read_visible(self, ids) -> list[tuple[tuple[int, ...], np.ndarray]]:
        """Like :meth:`read_entries`, but only the box where density >= 0.05 (the fast re-ranking read).

        Every voxel at or above :data:`~.store.VISIBLE_LEVEL` / 255 lies inside the returned box.
        """
        e = self.entries
        return [decode_visible(self._checked_payload(r), e["bbox"][r]) for r in self.rows_of(ids)]

    def read_masks(self, ids, threshold: float) -> list[tuple[tuple[int, ...], np.ndarray]]:
        """``[(bbox, bool crop density >= threshold)]`` (uint8 level, see :mod:`.store`); thresholds
        >= 0.05 read only the visible stream."""
        level = threshold_level(threshold)
        crops = self.read_visible(ids) if level >= VISIBLE_LEVEL else self.read_entries(ids)
        return [(bbox, crop >= level) for bbox, crop in crops]

    def density(self, entry_id: int) -> np.ndarray:
        """The full (X, Y, Z) float32 density of one entry on the database grid."""
        ((bbox, crop),) = self.read_entries([entry_id])
        u = np.zeros(self.manifest.grid_shape, dtype=np.float32)
        u[bbox[0] : bbox[3], bbox[1] : bbox[4], bbox[2] : bbox[5]] = crop.astype(np.float32) / QUANT_SCALE
        return u

    def index_row(self) -> dict | None:
        from gliofit.simulations_db.reindex import latest_index

        return latest_index(self.engine)

    @property
    def index(self):
        """The newest FAISS index (:class:`~.index.FaissIndex`), loaded once.

        A rebuild running meanwhile may commit a newer index and remove the files of the one being opened:
        the newer one is opened then.
        """
        if self._index is None:
            from gliofit.simulations_db.index import FaissIndex

            for _ in range(_INDEX_ATTEMPTS):
                path = self._checked_index_file()
                if path is None:
                    continue
                try:
                    self._index = FaissIndex.load(path, mmap=True)
                    return self._index
                except InputError:
                    row = self.index_row()
                    if row is None or self.path / row["path"] == path:
                        raise  # not replaced: missing or damaged
            raise InputError(f"{self.path}: the FAISS index kept being replaced while it was opened; try again")
        return self._index

    def _checked_index_file(self) -> Path | None:
        """The newest index file, after its sha256 matched the one SQL recorded (before FAISS parses it);
        None when it was removed after its row was read."""
        from gliofit.common.io import remembered_sha256

        row = self.index_row()
        if row is None:
            raise InputError(f"{self.path}: database has no FAISS index; run `gliofit db index {self.path}`")
        path = self.path / row["path"]
        try:
            digest = remembered_sha256(path)
        except FileNotFoundError:
            return None
        if row.get("checksum") and digest != row["checksum"]:
            raise InputError(f"{path}: FAISS index file does not match its checksum in SQL (replaced or damaged)")
        return path

    def info(self) -> dict:
        """The JSON summary of ``gliofit db info`` (INTERFACES.md)."""
        m = self.manifest
        with self.engine.connect() as conn:
            status = dict(
                conn.execute(select(simulations_t.c.status, func.count()).group_by(simulations_t.c.status)).all()
            )
            n_entries = conn.execute(select(func.count()).select_from(entries_t)).scalar() or 0
            nbytes = conn.execute(select(func.sum(entries_t.c.length))).scalar() or 0
        row = self.index_row()
        return {
            "format_version": m.format_version,
            "path": str(self.path),
            "atlas": m.atlas,
            "atlas_checksum": m.atlas_checksum,
            "resolution_mm": m.resolution_mm,
            "grid_shape": list(m.grid_shape),
            "simulations": int(status.get("done", 0) + status.get("failed", 0)),
            "simulations_by_status": {k: int(v) for k, v in status.items()},
            "entries": int(n_entries),
            "array_bytes": int(nbytes),
            "thresholds": dict(m.thresholds),
            "design": m.design,
            "snapshots": m.snapshots,
            "quantisation": m.quantisation,
            "index": (
                {
                    "kind": row["kind"],
                    "entries": int(row["entries"]),
                    "version": int(row["version"]),
                    "path": row["path"],
                }
                if row
                else {"kind": None, "entries": 0, "version": None}
            ),
        }

    def close(self) -> None:
        self.reader.close()
        self.engine.dispose()


def _entries_cache(db_path: Path) -> Path:
    """The user-cache folder of a database's entries table."""
    import hashlib

    from gliofit.common.cache import cache_dir

    return cache_dir() / "entries" / hashlib.sha256(str(db_path.resolve()).encode()).hexdigest()[:24]


def open_database(path: str | Path, database_url: str | None = None) -> Database:
    """Open the database in directory ``path`` for reading (InputError naming it if it is not one).

    Opening never writes: no migration (``gliofit db build`` and ``gliofit db migrate`` do that) and, for
    SQLite, a read-only connection, so a database on a read-only mount serves queries.
    """
    m = read_manifest(path)
    engine = make_engine(database_url_for(path, m, database_url), read_only=True)
    try:
        check_schema(engine, path)
    except BaseException:
        engine.dispose()
        raise
    return Database(path, m, engine)


def migrate_database(path: str | Path, database_url: str | None = None) -> dict:
    """Bring the database in ``path`` to this gliofit's schema (the one step that writes besides a build);
    returns ``{"path", "schema_version_before", "schema_version"}``."""
    from gliofit.simulations_db.schema import SCHEMA_VERSION

    m = read_manifest(path)
    engine = make_engine(database_url_for(path, m, database_url))
    try:
        before = migrate(engine)
    finally:
        engine.dispose()
    return {"path": str(path), "schema_version_before": int(before), "schema_version": SCHEMA_VERSION}
