"""The entries table kept in the user cache: the same arrays as SQL's, memory-mapped, renewed when the
database gains entries."""

from __future__ import annotations

import shutil

import numpy as np
from dbhelpers import RESOLUTION_MM, RULE

from gliofit.common.cache import CACHE_ENV
from gliofit.simulations_db import database as database_mod
from gliofit.simulations_db.build import build_database
from gliofit.simulations_db.database import open_database


def _assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_cached_table_equals_sql_and_follows_new_entries(reference_db, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(database_mod, "ENTRIES_CACHE_MIN", 1)
    db = tmp_path / "DB"
    shutil.copytree(reference_db, db)
    first = open_database(db)
    from_sql = first.entries
    assert from_sql["id"].flags.writeable  # read from SQL, then written to the cache
    assert len(list((tmp_path / "cache" / "entries").iterdir())) == 1
    again = open_database(db)
    assert not again.entries["id"].flags.writeable  # memory-mapped from the cache
    _assert_same(again.entries, from_sql)
    assert again.shards == first.shards
    crops = again.read_entries(again.entries["id"][:5])
    assert [c[0] for c in crops] == [tuple(b) for b in from_sql["bbox"][:5].tolist()]

    build_database(db, 24, resolution_mm=RESOLUTION_MM, seed=0, workers=1, snapshots=RULE, progress=False)
    grown = open_database(db)
    assert grown.entries["id"].flags.writeable and len(grown.entries["id"]) > len(from_sql["id"])
    _assert_same(grown.entries, grown._entries_from_sql())
    _assert_same(open_database(db).entries, grown.entries)


def test_small_databases_are_read_from_sql_only(reference_db, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    db = open_database(reference_db)
    assert len(db.entries["id"]) < database_mod.ENTRIES_CACHE_MIN
    assert not (tmp_path / "cache").exists()
