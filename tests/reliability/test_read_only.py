"""Opening a database never writes: a read-only mount serves queries; readers survive a concurrent rebuild."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from faulthelpers import build_args, gliofit, read_only_view
from sqlalchemy import create_engine, text

from gliofit.common.errors import InputError
from gliofit.simulations_db.database import migrate_database, open_database
from gliofit.simulations_db.verify import verify_database

HERE = Path(__file__).parent
_EMPTY = hashlib.sha256(b"").hexdigest()


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_open_database_changes_no_file(tiny_db, tmp_path):
    db = shutil.copytree(tiny_db, tmp_path / "DB")
    before = _snapshot(db)
    d = open_database(db)
    try:
        d.info()
        d.read_entries(d.entries["id"][:3])
        assert d.index.ntotal == len(d.entries["id"])
    finally:
        d.close()
    after = _snapshot(db)
    lock_files = {k for k in after.keys() | before.keys() if k.endswith("-shm")}  # SQLite's reader locks
    new_wal = {k for k in after.keys() - before.keys() if k.endswith("-wal") and after[k] == _EMPTY}
    assert {k: v for k, v in after.items() if k not in lock_files | new_wal} == {
        k: v for k, v in before.items() if k not in lock_files
    }


def test_schema_of_another_version_is_reported_not_migrated(tiny_db, tmp_path):
    db = shutil.copytree(tiny_db, tmp_path / "DB")
    engine = create_engine(f"sqlite:///{db / 'gliofit.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE schema_version SET version = 99"))
    engine.dispose()
    with pytest.raises(InputError, match="schema version 99 is newer"):
        open_database(db)
    with pytest.raises(InputError, match="newer"):
        migrate_database(db)


def test_read_only_mount_serves_info_verify_and_infer(tiny_db, tiny_seg, tmp_path):
    with read_only_view(tiny_db, tmp_path / "RO") as ro:
        r = gliofit("db", "verify", str(ro))
        assert r.returncode == 0, r.stderr
        r = gliofit(
            "infer",
            "--db",
            str(ro),
            "--seg",
            str(tiny_seg),
            "--in-atlas-space",
            "--no-refine",
            "-o",
            str(tmp_path / "OUT"),
        )
        assert r.returncode == 0, r.stderr
        assert json.loads((tmp_path / "OUT" / "result.json").read_text())["fit"]["dice_mean"] > 0.5


@pytest.mark.slow
def test_read_only_mount_serves_run_and_cohort(tiny_db, phantom_cohort, tmp_path):
    with read_only_view(tiny_db, tmp_path / "RO") as ro:
        patient = sorted(phantom_cohort.iterdir())[0]
        r = gliofit(
            "run", str(patient), "--db", str(ro), "--registration", "none", "--no-refine", "-o", str(tmp_path / "RUN")
        )
        assert r.returncode == 0, r.stderr
        r = gliofit(
            "cohort",
            str(phantom_cohort),
            "--db",
            str(ro),
            "--registration",
            "none",
            "--workers",
            "2",
            "--no-progress",
            "-o",
            str(tmp_path / "COH"),
        )
        assert r.returncode == 0, r.stderr
        rows = (tmp_path / "COH" / "results.csv").read_text().splitlines()
        assert len(rows) == 3 and all(",ok," in row for row in rows[1:]), rows


def start_readers(db: Path, seg: Path, work: Path, n: int) -> tuple[list[subprocess.Popen], Path, list[Path]]:
    """``n`` processes running infer on ``db`` in a loop until the returned stop file exists."""
    stop, reports = work / "stop", [work / f"reader{i}.json" for i in range(n)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "reader_loop.py"), str(db), str(seg), str(stop), str(rep)], env=env
        )
        for rep in reports
    ]
    return procs, stop, reports


@pytest.mark.slow
def test_readers_never_fail_while_the_database_grows_and_reindexes(tiny_db, tiny_seg, tmp_path):
    db = shutil.copytree(tiny_db, tmp_path / "DB")
    readers, stop, reports = start_readers(db, tiny_seg, tmp_path, 2)
    try:
        steps = [build_args(db, 30, "--workers", "1")] + [["db", "index", str(db), "--kind", "flat"]] * 4
        for args in steps:
            r = subprocess.run(
                args if args[0] != "db" else [build_args(db)[0], *args], capture_output=True, text=True, timeout=600
            )
            assert r.returncode == 0, r.stderr
    finally:
        stop.touch()
        for p in readers:
            p.wait(timeout=300)
    got = [json.loads(rep.read_text()) for rep in reports]
    assert all(g["failures"] == [] for g in got), [g["failures"][:2] for g in got]
    assert sum(g["ok"] for g in got) >= 4
    assert len(set().union(*(g["versions"] for g in got))) >= 2, got  # they saw the index change
    assert verify_database(db) == []
