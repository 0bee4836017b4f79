"""``gliofit cohort``: parallel, resumable, failures recorded; local processes and a Dask LocalCluster."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pipelinehelpers import GLIOFIT

from gliofit.pipelines.cohort import csv_columns, run_cohort


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory, phantom_cohort) -> Path:
    """The three phantoms plus one folder that lacks a modality."""
    root = tmp_path_factory.mktemp("cohortin") / "COHORT"
    root.mkdir()
    for p in phantom_cohort:
        shutil.copytree(p, root / p.name)
    broken = root / "Broken-0001"
    shutil.copytree(phantom_cohort[0], broken)
    for f in broken.iterdir():
        f.rename(broken / f.name.replace(phantom_cohort[0].name, broken.name))
    next(broken.glob("*-t2f.nii.gz")).unlink()
    return root


def _rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, cohort_dir, pipeline_db) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cohortout") / "OUT"
    proc = subprocess.run(
        [
            GLIOFIT,
            "cohort",
            str(cohort_dir),
            "--db",
            str(pipeline_db),
            "-o",
            str(out),
            "--workers",
            "2",
            "--registration",
            "none",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 3, proc.stderr  # one patient failed: the others still finished
    assert proc.stderr.strip().splitlines()[-1].startswith("gliofit: 1 of 4 patients failed")
    return out, json.loads(proc.stdout)


def test_cohort_runs_every_patient_and_records_the_failure(local_run, cohort_dir) -> None:
    out, summary = local_run
    assert summary["patients"] == 4 and summary["ok"] == 3 and summary["failed"] == 1
    rows = _rows(out)
    assert [r["patient"] for r in rows] == sorted(p.name for p in cohort_dir.iterdir())
    with open(out / "results.csv", newline="") as fh:
        assert next(csv.reader(fh)) == csv_columns()
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["patient"] == "Broken-0001" and "t2f" in failed[0]["error"]
    assert "\n" not in failed[0]["error"]
    for r in rows:
        if r["status"] == "ok":
            assert (out / r["patient"] / "result.json").is_file()
            assert float(r["mu_D_mm_ci95_low"]) <= float(r["mu_D_mm_ci95_high"])
            assert r["origin_x_mm"] and r["dice_mean"] and float(r["total"]) > 0
            poor = float(r["dice_mean"]) < 0.5
            assert any(w.startswith("poor fit") for w in r["warnings"].split("; ")) == poor
    index = (out / "index.html").read_text()
    assert all(f"{r['patient']}/report.html" in index for r in rows if r["status"] == "ok")
    assert (out / "cohort.png").stat().st_size > 0


def test_cohort_resumes_skipping_finished_patients(local_run, cohort_dir, pipeline_db, tmp_path) -> None:
    out, _ = local_run
    again = tmp_path / "OUT"
    shutil.copytree(out, again)
    ok = [r["patient"] for r in _rows(again) if r["status"] == "ok"]
    before = (again / ok[0] / "result.json").stat().st_mtime_ns
    removed = ok[1]
    shutil.rmtree(again / removed)  # as if it was in flight when the run died
    summary = run_cohort(cohort_dir, pipeline_db, again, workers=1, progress=False, registration="none")
    assert summary["skipped"] == 2 and summary["ran"] == 2  # the removed one and the failed one again
    assert summary["ok"] == 3 and summary["failed"] == 1
    assert (again / removed / "result.json").is_file()
    assert (again / ok[0] / "result.json").stat().st_mtime_ns == before
    assert len(_rows(again)) == 4


@pytest.mark.slow
def test_dask_cluster_gives_the_same_results(local_run, cohort_dir, pipeline_db, tmp_path) -> None:
    from distributed import LocalCluster

    out, _ = local_run
    with LocalCluster(
        n_workers=2, threads_per_worker=1, host="127.0.0.1", processes=True, dashboard_address=None
    ) as cluster:
        summary = run_cohort(
            cohort_dir,
            pipeline_db,
            tmp_path / "DASK",
            scheduler=cluster.scheduler_address,
            progress=False,
            registration="none",
        )
    assert summary["ok"] == 3 and summary["failed"] == 1
    local = {r["patient"]: r for r in _rows(out)}
    for r in _rows(tmp_path / "DASK"):
        for key in ("status", "mu_D_mm", "mu_rho", "origin_x_mm", "dice_mean"):
            assert r[key] == local[r["patient"]][key], (r["patient"], key)


def test_bad_cohort_input_exits_2(tmp_path, pipeline_db) -> None:
    empty = tmp_path / "EMPTY"
    empty.mkdir()
    for args, needle in (
        ([str(empty)], "no patient folders"),
        ([str(tmp_path / "nope")], "not found"),
        ([str(empty), "--precision", "float8"], "unknown --precision 'float8'"),
    ):
        proc = subprocess.run(
            [GLIOFIT, "cohort", *args, "--db", str(pipeline_db), "-o", str(tmp_path / "O")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_sigkill_mid_cohort_then_resume_finishes_exactly(tmp_path, cohort_dir, pipeline_db) -> None:
    """Kill the cohort (and its workers) once the first patient is done; the rerun finishes the rest, leaving
    no temporary folder and no duplicate row."""
    import os
    import signal
    import time

    out = tmp_path / "OUT"
    cmd = [
        GLIOFIT,
        "cohort",
        str(cohort_dir),
        "--db",
        str(pipeline_db),
        "-o",
        str(out),
        "--workers",
        "1",
        "--registration",
        "none",
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("*/result.json")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = {p.parent.name for p in out.glob("*/result.json")}
    assert done_before, "no patient finished before the kill"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 3, again.stderr
    summary = json.loads(again.stdout)
    assert summary["ok"] == 3 and summary["failed"] == 1 and summary["skipped"] >= len(done_before)
    assert not list(out.glob(".*.part-*"))
    names = [r["patient"] for r in _rows(out)]
    assert sorted(names) == sorted(set(names)) and len(names) == 4
