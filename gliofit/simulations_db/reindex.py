"""(Re)build a database's FAISS index from the stored entry features and record its version in SQL.

The features of every entry are computed when the entry is written
(:func:`~gliofit.simulations_db.features.entry_features`) and kept in ``entries.features``, so rebuilding never re-reads arrays. Rebuilding
streams them: a seeded sample of at most ``TRAIN_SAMPLE`` trains the index,
then the entries are added ``batch`` rows at a time, so memory stays bounded
(10^6 entries of 2,642 float32 are 10.5 GB; they are never held at once). The
index file is ``DB/index/index-v<version>.faiss`` (written atomically by
:meth:`FaissIndex.save`); its row in ``index_versions`` is committed only if
the entries did not change meanwhile (else it is rebuilt), and older index
files are removed afterwards.

A database whose manifest records features of an older version
(:data:`~gliofit.simulations_db.features.FEATURE_VERSION`) is upgraded first
(:func:`~gliofit.simulations_db.upgrade.upgrade_features`, called by ``gliofit db index``): each entry's features are recomputed from its
stored array and rewritten in SQL (rows already at the new length are skipped,
so an interrupted upgrade resumes), the index is built from them, and the
manifest records the new spec only once that index is committed; until then
queries keep using the old spec with the old index. Run it while no build is
adding entries.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from sqlalchemy import false, func, insert, select, text, update

from gliofit.common.errors import InputError
from gliofit.common.io import file_sha256
from gliofit.simulations_db.manifest import read_manifest, write_manifest
from gliofit.simulations_db.schema import database_url_for, entries_t, index_versions_t, make_engine

__all__ = ["rebuild_index", "latest_index", "index_is_current", "load_features", "iter_features"]

INDEX_DIR = "index"
FEATURE_BATCH = 20_000
"""Rows of features read (and added to the index) at a time by :func:`rebuild_index`."""
_IN_CHUNK = 5_000


def _engine(db_dir, database_url):
    return make_engine(database_url_for(db_dir, read_manifest(db_dir), database_url))


def _entry_ids(engine) -> np.ndarray:
    """(n,) int64 ids of every entry, ascending."""
    with engine.connect() as conn:
        return np.array(conn.execute(select(entries_t.c.id).order_by(entries_t.c.id)).scalars().all(), dtype=np.int64)


def _decode(rows) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    return ids, np.stack([np.frombuffer(r[1], dtype="<f4") for r in rows]).astype(np.float32)


def _features_of(engine, ids: np.ndarray) -> np.ndarray:
    """(len(ids), d) float32 features of the given entry ids, in the order given."""
    got: dict[int, np.ndarray] = {}
    with engine.connect() as conn:
        for s in range(0, len(ids), _IN_CHUNK):
            chunk = [int(i) for i in ids[s : s + _IN_CHUNK]]
            rows = conn.execute(select(entries_t.c.id, entries_t.c.features).where(entries_t.c.id.in_(chunk))).all()
            got.update(zip(*_decode(rows)))
    return np.stack([got[int(i)] for i in ids])


def iter_features(engine, ids: np.ndarray, batch: int = FEATURE_BATCH):
    """Yield (ids, (m, d) float32 features) for the sorted entry ``ids``, ``batch`` rows at a time.

    Each batch is one range scan ``id BETWEEN first AND last`` filtered to ``ids``, so entries
    committed meanwhile by another builder are not included.
    """
    with engine.connect() as conn:
        for s in range(0, len(ids), batch):
            chunk = ids[s : s + batch]
            rows = conn.execute(
                select(entries_t.c.id, entries_t.c.features)
                .where(entries_t.c.id.between(int(chunk[0]), int(chunk[-1])))
                .order_by(entries_t.c.id)
            ).all()
            got, feats = _decode(rows)
            keep = np.isin(got, chunk)
            yield got[keep], feats[keep]


def load_features(engine) -> tuple[np.ndarray, np.ndarray]:
    """(ids (n,) int64 ascending, features (n, d) float32) of every entry (all in memory)."""
    ids = _entry_ids(engine)
    if len(ids) == 0:
        return ids, np.zeros((0, 0), dtype=np.float32)
    parts = list(iter_features(engine, ids))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def latest_index(engine) -> dict | None:
    """The newest ``index_versions`` row as a dict, or None."""
    with engine.connect() as conn:
        row = (
            conn.execute(select(index_versions_t).order_by(index_versions_t.c.version.desc()).limit(1))
            .mappings()
            .first()
        )
    return dict(row) if row else None


def index_is_current(db_dir: str | Path, database_url: str | None = None) -> bool:
    """True when the newest index exists on disk and counts as many entries as SQL holds."""
    engine = _engine(db_dir, database_url)
    row = latest_index(engine)
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(entries_t)).scalar() or 0
    return row is not None and row["entries"] == n and (Path(db_dir) / row["path"]).is_file()


def rebuild_index(
    db_dir: str | Path,
    kind: str = "auto",
    *,
    database_url: str | None = None,
    seed: int = 0,
    attempts: int = 3,
    batch: int = FEATURE_BATCH,
    features: dict | None = None,
) -> dict:
    """Build the index over all entries, save it, record it; returns ``{"kind", "entries", "version", "path",
    "features_version"}``.

    Features are streamed (module docstring): a seeded sample trains the index, then ``batch`` rows at
    a time are added. ``features``: a feature spec (``FeatureSpec.to_dict()``) to record in the manifest
    once the index is committed (after :func:`~gliofit.simulations_db.upgrade.upgrade_features`).
    """
    from dataclasses import replace

    from gliofit.simulations_db.features import FeatureSpec
    from gliofit.simulations_db.index import KINDS, TRAIN_SAMPLE, train_index

    if kind not in KINDS:
        raise InputError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    db_dir = Path(db_dir)
    engine = _engine(db_dir, database_url)
    (db_dir / INDEX_DIR).mkdir(exist_ok=True)
    for _ in range(attempts):
        ids = _entry_ids(engine)
        if len(ids) == 0:
            if features is not None:
                write_manifest(db_dir, replace(read_manifest(db_dir), features=features))
            return {"kind": None, "entries": 0, "version": None, "path": None}
        sample = ids[np.random.default_rng(seed).permutation(len(ids))[:TRAIN_SAMPLE]]
        index = train_index(_features_of(engine, sample), kind, len(ids), seed)
        for got, feats in iter_features(engine, ids, batch):
            if len(got):
                index.add(feats, got)
        with engine.begin() as conn:
            _hold_versions(conn)
            n_now = conn.execute(select(func.count()).select_from(entries_t)).scalar()
            if n_now != len(ids) or index.ntotal != len(ids):
                continue  # entries changed while building: build again
            version = (conn.execute(select(func.max(index_versions_t.c.version))).scalar() or 0) + 1
            rel = f"{INDEX_DIR}/index-v{version}.faiss"
            index.save(db_dir / rel)
            conn.execute(
                insert(index_versions_t).values(
                    version=version,
                    kind=index.kind,
                    entries=index.ntotal,
                    path=rel,
                    checksum=file_sha256(db_dir / rel),
                    created_at=time.time(),
                )
            )
        if features is not None:
            write_manifest(db_dir, replace(read_manifest(db_dir), features=features))
        _remove_older(db_dir, version)
        spec = read_manifest(db_dir).features
        return {
            "kind": index.kind,
            "entries": index.ntotal,
            "version": version,
            "path": rel,
            "features_version": FeatureSpec.from_dict(spec).version if spec else None,
        }
    raise RuntimeError(f"{db_dir}: entries kept changing while the index was built ({attempts} attempts)")


def _hold_versions(conn) -> None:
    """Take the writers' lock on ``index_versions`` for the rest of the transaction, so two builders that
    finish together never take the same version number (nor write the same index file); readers pass."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("LOCK TABLE index_versions IN SHARE ROW EXCLUSIVE MODE"))
    else:  # SQLite: a first write begins the write transaction (waiting out another writer's busy lock)
        conn.execute(update(index_versions_t).where(false()).values(kind=index_versions_t.c.kind))


def _remove_older(db_dir: Path, version: int) -> None:
    """Delete index files of versions below ``version`` (a newer one from another builder stays)."""
    for p in (db_dir / INDEX_DIR).glob("index-v*.faiss*"):
        v = p.name[len("index-v") :].split(".", 1)[0]
        if v.isdigit() and int(v) < version:
            p.unlink(missing_ok=True)
