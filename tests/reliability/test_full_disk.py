"""A full disk: one line naming the path, exit 2, nothing half-written left, and a resume that completes exactly."""

from __future__ import annotations

import shutil

import pytest
from faulthelpers import (
    build_args,
    db_content,
    gliofit,
    grow_filesystem,
    leftovers,
    one_line_error,
    small_filesystem,
)

from gliofit.simulations_db.verify import verify_database


def _assert_full(r, path) -> None:
    assert r.returncode == 2, r.stderr
    line = one_line_error(r)
    assert line.startswith("gliofit: error: no space left on ") and str(path) in line, line


def test_infer_on_full_disk_leaves_no_output_folder(tiny_db, tiny_seg, tmp_path):
    with small_filesystem(tmp_path / "fs", "64k") as fs:
        out = fs / "OUT"
        r = gliofit(
            "infer", "--db", str(tiny_db), "--seg", str(tiny_seg), "--in-atlas-space", "--no-refine", "-o", str(out)
        )
        _assert_full(r, out)
        assert not out.exists()
        assert list(fs.iterdir()) == []


@pytest.mark.slow  # a build interrupted by the full disk, then resumed
@pytest.mark.parametrize("size", ["300k", "900k"])
def test_db_build_on_full_disk_then_resume_is_exact(tiny_db, tmp_path, size):
    with small_filesystem(tmp_path / "fs", size) as fs:
        db = fs / "DB"
        r = gliofit(*build_args(db, 20, "--workers", "2")[1:])
        _assert_full(r, db)
        assert leftovers(fs) == []
        grow_filesystem(fs, "64m")
        r = gliofit(*build_args(db, 20, "--workers", "2")[1:])
        assert r.returncode == 0, r.stderr
        assert db_content(db) == db_content(tiny_db)
        assert verify_database(db) == []
        assert leftovers(fs) == []


def test_db_index_on_full_disk_keeps_the_current_index(tiny_db, tmp_path):
    with small_filesystem(tmp_path / "fs", "16m") as fs:
        db = shutil.copytree(tiny_db, fs / "DB")
        ballast = fs / "ballast"
        free = shutil.disk_usage(fs).free
        ballast.write_bytes(b"\0" * max(0, free - 100_000))  # less room than one more index file
        r = gliofit("db", "index", str(db), "--kind", "flat")
        _assert_full(r, db)
        assert leftovers(fs) == []
        assert verify_database(db) == []
        ballast.unlink()
        r = gliofit("db", "index", str(db), "--kind", "flat")
        assert r.returncode == 0, r.stderr
        assert verify_database(db) == []


@pytest.mark.slow
def test_run_on_full_disk_leaves_nothing(tiny_db, phantom_cohort, tmp_path):
    patient = sorted(phantom_cohort.iterdir())[0]
    with small_filesystem(tmp_path / "fs", "200k") as fs:
        out = fs / "OUT"
        r = gliofit(
            "run",
            str(patient),
            "--db",
            str(tiny_db),
            "--registration",
            "none",
            "--no-refine",
            "--quiet",
            "-o",
            str(out),
        )
        _assert_full(r, out)
        assert not out.exists() and leftovers(fs) == []


@pytest.mark.slow
def test_cohort_on_full_disk_stops_then_resumes(tiny_db, phantom_cohort, tmp_path):
    args = [
        "cohort",
        str(phantom_cohort),
        "--db",
        str(tiny_db),
        "--registration",
        "none",
        "--workers",
        "2",
        "--no-progress",
    ]
    with small_filesystem(tmp_path / "fs", "400k") as fs:
        out = fs / "OUT"
        r = gliofit(*args, "-o", str(out))
        _assert_full(r, out)
        assert leftovers(fs) == []
        grow_filesystem(fs, "64m")
        r = gliofit(*args, "-o", str(out))
        assert r.returncode == 0, r.stderr
        rows = (out / "results.csv").read_text().splitlines()
        assert len(rows) == 3 and all(",ok," in row for row in rows[1:]), rows
        assert leftovers(fs) == []
