"""Move a database's entry features to the current version (``gliofit db index``).

Each entry's features are recomputed from its stored array and rewritten in SQL,
a batch per transaction; rows already at the new length are skipped, so an
interrupted upgrade resumes. The manifest is not touched here:
:func:`~gliofit.simulations_db.reindex.rebuild_index` records the new spec once
the index over the new features is committed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import bindparam, func, select, update

from gliofit.simulations_db.manifest import read_manifest
from gliofit.simulations_db.schema import database_url_for, entries_t, make_engine

__all__ = ["UPGRADE_BATCH", "rewrite_features", "upgrade_features"]

UPGRADE_BATCH = 2_000
"""Entries whose features are recomputed (and committed) at a time by :func:`upgrade_features`."""


def upgrade_features(
    db_dir: str | Path, *, database_url: str | None = None, batch: int = UPGRADE_BATCH, progress: bool = False
):
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


def rewrite_features(
    db_dir: str | Path, spec, *, database_url: str | None = None, batch: int = UPGRADE_BATCH, progress: bool = False
) -> int:
    """Store ``spec``'s features of every entry whose stored vector is not ``spec.dim`` long; returns how many.

    Each entry's masks are read from its array (the database's thresholds), ``batch`` entries per transaction.
    """
    from gliofit.common.progress import progress_bar
    from gliofit.simulations_db.database import open_database
    from gliofit.simulations_db.features import entry_features
    from gliofit.simulations_db.store import VISIBLE_LEVEL, threshold_level

    db = open_database(db_dir, database_url)  # read-only: the arrays and entry ids
    writer = make_engine(database_url_for(db_dir, read_manifest(db_dir), database_url))
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
                chunk = ids[s : s + batch]
                with db.engine.connect() as conn:
                    size = dict(
                        conn.execute(
                            select(entries_t.c.id, func.length(entries_t.c.features)).where(
                                entries_t.c.id.between(int(chunk[0]), int(chunk[-1]))
                            )
                        ).all()
                    )
                todo = [int(i) for i in chunk if size.get(int(i)) != 4 * spec.dim]
                rows = [
                    {
                        "eid": i,
                        "blob": np.asarray(
                            entry_features(spec, crop >= levels[0], crop >= levels[1], tuple(box[:3])), dtype="<f4"
                        ).tobytes(),
                    }
                    for i, (box, crop) in zip(todo, read(todo))
                ]
                if rows:
                    with writer.begin() as conn:
                        conn.execute(stmt, rows)
                done += len(rows)
                bar.advance(task, len(chunk))
    finally:
        db.close()
        writer.dispose()
    return done
