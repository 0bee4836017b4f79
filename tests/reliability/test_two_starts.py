"""Two starts of one cohort: the second exits 2 naming the first; a killed holder's lock is taken over."""

from __future__ import annotations

import csv
import os
import signal
import subprocess

import pytest
from faulthelpers import GLIOFIT, gliofit, kill_session, one_line_error, wait_until

from gliofit.common.errors import InputError
from gliofit.common.locks import exclusive_lock


def test_lock_names_its_holder_and_is_released_on_exit(tmp_path):
    lock = tmp_path / "OUT" / ".gliofit.lock"
    with exclusive_lock(lock, "cohort output OUT"):
        probe = subprocess.run(
            [
                "python3",
                "-c",
                "import fcntl,os,sys; fd=os.open(sys.argv[1], os.O_RDWR);"
                "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)",
                str(lock),
            ],
            capture_output=True,
        )
        assert probe.returncode != 0  # another process cannot take it
        with pytest.raises(
            InputError, match=rf"cohort output OUT is in use by another gliofit run \(pid {os.getpid()}"
        ):
            with exclusive_lock(lock, "cohort output OUT"):
                pass
    with exclusive_lock(lock, "cohort output OUT"):  # free again
        pass


def _cohort_args(cohort, db, out) -> list[str]:
    return [
        GLIOFIT,
        "cohort",
        str(cohort),
        "--db",
        str(db),
        "--registration",
        "none",
        "--workers",
        "1",
        "--no-progress",
        "-o",
        str(out),
    ]


def _rows(out) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_second_cohort_start_exits_2_and_a_killed_holder_is_taken_over(tiny_db, phantom_cohort, tmp_path):
    out = tmp_path / "OUT"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen(
        _cohort_args(phantom_cohort, tiny_db, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    try:
        assert wait_until(lambda: any(out.glob(".*.part-*")), 240.0), "the first cohort never started a patient"
        r = gliofit(*_cohort_args(phantom_cohort, tiny_db, out)[1:])
        assert r.returncode == 2, r.stderr
        line = one_line_error(r)
        assert f"pid {first.pid}" in line and "in use" in line, line
        os.kill(first.pid, signal.SIGKILL)  # the holder dies: its lock is stale
        first.wait()
    finally:
        kill_session(first.pid)
    r = gliofit(*_cohort_args(phantom_cohort, tiny_db, out)[1:])
    assert r.returncode == 0, r.stderr
    rows = _rows(out)
    assert sorted(row["patient"] for row in rows) == sorted(p.name for p in phantom_cohort.iterdir())
    assert all(row["status"] == "ok" for row in rows)
    assert not any(out.glob(".*.part-*"))
