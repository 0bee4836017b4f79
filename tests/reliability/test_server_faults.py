"""PostgreSQL restarted in the middle of a build: the build reconnects or fails in one line, and a rerun
completes exactly (the test owns its server: initdb + pg_ctl on a free port)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from faulthelpers import N_SIMULATIONS, build_args, db_content, gliofit, wait_until
from pgserver import own_postgres
from sqlalchemy import create_engine, text

from gliofit.simulations_db.verify import verify_database


def _done(url: str) -> int:
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 2})
        try:
            with engine.connect() as conn:
                return conn.execute(text("SELECT count(*) FROM simulations WHERE status = 'done'")).scalar() or 0
        finally:
            engine.dispose()
    except Exception:  # noqa: BLE001 - no table yet, or the server is down
        return 0


@pytest.mark.slow
def test_server_restart_mid_build_then_rerun_is_exact(tiny_db, tmp_path):
    with own_postgres(tmp_path / "pg") as server:
        db = tmp_path / "DB"
        args = build_args(db, N_SIMULATIONS, "--workers", "2", "--batch-size", "1", "--database-url", server.url)
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1")
        )
        try:
            assert wait_until(lambda: _done(server.url) >= 3 or proc.poll() is not None, 300.0)
            assert proc.poll() is None, "the build finished before the server could be restarted"
            server.stop("fast")  # every connection is cut
            time.sleep(2.0)
            server.start()
            _, err = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert proc.returncode == 0 or (proc.returncode in (1, 2) and len(lines) == 1), err
        r = gliofit(*args[1:])
        assert r.returncode == 0, r.stderr
        assert db_content(db, server.url) == db_content(tiny_db)
        assert verify_database(db, server.url) == []
