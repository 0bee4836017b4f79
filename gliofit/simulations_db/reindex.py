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
(:func:`upgrade_features`): each entry's features are recomputed from its
stored array and rewritten in SQL (rows already at the new length are skipped,
so an interrupted upgrade resumes), the index is built from them, and the
manifest records the new spec only once that index is committed; until then
queries keep using the old spec with the old index. Run it while no build is
adding entries.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
from sqlalchemy import bindparam, func, insert, select, update

from gliofit.common.errors import InputError
from gliofit.simulations_db.manifest import read_manifest, write_manifest
from gliofit.simulations_db.schema import database_url_for, entries_t, index_versions_t, make_engine

__all__ = ["rebuild_index", "upgrade_features", "rewrite_features", "latest_index", "index_is_current", "load_features",
           "iter_features", "file_sha256"]

INDEX_DIR = "index"
FEATURE_BATCH = 20_000
"""Rows of features read (and added to the index) at a time by :func:`rebuild_index`."""
_IN_CHUNK = 5_000


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _engine(db_dir, database_url):
    return make_engine(database_url_for(db_dir, read_manifest(db_dir), database_url))


def _entry_ids(engine) -> np.ndarray:
    """(n,) int64 ids of every entry, ascending."""
    with engine.connect() as conn:
        return np.array(conn.execute(select(entries_t.c.id).order_by(entries_t.c.id)).scalars().all(),
                        dtype=np.int64)


def _decode(rows) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    return ids, np.stack([np.frombuffer(r[1], dtype="<f4") for r in rows]).astype(np.float32)


def _features_of(engine, ids: np.ndarray) -> np.ndarray:
    """(len(ids), d) float32 features of the given entry ids, in the order given."""
    got: dict[int, np.ndarray] = {}
    with engine.connect() as conn:
        for s in range(0, len(ids), _IN_CHUNK):
            chunk = [int(i) for i in ids[s:s + _IN_CHUNK]]
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
            chunk = ids[s:s + batch]
            rows = conn.execute(select(entries_t.c.id, entries_t.c.features)
                                .where(entries_t.c.id.between(int(chunk[0]), int(chunk[-1])))
                                .order_by(entries_t.c.id)).all()
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
        row = conn.execute(select(index_versions_t).order_by(index_versions_t.c.version.desc()).limit(1)).mappings().first()
    return dict(row) if row else None


def index_is_current(db_dir: str | Path, database_url: str | None = None) -> bool:
    """True when the newest index exists on disk and counts as many entries as SQL holds."""
    engine = _engine(db_dir, database_url)
    row = latest_index(engine)
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(entries_t)).scalar() or 0
    return row is not None and row["entries"] == n and (Path(db_dir) / row["path"]).is_file()


UPGRADE_BATCH = 2_000
"""Entries whose features are recomputed (and committed) at a time by :func:`upgrade_features`."""


def upgrade_features(db_dir: str | Path, *, database_url: str | None = None, batch: int = UPGRADE_BATCH,
                     progress: bool = False):
    """Recompute the features of every entry with the current spec when the manifest's is older.

    Returns the new :class:`~gliofit.simulations_db.features.FeatureSpec` (the manifest is NOT rewritten:
    :func:`rebuild_index` records it once the index over the new features is committed), or None when the
    features are current (or the database has no feature spec).
    """
    from gliofit.simulations_db.features import FeatureSpec

    m = read_manifest(db_dir)
    if not m.features or FeatureSpec.from_dict(m.features).is_current:
        return None
    new = FeatureSpec.from_dict(m.features).current()
    rewrite_features(db_dir, new, database_url=database_url, batch=batch, progress=progress)
    return new


def rewrite_features(db_dir: str | Path, spec, *, database_url: str | None = None, batch: int = UPGRADE_BATCH,
                     progress: bool = False) -> int:
    """Store ``spec``'s features of every entry whose stored vector is not ``spec.dim`` long; returns how many.

    Each entry's masks are read from its array (the database's thresholds), ``batch`` entries per transaction.
    """
    from gliofit.common.progress import progress_bar
    from gliofit.simulations_db.database import open_database
    from gliofit.simulations_db.features import entry_features
    from gliofit.simulations_db.store import VISIBLE_LEVEL, threshold_level

    db = open_database(db_dir, database_url)                  # read-only: the arrays and entry ids
    writer = _engine(db_dir, database_url)
    done = 0
    try:
        th = db.manifest.thresholds
        levels = (threshold_level(th["edema"]), threshold_level(th["core"]))
        read = db.read_visible if min(levels) >= VISIBLE_LEVEL else db.read_entries
        ids = np.sort(db.entries["id"])
        stmt = update(entries_t).where(entries_t.c.id == bindparam("eid")).values(features=bindparam("blob"))
        with progress_bar(disable=not progress) as bar:
            task = bar.add_task(f"features v{spec.version}", total=len(ids))
            for s in range(0, len(ids), batch):
                chunk = ids[s:s + batch]
                with db.engine.connect() as conn:
                    size = dict(conn.execute(select(entries_t.c.id, func.length(entries_t.c.features))
                                             .where(entries_t.c.id.between(int(chunk[0]), int(chunk[-1])))).all())
                todo = [int(i) for i in chunk if size.get(int(i)) != 4 * spec.dim]
                rows = [{"eid": i, "blob": np.asarray(entry_features(spec, crop >= levels[0], crop >= levels[1],
                                                                      tuple(box[:3])), dtype="<f4").tobytes()}
                        for i, (box, crop) in zip(todo, read(todo))]
                if rows:
                    with writer.begin() as conn:
                        conn.execute(stmt, rows)
                done += len(rows)
                bar.advance(task, len(chunk))
    finally:
        db.close()
        writer.dispose()
    return done


def rebuild_index(db_dir: str | Path, kind: str = "auto", *, database_url: str | None = None, seed: int = 0,
                  attempts: int = 3, batch: int = FEATURE_BATCH, upgrade: bool = False,
                  progress: bool = False) -> dict:
    """Build the index over all entries, save it, record it; returns ``{"kind", "entries", "version", "path",
    "features_version"}``.

    Features are streamed (module docstring): a seeded sample trains the index, then ``batch`` rows at
    a time are added. With ``upgrade`` (``gliofit db index``), features of an older version are recomputed
    first (:func:`upgrade_features`); without it the index is built from the features as stored.
    """
    from dataclasses import replace

    from gliofit.simulations_db.features import FeatureSpec
    from gliofit.simulations_db.index import KINDS, TRAIN_SAMPLE, train_index

    if kind not in KINDS:
        raise InputError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    db_dir = Path(db_dir)
    upgraded = upgrade_features(db_dir, database_url=database_url, progress=progress) if upgrade else None
    engine = _engine(db_dir, database_url)
    (db_dir / INDEX_DIR).mkdir(exist_ok=True)
    for _ in range(attempts):
        ids = _entry_ids(engine)
        if len(ids) == 0:
            if upgraded is not None:
                write_manifest(db_dir, replace(read_manifest(db_dir), features=upgraded.to_dict()))
            return {"kind": None, "entries": 0, "version": None, "path": None}
        sample = ids[np.random.default_rng(seed).permutation(len(ids))[:TRAIN_SAMPLE]]
        index = train_index(_features_of(engine, sample), kind, len(ids), seed)
        for got, feats in iter_features(engine, ids, batch):
            if len(got):
                index.add(feats, got)
        with engine.begin() as conn:
            n_now = conn.execute(select(func.count()).select_from(entries_t)).scalar()
            if n_now != len(ids) or index.ntotal != len(ids):
                continue                            # entries changed while building: build again
            version = (conn.execute(select(func.max(index_versions_t.c.version))).scalar() or 0) + 1
            rel = f"{INDEX_DIR}/index-v{version}.faiss"
            index.save(db_dir / rel)
            conn.execute(insert(index_versions_t).values(
                version=version, kind=index.kind, entries=index.ntotal, path=rel,
                checksum=file_sha256(db_dir / rel), created_at=time.time()))
        if upgraded is not None:
            write_manifest(db_dir, replace(read_manifest(db_dir), features=upgraded.to_dict()))
        _remove_older(db_dir, version)
        spec = read_manifest(db_dir).features
        return {"kind": index.kind, "entries": index.ntotal, "version": version, "path": rel,
                "features_version": FeatureSpec.from_dict(spec).version if spec else None}
    raise RuntimeError(f"{db_dir}: entries kept changing while the index was built ({attempts} attempts)")


def _remove_older(db_dir: Path, version: int) -> None:
    """Delete index files of versions below ``version`` (a newer one from another builder stays)."""
    for p in (db_dir / INDEX_DIR).glob("index-v*.faiss*"):
        v = p.name[len("index-v"):].split(".", 1)[0]
        if v.isdigit() and int(v) < version:
            p.unlink(missing_ok=True)
