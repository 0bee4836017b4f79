"""PostgreSQL: two builders on one database at once lose and duplicate nothing.

The server is the one named by ``GLIOFIT_TEST_POSTGRES_URL`` (``.ci/run`` starts one), else one this
session starts with ``.ci/postgres``. Without a server the test is skipped, except under CI
(``CI`` set), where it fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from dbhelpers import GLIOFIT
from sqlalchemy import create_engine, func, select, text

from gliofit.simulations_db.reindex import rebuild_index
from gliofit.simulations_db.schema import build_runs_t, entries_t, simulations_t
from gliofit.simulations_db.verify import verify_database

URL_VARIABLE = "GLIOFIT_TEST_POSTGRES_URL"
SERVER_SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "postgres"


def _no_server(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but no PostgreSQL server: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server():
    """The URL of a PostgreSQL server: the given one, or one started for this session."""
    if os.environ.get(URL_VARIABLE):
        yield os.environ[URL_VARIABLE]
        return
    started = subprocess.run([str(SERVER_SCRIPT), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        _no_server(f"{URL_VARIABLE} is not set and .ci/postgres could not start one: {started.stderr.strip()}")
    folder, url = started.stdout.split()
    try:
        yield url
    finally:
        subprocess.run([str(SERVER_SCRIPT), "stop", folder], check=False)


@pytest.fixture
def pg_url(pg_server):
    """A fresh schema on the test server (dropped afterwards) and a URL whose search_path is it."""
    engine = create_engine(pg_server, connect_args={"connect_timeout": 5})
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure to connect means: no server here
        _no_server(
            f"PostgreSQL at {engine.url.render_as_string(hide_password=True)} does not answer ({type(exc).__name__})"
        )
    schema = "gliofit_test_" + uuid.uuid4().hex[:12]
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in pg_server else "?"
    try:
        yield f"{pg_server}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def _args(db, n: int, *extra: str) -> list[str]:
    return [
        GLIOFIT,
        "db",
        "build",
        str(db),
        "--simulations",
        str(n),
        "--resolution",
        "6",
        "--snapshots",
        "4",
        "--max-days",
        "300",
        "--workers",
        "1",
        "--batch-size",
        "1",
        "--no-progress",
        *extra,
    ]


def _claims_per_run(conn) -> dict[int, int]:
    rows = conn.execute(
        select(simulations_t.c.claimed_by, func.count())
        .where(simulations_t.c.status == "claimed")
        .group_by(simulations_t.c.claimed_by)
    ).all()
    return {int(r): int(k) for r, k in rows if r is not None}


@pytest.mark.slow
def test_two_builders_at_once_lose_and_duplicate_nothing(tmp_path, pg_url):
    db = tmp_path / "DB"
    r = subprocess.run(_args(db, 2, "--database-url", pg_url), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not (db / "gliofit.sqlite").exists()  # the rows live on the server
    n = 12
    # Barrier: while this connection holds the entries table, no builder can commit a simulation; release
    # it only once both builders have claimed work, so each of them commits some (no timing involved).
    barrier = create_engine(pg_url)
    with barrier.connect() as hold:
        hold.execute(text("LOCK TABLE entries IN EXCLUSIVE MODE"))  # reads still pass
        procs = [
            subprocess.Popen(_args(db, n), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
        ]  # the URL comes from the manifest
        deadline = time.monotonic() + 300
        with barrier.connect() as watch:
            while len(_claims_per_run(watch)) < 2:
                watch.rollback()
                assert all(p.poll() is None for p in procs), [p.communicate()[1] for p in procs]
                assert time.monotonic() < deadline, "the two builders never held claims at the same time"
                time.sleep(0.2)
        hold.rollback()  # release the entries table
    barrier.dispose()
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        runs = conn.execute(
            select(build_runs_t.c.status, build_runs_t.c.simulations_done).order_by(build_runs_t.c.id)
        ).all()
        sims = conn.execute(
            select(simulations_t.c.id, simulations_t.c.status, simulations_t.c.n_entries).order_by(simulations_t.c.id)
        ).all()
        per_sim = dict(
            conn.execute(select(entries_t.c.simulation_id, func.count()).group_by(entries_t.c.simulation_id)).all()
        )
    engine.dispose()
    assert [s for s, _ in runs] == ["finished"] * 3
    assert runs[1][1] > 0 and runs[2][1] > 0, f"a builder committed nothing: {runs}"
    assert sum(k for _, k in runs) == n  # every simulation committed exactly once
    assert [s[0] for s in sims] == list(range(n)) and {s[1] for s in sims} == {"done"}
    assert all(per_sim.get(i, 0) == k for i, _, k in sims)
    assert verify_database(db) == []
    info = json.loads(
        subprocess.run([GLIOFIT, "db", "info", str(db)], capture_output=True, text=True, check=True).stdout
    )
    assert info["simulations"] == n and info["index"]["entries"] == info["entries"] == sum(per_sim.values())


@pytest.mark.slow
def test_two_index_rebuilds_at_once_take_distinct_versions(tmp_path, pg_url):
    """Two rebuilds that reach the version record together (held at it by a lock this test takes, then
    released) both commit, each under its own version, and the newest index passes verify."""
    db = tmp_path / "DB"
    r = subprocess.run(_args(db, 2, "--database-url", pg_url), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    results: list = []

    def rebuild() -> None:
        try:
            results.append(rebuild_index(db))
        except Exception as exc:  # noqa: BLE001 - the test reports whatever a rebuild raised
            results.append(exc)

    engine = create_engine(pg_url)
    waiting = text(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON l.relation = c.oid "
        "WHERE c.relname = 'index_versions' AND NOT l.granted"
    )
    with engine.connect() as hold:
        hold.execute(text("LOCK TABLE index_versions IN SHARE ROW EXCLUSIVE MODE"))
        threads = [threading.Thread(target=rebuild) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        with engine.connect() as watch:
            while watch.execute(waiting).scalar() < 2:
                watch.rollback()
                assert not results, results
                assert time.monotonic() < deadline, "the two rebuilds never waited on the version record together"
                time.sleep(0.1)
        hold.rollback()
    for t in threads:
        t.join(timeout=120)
    engine.dispose()
    assert len(results) == 2 and all(isinstance(x, dict) for x in results), results
    assert len({x["version"] for x in results}) == 2
    assert verify_database(db) == []
