"""Pool workers (and the forkserver) die with the process that made them, even when it is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from faulthelpers import (
    build_args,
    done_simulations,
    kill_session,
    session_processes,
    wait_until,
)


@pytest.mark.slow  # a 40-simulation build killed and waited on
def test_sigkill_of_db_build_leaves_no_worker_alive(tmp_path):
    db = tmp_path / "DB"
    proc = subprocess.Popen(
        build_args(db, 40, "--workers", "2", "--batch-size", "1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    try:
        assert wait_until(lambda: done_simulations(db) >= 1 or proc.poll() is not None, 240.0)
        assert proc.poll() is None, "the build finished before it could be killed"
        assert len(session_processes(proc.pid)) >= 3, "no pool was running"  # builder, forkserver, workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert wait_until(lambda: session_processes(proc.pid) == [], 15.0), session_processes(proc.pid)
    finally:
        kill_session(proc.pid)
