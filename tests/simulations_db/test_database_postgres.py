"""PostgreSQL: two builders on one database at once lose and duplicate nothing (skipped without a server)."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from dbhelpers import GLIOFIT
from sqlalchemy import create_engine, func, select, text

from gliofit.simulations_db.schema import build_runs_t, entries_t, simulations_t
from gliofit.simulations_db.verify import verify_database

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_url():
    """A fresh schema on the test server (dropped afterwards) and a URL whose search_path is it."""
    try:
        engine = create_engine(SERVER, connect_args={"connect_timeout": 3})
        with engine.begin() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect means: no server here
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 does not answer ({type(exc).__name__})")
    schema = "gliofit_test_" + uuid.uuid4().hex[:12]
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{SERVER}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def _args(db, n: int, *extra: str) -> list[str]:
    # 4 mm and up to 400 days: slow enough (~0.5 s a simulation) that the two builders overlap
    return [GLIOFIT, "db", "build", str(db), "--simulations", str(n), "--resolution", "4", "--snapshots", "4",
            "--max-days", "400", "--workers", "1", "--batch-size", "1", "--no-progress", *extra]


def _done(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM simulations WHERE status = 'done'")).scalar()
    finally:
        engine.dispose()


@pytest.mark.slow
def test_two_builders_at_once_lose_and_duplicate_nothing(tmp_path, pg_url):
    db = tmp_path / "DB"
    r = subprocess.run(_args(db, 2, "--database-url", pg_url), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not (db / "gliofit.sqlite").exists()                # the rows live on the server
    n = 12
    procs = [subprocess.Popen(_args(db, n), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]                                # the URL comes from the manifest
    outs = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        runs = conn.execute(select(build_runs_t.c.status, build_runs_t.c.simulations_done)
                            .order_by(build_runs_t.c.id)).all()
        sims = conn.execute(select(simulations_t.c.id, simulations_t.c.status, simulations_t.c.n_entries)
                            .order_by(simulations_t.c.id)).all()
        per_sim = dict(conn.execute(select(entries_t.c.simulation_id, func.count())
                                    .group_by(entries_t.c.simulation_id)).all())
    engine.dispose()
    assert [s for s, _ in runs] == ["finished"] * 3
    assert runs[1][1] > 0 and runs[2][1] > 0, f"the two builders did not overlap: {runs}"
    assert sum(k for _, k in runs) == n                        # every simulation committed exactly once
    assert [s[0] for s in sims] == list(range(n)) and {s[1] for s in sims} == {"done"}
    assert all(per_sim.get(i, 0) == k for i, _, k in sims)
    assert verify_database(db) == []
    info = json.loads(subprocess.run([GLIOFIT, "db", "info", str(db)], capture_output=True, text=True,
                                     check=True).stdout)
    assert info["simulations"] == n and info["index"]["entries"] == info["entries"] == sum(per_sim.values())
