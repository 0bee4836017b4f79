"""A build killed with SIGKILL mid-way, then run again with the same command, gives the exact result."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import pytest
from dbhelpers import GLIOFIT, assert_same_content, cli_build_args, content

from gliofit.simulations_db.verify import verify_database


def _done(db) -> int:
    try:
        con = sqlite3.connect(f"file:{db / 'gliofit.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM simulations WHERE status = 'done'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _start_and_kill(db, at_done: int, timeout_s: float = 120.0) -> int:
    """Start the build in its own session; SIGKILL the builder once ``at_done`` simulations are committed."""
    proc = subprocess.Popen(
        [GLIOFIT, *cli_build_args(db, 20, "--workers", "2", "--batch-size", "1")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    while _done(db) < at_done and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # let orphaned pool workers notice and exit
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of its session is left, also mid-write
    except ProcessLookupError:
        pass
    return _done(db)


@pytest.mark.slow
def test_sigkill_mid_build_then_same_command_gives_exact_result(reference_db, tmp_path):
    db = tmp_path / "DB"
    first = _start_and_kill(db, 2)
    second = _start_and_kill(db, first + 4)
    assert first < 20 and second < 20, "the builds finished before they could be killed"
    assert verify_database(db) != []  # unfinished: verify says so
    r = subprocess.run([GLIOFIT, *cli_build_args(db, 20, "--workers", "2")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert_same_content(content(reference_db), content(db))
    assert verify_database(db) == []
    names = sorted(p.name for p in (db / "arrays").iterdir())
    assert not any(n.endswith(".tmp") for n in names)  # half-written shards were collected
