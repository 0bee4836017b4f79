"""Benchmark: faults, load and hostile input - kill storms, full disk, read-only and concurrent readers,
crafted files, and a soak cohort; every figure of the reliability suite in one run.

    python benchmarks/faults.py [--quick] [--only buildstorm,cohortstorm,disk,hostile,readers,soak]

Each section builds its own tiny database (6 mm, 4 snapshots up to 300 days, seed 0) or phantom cohort
(3 mm, in atlas space, registration none) in a temporary folder. The baselines run in this process: an
uninterrupted build and an uninterrupted cohort (the storms must end equal to them; their times give the
storm's overhead ratio), and the soak's first ten patients (its last ten are compared with them, and with
patients 11-20, after the workers' first loads).

Figures: kills survived / injected, patients lost (target 0), bytes of temporary files left after
faults (target 0), hostile inputs refused / tried, read-only queries served, reader failures during a
concurrent extension and reindex (target 0), soak throughput and RSS drift (target < 5 %): the workers'
mean RSS when a patient finishes, and their peak RSS since the previous patient finished (VmHWM, reset at
each reading), first ten patients against the last ten.
Full disk and read-only mounts need root (tmpfs and bind mounts); without it those parts are skipped and
say so. ``--quick``: 6 build kills, 3 cohort kills, 20 soak patients. Ends with ``BENCH {json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))

import faulthelpers as fh  # noqa: E402 - the reliability suite's helpers
import hostile  # noqa: E402
import pytest  # noqa: E402 - the helpers skip through pytest; here a skip is reported
import storm  # noqa: E402

N = fh.N_SIMULATIONS


def _build(db: Path, n: int = N, workers: str = "2") -> float:
    t0 = time.perf_counter()
    r = fh.gliofit(*fh.build_args(db, n, "--workers", workers)[1:])
    if r.returncode:
        raise SystemExit(f"reference build failed: {r.stderr}")
    return time.perf_counter() - t0


def _cohort_args(cohort: Path, db: Path, out: Path, workers: int = 2) -> list[str]:
    return [
        fh.GLIOFIT,
        "cohort",
        str(cohort),
        "--db",
        str(db),
        "--registration",
        "none",
        "--workers",
        str(workers),
        "--no-progress",
        "-o",
        str(out),
    ]


def _phantoms(root: Path, n: int, seed: int = 11) -> Path:
    from gliofit.growth.atlas import load_atlas
    from gliofit.segmentation.phantoms import make_phantoms

    make_phantoms(root, n, seed=seed, resolution_mm=3.0, atlas=load_atlas("icbm152"), sim_resolution_mm=3.0)
    return root


def _table(out: Path) -> dict[str, dict]:
    import csv

    from gliofit.pipelines.run import STAGES

    with open(out / "results.csv", newline="") as f:
        return {r["patient"]: {k: v for k, v in r.items() if k not in STAGES} for r in csv.DictReader(f)}


def _garbage_bytes(*roots: Path) -> int:
    return sum(
        p.stat().st_size
        for root in roots
        for p in root.rglob("*")
        if p.is_file() and any(m in p.name for m in fh.LEFTOVER_MARKS)
    )


def build_storm(work: Path, ref_db: Path, build_kills: int) -> dict:
    """A kill storm on a build, then one uninterrupted run, compared with the baseline build."""
    from gliofit.simulations_db.verify import verify_database

    db = work / "STORM_DB"
    args = fh.build_args(db, N, "--workers", "2", "--batch-size", "1")
    t0 = time.perf_counter()
    b = storm.build_storm(db, N, args, kills=build_kills, seed=3)
    r = fh.gliofit(*args[1:])
    build_s = time.perf_counter() - t0
    build_exact = r.returncode == 0 and fh.db_content(db) == fh.db_content(ref_db) and verify_database(db) == []
    return {
        "injected": b.injected,
        "index_kills": b.index_kills,
        "finished_early": b.finished_early,
        "leaked_processes": b.leaked_processes,
        "exact_after_resume": build_exact,
        "survived": b.injected if build_exact else 0,
        "seconds": round(build_s, 1),
        "garbage_bytes": _garbage_bytes(db),
    }


def cohort_storm(work: Path, ref_db: Path, cohort: Path, cohort_kills: int) -> dict:
    """A kill storm on a cohort (parent and workers), then one uninterrupted run, compared with the baseline run."""
    ref_out = work / "REF_OUT"
    t0 = time.perf_counter()
    fh.gliofit(*_cohort_args(cohort, ref_db, ref_out)[1:])
    cohort_ref_s = time.perf_counter() - t0
    out = work / "STORM_OUT"
    t0 = time.perf_counter()
    c = storm.cohort_storm(out, _cohort_args(cohort, ref_db, out), kills=cohort_kills, seed=5)
    r = fh.gliofit(*_cohort_args(cohort, ref_db, out)[1:])
    cohort_s = time.perf_counter() - t0
    got, want = _table(out), _table(ref_out)
    lost = sorted(name for name, row in want.items() if got.get(name, {}).get("status") != "ok")
    differ = sorted(name for name, row in want.items() if got.get(name) != row)
    return {
        "injected": c.injected,
        "worker_kills": c.worker_kills,
        "finished_early": c.finished_early,
        "leaked_processes": c.leaked_processes,
        "patients": len(want),
        "patients_lost": len(lost),
        "rows_differing_from_uninterrupted": len(differ),
        "differing_columns": sorted({k for n in differ for k in want[n] if got.get(n, {}).get(k) != want[n][k]}),
        "survived": c.injected if not lost and r.returncode == 0 else 0,
        "seconds": round(cohort_s, 1),
        "uninterrupted_s": round(cohort_ref_s, 1),
        "garbage_bytes": _garbage_bytes(out),
    }


def full_disk(work: Path, ref_db: Path, seg: Path) -> dict:
    """db build, db index and infer on a small tmpfs: exit 2 and the bytes of temporary files left."""
    out = {"runs": 0, "exit2_one_line": 0, "garbage_bytes": 0, "resumed_exact": 0}
    try:
        for size in ("300k", "900k"):
            with fh.small_filesystem(work / f"fs{size}", size) as fs:
                r = fh.gliofit(*fh.build_args(fs / "DB", N, "--workers", "2")[1:])
                out["runs"] += 1
                out["exit2_one_line"] += (
                    r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no space" in r.stderr
                )
                out["garbage_bytes"] += _garbage_bytes(fs)
                fh.grow_filesystem(fs, "64m")
                r = fh.gliofit(*fh.build_args(fs / "DB", N, "--workers", "2")[1:])
                out["resumed_exact"] += r.returncode == 0 and fh.db_content(fs / "DB") == fh.db_content(ref_db)
        with fh.small_filesystem(work / "fs_infer", "64k") as fs:
            r = fh.gliofit(
                "infer",
                "--db",
                str(ref_db),
                "--seg",
                str(seg),
                "--in-atlas-space",
                "--no-refine",
                "-o",
                str(fs / "OUT"),
            )
            out["runs"] += 1
            out["exit2_one_line"] += r.returncode == 2 and "no space" in r.stderr
            out["garbage_bytes"] += fh.tree_bytes(fs)
    except pytest.skip.Exception as exc:
        out["skipped"] = str(exc)
    return out


def hostile_inputs(work: Path, ref_db: Path, cohort: Path) -> dict:
    """Every crafted input of the suite, through the command line where it has one; refused = exit 2."""
    from gliofit.common.errors import InputError
    from gliofit.pipelines.patient import find_patient
    from gliofit.segmentation.checkpoints import read_checkpoint
    from gliofit.simulations_db.database import open_database

    tried, refused, rows = 0, 0, []
    for name, make in [
        ("gzip_bomb", hostile.gzip_bomb),
        ("huge_header", hostile.huge_header),
        ("nan_affine", hostile.nan_affine),
        ("many_volumes", hostile.many_volumes),
    ]:
        seg = make(work / f"{name}.nii.gz")
        r = fh.gliofit(
            "infer", "--db", str(ref_db), "--seg", str(seg), "--in-atlas-space", "--no-refine", "-o", str(work / name)
        )
        tried += 1
        ok = r.returncode == 2 and not (work / name).exists()
        refused += ok
        rows.append((name, ok))

    def refused_by_library(name: str, fn) -> None:
        nonlocal tried, refused
        tried += 1
        try:
            fn()
            ok = False
        except InputError:
            ok = True
        refused += ok
        rows.append((name, ok))

    src = sorted(cohort.iterdir())[0]
    linked = shutil.copytree(src, work / "linked" / src.name)
    t1 = next(linked.glob("*-t1n.nii.gz"))
    shutil.move(t1, work / "outside.nii.gz")
    t1.symlink_to(work / "outside.nii.gz")
    refused_by_library("symlink_outside", lambda: find_patient(linked))
    ctrl = work / "ctrl" / "Pat\x1bient"
    ctrl.mkdir(parents=True)
    for f in src.iterdir():
        shutil.copy(f, ctrl / f.name.replace(src.name, ctrl.name))
    refused_by_library("control_chars", lambda: find_patient(ctrl))
    marker = work / "pwned"
    ckpt = hostile.code_running_checkpoint(work / "model.pth", marker)
    refused_by_library("pickle_runs_code", lambda: read_checkpoint(ckpt))
    rows[-1] = (rows[-1][0], rows[-1][1] and not marker.exists())
    db = shutil.copytree(ref_db, work / "CRAFTED_DB")
    for name, target in [
        ("faiss_index", next((db / "index").glob("index-v*.faiss"))),
        ("array_shard", max((db / "arrays").iterdir(), key=lambda p: p.stat().st_size)),
    ]:
        original = target.read_bytes()
        target.write_bytes(original[:64] + os.urandom(len(original) - 64))

        def use(db=db):
            d = open_database(db)
            try:
                d.index  # noqa: B018
                d.read_entries(d.entries["id"])
            finally:
                d.close()

        refused_by_library(name, use)
        target.write_bytes(original)
    return {"tried": tried, "refused": sum(ok for _, ok in rows), "cases": dict(rows)}


def readers(work: Path, ref_db: Path, seg: Path, queries: int) -> dict:
    """Queries served from a read-only mount, then two reader processes during an extension and 4 reindexes."""
    import gliofit
    from gliofit.simulations_db.database import open_database

    out: dict = {}
    try:
        with fh.read_only_view(ref_db, work / "RO") as ro:
            served = 0
            d = open_database(ro)
            try:
                for _ in range(queries):
                    served += (
                        0.0
                        <= gliofit.infer(d, seg, in_atlas_space=True, top_k=20, refine=False).fit["dice_mean"]
                        <= 1.0
                    )
            finally:
                d.close()
            out["read_only_queries_served"] = int(served)
            out["read_only_queries_tried"] = queries
    except pytest.skip.Exception as exc:
        out["read_only_skipped"] = str(exc)
    db = shutil.copytree(ref_db, work / "GROWING_DB")
    stop, reports = work / "stop", [work / f"reader{i}.json" for i in range(2)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    loop = Path(fh.__file__).with_name("reader_loop.py")
    procs = [
        subprocess.Popen([sys.executable, str(loop), str(db), str(seg), str(stop), str(rep)], env=env)
        for rep in reports
    ]
    try:
        fh.gliofit(*fh.build_args(db, N + 10, "--workers", "1")[1:])
        for _ in range(4):
            fh.gliofit("db", "index", str(db), "--kind", "flat")
    finally:
        stop.touch()
        for p in procs:
            p.wait()
    got = [json.loads(rep.read_text()) for rep in reports]
    out.update(
        {
            "concurrent_queries_served": sum(g["ok"] for g in got),
            "reader_failures": sum(len(g["failures"]) for g in got),
            "index_versions_seen": sorted(set().union(*(g["versions"] for g in got))),
        }
    )
    return out


def _worker_rss_kb(sid: int, parent: int, reset_peak: bool) -> list[tuple[int, int]]:
    """(VmRSS, VmHWM) in kB of the pool workers of session ``sid``; ``reset_peak`` then resets each worker's
    VmHWM (``/proc/PID/clear_refs`` = 5), so the next peak read is the one since this reading."""
    out = []
    for pid in storm._workers(sid, parent):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            if "forkserver" not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                continue
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if "VmRSS" in fields:
            out.append((int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])))
            if reset_peak:
                with contextlib.suppress(OSError):
                    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return out


def soak(work: Path, ref_db: Path, patients: int) -> dict:
    """A cohort of ``patients`` phantoms with 2 workers; worker RSS sampled as each patient finishes."""
    cohort = _phantoms(work / "SOAK", patients, seed=101)
    out = work / "SOAK_OUT"
    proc = subprocess.Popen(
        _cohort_args(cohort, ref_db, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    samples, t_done, seen = [], [], 0
    t0 = time.perf_counter()
    while proc.poll() is None:
        n = len(list(out.glob("*/result.json"))) if out.exists() else 0
        rss = _worker_rss_kb(proc.pid, proc.pid, reset_peak=n > seen)
        while seen < n:
            seen += 1
            t_done.append(time.perf_counter() - t0)
            if rss:
                samples.append((sum(r for r, _ in rss) / len(rss), max(h for _, h in rss)))
        time.sleep(0.2)
    seconds = time.perf_counter() - t0
    rows = _table(out)
    k = min(10, len(samples) // 2)
    first, last = samples[:k], samples[-k:]

    def mean(xs):
        return sum(xs) / max(1, len(xs))

    rss_first, rss_last = mean([s[0] for s in first]), mean([s[0] for s in last])
    after_warmup = samples[k : 2 * k]  # patients 11-20: the workers' first loads (atlas, index, plots) are done
    rss_warm = mean([s[0] for s in after_warmup])
    hwm_first, hwm_last = mean([s[1] for s in first]), mean([s[1] for s in last])
    return {
        "patients": patients,
        "ok": sum(r["status"] == "ok" for r in rows.values()),
        "exit": proc.returncode,
        "seconds": round(seconds, 1),
        "patients_per_hour": round(len(rows) / seconds * 3600, 1),
        "rss_mb_first10": round(rss_first / 1024, 1),
        "rss_mb_last10": round(rss_last / 1024, 1),
        "rss_drift_pct": round(100 * (rss_last - rss_first) / max(rss_first, 1), 2),
        "peak_rss_mb_first10": round(hwm_first / 1024, 1),
        "peak_rss_mb_last10": round(hwm_last / 1024, 1),
        "peak_rss_drift_pct": round(100 * (hwm_last - hwm_first) / max(hwm_first, 1), 2),
        "rss_mb_patients_11_20": round(rss_warm / 1024, 1),
        "rss_drift_after_warmup_pct": round(100 * (rss_last - rss_warm) / max(rss_warm, 1), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 build kills, 3 cohort kills, 20 soak patients")
    parser.add_argument(
        "--only",
        default="storm,disk,hostile,readers,soak",
        help="comma-separated sections (storm = buildstorm + cohortstorm)",
    )
    parser.add_argument("--soak-patients", type=int, default=None, help="soak cohort size (200; 20 with --quick)")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    build_kills, cohort_kills = (6, 3) if args.quick else (20, 20)
    soak_n = args.soak_patients or (20 if args.quick else 200)
    res: dict = {"quick": args.quick}
    with tempfile.TemporaryDirectory(prefix="gliofit-faults-") as tmp:
        work = Path(tmp)
        ref_db = work / "REF_DB"
        res["reference_build_s"] = round(_build(ref_db), 1)
        seg = fh.entry_segmentation(ref_db, work / "seg.nii.gz")
        cohort = _phantoms(work / "COHORT", 2 if args.quick else 4)
        if "storm" in sections or "buildstorm" in sections:
            res["build_storm"] = build_storm(work, ref_db, build_kills)
            print("build kill storm:", json.dumps(res["build_storm"]), flush=True)
        if "storm" in sections or "cohortstorm" in sections:
            res["cohort_storm"] = cohort_storm(work, ref_db, cohort, cohort_kills)
            print("cohort kill storm:", json.dumps(res["cohort_storm"]), flush=True)
        if "disk" in sections:
            res["full_disk"] = full_disk(work, ref_db, seg)
            print("full disk:", json.dumps(res["full_disk"]), flush=True)
        if "hostile" in sections:
            (work / "hostile").mkdir()
            res["hostile"] = hostile_inputs(work / "hostile", ref_db, cohort)
            print("hostile inputs:", json.dumps(res["hostile"]), flush=True)
        if "readers" in sections:
            res["readers"] = readers(work, ref_db, seg, 5 if args.quick else 20)
            print("readers:", json.dumps(res["readers"]), flush=True)
        if "soak" in sections:
            res["soak"] = soak(work, ref_db, soak_n)
            print("soak:", json.dumps(res["soak"]), flush=True)
    storms = [res[k] for k in ("build_storm", "cohort_storm") if k in res]
    if storms:
        print(f"kills survived / injected: {sum(s['survived'] for s in storms)} / {sum(s['injected'] for s in storms)}")
    if "build_storm" in res:
        print(f"storm build time / uninterrupted build: {res['build_storm']['seconds'] / res['reference_build_s']:.2f}")
    print("BENCH " + json.dumps(res))


if __name__ == "__main__":
    main()
