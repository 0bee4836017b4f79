"""Repeated SIGKILLs, then one uninterrupted run: the same database / results as a run never killed."""

from __future__ import annotations

import csv

import pytest
from faulthelpers import (
    GLIOFIT,
    N_SIMULATIONS,
    build_args,
    db_content,
    gliofit,
    leftovers,
)
from storm import build_storm, cohort_storm

from gliofit.pipelines.run import STAGES
from gliofit.simulations_db.reindex import index_is_current
from gliofit.simulations_db.verify import verify_database

pytestmark = pytest.mark.slow


def test_db_build_kill_storm_then_resume_equals_an_uninterrupted_build(tiny_db, tmp_path):
    db = tmp_path / "DB"
    args = build_args(db, N_SIMULATIONS, "--workers", "2", "--batch-size", "1")
    report = build_storm(db, N_SIMULATIONS, args, kills=8, seed=3)
    assert report.injected >= 5, report
    assert report.leaked_processes == 0, report
    r = gliofit(*args[1:])
    assert r.returncode == 0, r.stderr
    assert db_content(db) == db_content(tiny_db)
    assert verify_database(db) == []
    assert index_is_current(db)
    assert leftovers(db) == []


def _table(out) -> dict[str, dict]:
    with open(out / "results.csv", newline="") as f:
        return {row["patient"]: {k: v for k, v in row.items() if k not in STAGES} for row in csv.DictReader(f)}


def test_cohort_kill_storm_then_resume_equals_an_uninterrupted_run(tiny_db, phantom_cohort, tmp_path):
    def args(out):
        return [
            GLIOFIT,
            "cohort",
            str(phantom_cohort),
            "--db",
            str(tiny_db),
            "--registration",
            "none",
            "--workers",
            "2",
            "--no-progress",
            "-o",
            str(out),
        ]

    out = tmp_path / "OUT"
    # kills within a second of a patient's start: a small cohort on a quiet machine outruns longer delays
    report = cohort_storm(out, args(out), kills=3, seed=5, max_delay_s=1.0)
    assert report.injected >= 2 and report.leaked_processes == 0, report
    r = gliofit(*args(out)[1:])
    assert r.returncode == 0, r.stderr
    reference = tmp_path / "REF"
    r = gliofit(*args(reference)[1:])
    assert r.returncode == 0, r.stderr
    assert _table(out) == _table(reference)
    assert all(row["status"] == "ok" for row in _table(out).values())
    assert leftovers(out) == []
