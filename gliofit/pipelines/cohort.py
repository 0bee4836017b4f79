"""A cohort: every patient folder through :func:`~gliofit.pipelines.run.run_patient`, in parallel, resumable.

Layout of ``OUT``::

    OUT/<patient>/result.json ...   a finished patient (the folder appears whole, see run.py)
    OUT/.failed/<patient>.json      a failed patient: {"patient", "error", "kind", "seconds"}
    OUT/results.csv                 one row per patient run so far (INTERFACES.md columns)
    OUT/cohort.png, OUT/index.html  parameter distributions, Dice histogram; links to every report

Resuming: a patient with ``OUT/<patient>/result.json`` is finished and skipped; every other one
(never run, in flight when the last run died, or failed) runs again (the temporary folders of the
patients in flight are removed first; one cohort run per OUT at a time: a second start exits 2 naming
the first, see :data:`LOCK_NAME`), so a crash loses at most the
patients in flight and a fixed input is picked up by the next run. ``results.csv`` is read from the
folders once at the start, kept in memory and rewritten (atomically) after every patient, so it always
agrees with them. A failure never stops
the cohort: :func:`run_one` turns it into a failure record with a one-line reason.

Parallelism (:mod:`gliofit.common.executors`): ``workers`` local processes (default: all cores, the
threads shared between them) or the workers of a Dask cluster at ``scheduler``; each task opens the
database itself.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

from gliofit.common.errors import InputError, storage_error
from gliofit.common.executors import make_executor
from gliofit.common.io import write_json, write_text
from gliofit.common.locks import exclusive_lock
from gliofit.common.progress import progress_bar
from gliofit.common.wording import fit_warnings
from gliofit.inverse.estimate import PARAMETER_KEYS
from gliofit.pipelines.patient import check_patient_name, find_patients
from gliofit.pipelines.run import REGISTRATIONS, STAGES, output_folder_ready

__all__ = [
    "PARAMETER_KEYS",
    "FIT_KEYS",
    "csv_columns",
    "result_row",
    "failure_row",
    "run_one",
    "run_cohort",
    "collect_rows",
    "write_results_csv",
]

FIT_KEYS = ("dice_whole_tumor", "dice_core", "dice_mean")
_FAILED = ".failed"
LOCK_NAME = ".gliofit.lock"
"""``OUT/.gliofit.lock``: held by the one cohort run writing OUT (a second start exits 2 naming it)."""
MAX_CRASHES = 2
"""Worker deaths a patient may be in flight for before it is recorded as failed."""
_ORIGIN = ("origin_x_mm", "origin_y_mm", "origin_z_mm")


def csv_columns() -> list[str]:
    """results.csv columns: patient, status, error, parameters (origin split in three), their 95%
    intervals, the fit, the timings, the warnings (docs/interfaces.md)."""
    params = [c for k in PARAMETER_KEYS for c in (_ORIGIN if k == "origin_mm" else (k,))]
    ci = [f"{c}_ci95_{side}" for c in params for side in ("low", "high")]
    return ["patient", "status", "error", *params, *ci, *FIT_KEYS, *STAGES, "warnings"]


def result_row(patient: str, result: dict) -> dict[str, Any]:
    """A results.csv row from a result.json dict."""
    row: dict[str, Any] = {"patient": patient, "status": "ok", "error": ""}
    p, u = result["parameters"], result.get("uncertainty", {})
    for key in PARAMETER_KEYS:
        names = _ORIGIN if key == "origin_mm" else (key,)
        values = p[key] if key == "origin_mm" else [p[key]]
        ci = u.get(key, {}).get("ci95")
        for i, name in enumerate(names):
            row[name] = values[i]
            if ci is not None:
                low, high = ci
                row[f"{name}_ci95_low"] = low[i] if key == "origin_mm" else low
                row[f"{name}_ci95_high"] = high[i] if key == "origin_mm" else high
    row.update({k: result["fit"].get(k, "") for k in FIT_KEYS})
    row.update({k: result.get("timings_s", {}).get(k, "") for k in STAGES})
    row["warnings"] = "; ".join(result.get("warnings", fit_warnings(result["fit"])))
    return row


def failure_row(record: dict) -> dict[str, Any]:
    """A results.csv row from a failure record."""
    return {
        "patient": record["patient"],
        "status": "failed",
        "error": record["error"],
        "total": record.get("seconds", ""),
    }


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return (
        text if isinstance(exc, (InputError, ValueError, OSError)) else f"internal error: {type(exc).__name__}: {text}"
    )


def run_one(task: dict) -> dict:
    """Run one patient (a pool task); never raises for a patient's failure.

    ``task``: patient_dir, out_dir (the cohort's OUT), db, and :func:`run_patient` options
    (``options``), ``threads`` (torch threads in this worker; the numba kernels follow them).
    Returns ``{"patient", "status", "row"}``; a failure is also written to ``OUT/.failed/<patient>.json``.
    """
    from gliofit.pipelines.run import run_patient

    t0 = time.perf_counter()
    name = Path(task["patient_dir"]).name
    out = Path(task["out_dir"])
    failed = out / _FAILED / f"{name}.json"
    if task.get("threads"):
        import torch

        torch.set_num_threads(int(task["threads"]))
    try:
        check_patient_name(name, task["patient_dir"])
        result = run_patient(task["patient_dir"], task["db"], out / name, **task.get("options", {}))
    except Exception as exc:  # noqa: BLE001 - a patient's failure is recorded, never fatal to the cohort
        full = storage_error(exc, out)
        if full is not None:  # the cohort's own disk, not the patient: stop, the next run resumes
            raise full from None
        record = {
            "patient": name,
            "error": _one_line(exc),
            "kind": type(exc).__name__,
            "seconds": round(time.perf_counter() - t0, 3),
            "traceback": traceback.format_exc(limit=8),
        }
        write_json(record, failed)
        return {"patient": name, "status": "failed", "row": failure_row(record)}
    failed.unlink(missing_ok=True)
    return {"patient": name, "status": "ok", "row": result_row(name, result)}


def collect_rows(out_dir: str | Path, patients: list[str]) -> list[dict]:
    """results.csv rows for ``patients`` (in that order) from what ``out_dir`` holds; patients not yet
    run are left out."""
    out = Path(out_dir)
    rows = []
    for name in patients:
        done, failed = out / name / "result.json", out / _FAILED / f"{name}.json"
        if done.is_file():
            rows.append(result_row(name, json.loads(done.read_text())))
        elif failed.is_file():
            rows.append(failure_row(json.loads(failed.read_text())))
    return rows


def write_results_csv(rows: list[dict], path: str | Path) -> Path:
    """Write ``rows`` as results.csv (all columns, empty where a row has no value), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=csv_columns(), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return write_text(buf.getvalue(), path)


def _remove_leftovers(out: Path) -> None:
    """Remove the temporary folders of patients that were in flight when an earlier run died
    (``OUT/.<patient>.part-<pid>``, see :mod:`gliofit.pipelines.run`)."""
    import shutil

    for p in out.glob(".*.part-*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _finished(out: Path, name: str) -> bool:
    return (out / name / "result.json").is_file()


def _pool(workers: int | None, scheduler: str | None):
    return make_executor(workers, scheduler, threads_per_task=None, preload=("gliofit.pipelines.run",))


def _drive(todo: list[Path], base: dict, workers: int | None, scheduler: str | None, on_done) -> int:
    """Run ``todo`` on a pool, calling ``on_done(patient, row)`` after each; returns how many ran.

    A worker process that dies (a crash in native code) breaks a local pool: the pool is made again and the
    patients in flight run again; a patient in flight at :data:`MAX_CRASHES` such deaths is recorded as failed.
    """
    from concurrent.futures.process import BrokenProcessPool

    executor = _pool(workers, scheduler)
    pending, in_flight, crashes, ran = list(todo), {}, dict.fromkeys([p.name for p in todo], 0), 0
    try:
        while pending or in_flight:
            while pending and len(in_flight) < executor.slots:
                folder = pending.pop(0)
                task = base | {"patient_dir": str(folder.resolve()), "threads": executor.threads}
                in_flight[executor.submit(run_one, task)] = folder
            broken = False
            for fut in executor.wait_first(list(in_flight)):
                folder = in_flight.pop(fut)
                try:
                    row = fut.result()["row"]
                except BrokenProcessPool:
                    broken = True
                    crashes[folder.name] += 1
                    if crashes[folder.name] < MAX_CRASHES:
                        pending.insert(0, folder)
                        continue
                    record = {
                        "patient": folder.name,
                        "error": "the worker process died (a crash in native code or out of memory)",
                        "kind": "BrokenProcessPool",
                    }
                    write_json(record, Path(base["out_dir"]) / _FAILED / f"{folder.name}.json")
                    row = failure_row(record)
                ran += 1
                on_done(folder.name, row)
            if broken:
                pending[:0] = list(in_flight.values())
                in_flight.clear()
                executor.close()
                executor = _pool(workers, scheduler)
    finally:
        executor.close()
    return ran


def run_cohort(
    cohort_dir: str | Path,
    db: str | Path,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    report: bool = True,
    **options: Any,
) -> dict:
    """Run every patient folder of ``cohort_dir`` not finished yet; write ``out_dir``.

    Parameters
    ----------
    cohort_dir : a directory of patient folders (BraTS 2021 / 2023 layouts).
    db : the database directory (each task opens it).
    out_dir : the cohort's output folder (see the module docstring).
    workers : local processes (default: all cores); 1 runs in this process.
    scheduler : a Dask scheduler address instead of local processes.
    progress : a progress bar on stderr.
    report : write cohort.png and index.html at the end.
    options : :func:`~gliofit.pipelines.run.run_patient` options (model, device, registration, ...).

    Returns
    -------
    ``{"patients", "ok", "failed", "skipped", "ran", "seconds", "results_csv", "index_html"}``.
    """
    from gliofit.simulations_db.manifest import read_manifest

    if workers is not None and scheduler is not None:
        raise InputError("give either workers or scheduler, not both", parameter=("workers", "scheduler"))
    if workers is not None and int(workers) < 1:
        raise InputError(f"workers must be >= 1, got {workers}", parameter="workers")
    if options.get("registration", "syn") not in REGISTRATIONS:
        raise InputError(
            f"registration must be one of {', '.join(REGISTRATIONS)}, got {options['registration']!r}",
            parameter="registration",
        )
    folders = find_patients(cohort_dir)
    db_path = Path(db)
    read_manifest(db_path)  # not a database: one line before any patient runs
    out = output_folder_ready(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out / LOCK_NAME, f"cohort output {out}"):
        _remove_leftovers(out)
        names = [p.name for p in folders]
        todo = [p for p in folders if not _finished(out, p.name)]
        t0 = time.perf_counter()
        ran = 0
        table = {row["patient"]: row for row in collect_rows(out, names)}  # read once; kept up to date below

        def rows() -> list[dict]:
            return [table[n] for n in names if n in table]

        if todo:
            base = {"out_dir": str(out.resolve()), "db": str(db_path.resolve()), "options": options}
            k = None if scheduler else min(len(todo), int(workers) if workers else (os.cpu_count() or 1))
            with progress_bar(disable=not progress) as bar:
                task = bar.add_task("patients", total=len(folders), completed=len(folders) - len(todo))

                def on_done(name: str, row: dict) -> None:
                    table[name] = row
                    write_results_csv(rows(), out / "results.csv")
                    bar.update(task, advance=1)

                ran = _drive(todo, base, k, scheduler, on_done)
        final = rows()
        files = {"results_csv": str(write_results_csv(final, out / "results.csv"))}
        if report:
            from gliofit.pipelines.report import write_cohort_report

            files.update({k: str(v) for k, v in write_cohort_report(out, final).items()})
        ok = sum(r["status"] == "ok" for r in final)
        return {
            "patients": len(folders),
            "ok": ok,
            "failed": len(final) - ok,
            "skipped": len(folders) - len(todo),
            "ran": ran,
            "seconds": round(time.perf_counter() - t0, 2),
            **files,
        }
