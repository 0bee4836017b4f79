"""The headline benchmark: our inverse solver against the published exhaustive method, on synthetic patients.

Synthetic patients (``gliofit.inverse.synthetic``): parameters drawn from the FACTS.md reference ranges,
restricted to realistic visible tumours; grown by the solver at ``--patient-resolution`` (1 mm) on the atlas,
independently of the database (another grid, continuous seed points, their own times); thresholded at 0.25 /
0.675 on the 1 mm atlas grid with segmentation noise (boundary jitter 1-2 voxels, misregistration <= 2 mm
and <= 2 degrees); labels in BraTS 2023. Patients are cached under ``--cache`` (regenerated only when missing).

On one database (built with ``build_database`` when missing; reused, extended to ``--simulations`` when
given), in one process, per patient: ``gliofit.infer(method="index")`` (ours) and
``gliofit.infer(method="exhaustive")`` (the published method). Reported (median and IQR over patients):
Dice of the recovered model's masks against the observed ones on the database grid (whole tumour, core,
mean) and on the 1 mm grid from the recovered density; relative error of mu_D, mu_rho and the infiltration
length; origin error (mm); Pearson correlation, in a 20 mm shell of tissue outside the observed tumour, of
the recovered density with the true one; 95 % interval coverage of mu_D, mu_rho; query time and the speed
ratio; and the ceiling: the Dice of the TRUE model's masks against the noisy observed ones (what a perfect
fit scores; the segmentation noise keeps it below 1). Optionally ``--refine K``: ``infer(refine=True)`` on the first K patients (Dice gain and cost).

    python benchmarks/inverse.py [--quick] [--patients N] [--db DIR] [--simulations N] [--resolution MM]
                                 [--cache DIR] [--patient-resolution MM] [--refine K] [--seed S]

Ends with one line ``BENCH {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

CACHE = Path(os.environ.get("GLIOFIT_CACHE", Path.home() / ".cache" / "gliofit"))
SHELL_MM = 20.0
"""Width of the shell outside the observed whole tumour where the density correlation is measured."""
LARGE_CM3 = 20.0
"""Patients whose observed whole tumour has at least this volume form a subgroup (small tumours are few voxels
on a coarse database grid)."""
SUBGROUP_KEYS = ("dice_mean", "rel_error_mu_D", "rel_error_mu_rho", "origin_error_mm", "density_corr_outside")
TARGETS = {"speedup": 50.0, "dice_mean": 0.85, "origin_error_mm": 5.0, "rel_error_mu": 0.20,
           "entries_for_mu_target": 20_000}


def _args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few patients on a small coarse database (<= 1 min "
                    "once the database and patients exist)")
    ap.add_argument("--patients", type=int, help="synthetic patients (default 50; quick 4)")
    ap.add_argument("--db", type=Path, help="database directory (default: under --cache)")
    ap.add_argument("--simulations", type=int, help="build/extend the database to N simulations "
                    "(default: use as is when it exists; else 1000, quick 150)")
    ap.add_argument("--resolution", type=float, help="resolution of a NEW database, mm (default 4; quick 6)")
    ap.add_argument("--cache", type=Path, default=CACHE / "bench-inverse", help="cache of databases and patients")
    ap.add_argument("--patient-resolution", type=float, help="growth grid of the patients, mm (default 1; quick 3)")
    ap.add_argument("--refine", type=int, help="run --refine on the first K patients (default 10; quick 1)")
    ap.add_argument("--refine-budget", type=int, help="forward runs per refine (default 40; quick 9)")
    ap.add_argument("--seed", type=int, default=2024, help="seed of the synthetic patients")
    a = ap.parse_args(argv)
    quick = a.quick
    a.patients = a.patients or (4 if quick else 50)
    a.resolution = a.resolution or (6.0 if quick else 4.0)
    a.patient_resolution = a.patient_resolution or (3.0 if quick else 1.0)
    a.refine = (1 if quick else 10) if a.refine is None else a.refine
    a.refine_budget = a.refine_budget or (9 if quick else 40)
    a.db = a.db or a.cache / f"db-{a.resolution:g}mm"
    return a


def ensure_database(path: Path, n: int | None, resolution_mm: float, default_n: int) -> tuple[float, dict]:
    """Build (or extend/resume) the database; returns (seconds, build report or {})."""
    from gliofit.simulations_db.build import build_database
    from gliofit.simulations_db.manifest import manifest_path

    if manifest_path(path).is_file() and n is None:
        return 0.0, {}
    t0 = time.perf_counter()
    report = build_database(path, n or default_n, resolution_mm=None if manifest_path(path).is_file()
                            else resolution_mm, workers=1, progress=True)
    return time.perf_counter() - t0, report


def ensure_patients(root: Path, n: int, seed: int, atlas, resolution_mm: float, check_mm: float) -> tuple[list[Path], float]:
    """Patient folders ``root/case-XXX`` (generated when missing); returns (folders, seconds spent growing)."""
    from gliofit.common.progress import progress_bar
    from gliofit.inverse.synthetic import grow_patient, sample_parameters
    from gliofit.growth.atlas import resample_atlas

    cases = [root / f"case-{i:03d}" for i in range(n)]
    missing = [c for c in cases if not (c / "truth.json").is_file()]
    if not missing:
        return cases, 0.0
    t0 = time.perf_counter()
    sim_grid = resample_atlas(atlas, resolution_mm)
    check_grid = resample_atlas(atlas, check_mm)
    with progress_bar() as bar:
        task = bar.add_task("growing patients", total=len(missing))
        for case in missing:
            i = int(case.name.split("-")[1])
            rng = np.random.default_rng([seed, i])
            params = sample_parameters(rng, check_grid)
            patient = grow_patient(atlas, params, rng=rng, resolution_mm=resolution_mm, sim_grid=sim_grid)
            patient.truth["case"] = case.name
            patient.truth["sample"] = {"seed": [seed, i], "check_grid_mm": check_mm, **{
                k: v for k, v in params.items() if k.startswith("check_")}}
            patient.write(case)
            bar.update(task, advance=1)
    return cases, time.perf_counter() - t0


def _shell(wt: np.ndarray, domain: np.ndarray, width_vox: float) -> np.ndarray:
    """Tissue voxels outside ``wt`` within ``width_vox`` of it (computed on a box around the tumour)."""
    idx = np.argwhere(wt)
    m = int(np.ceil(width_vox)) + 1
    lo, hi = np.maximum(idx.min(0) - m, 0), np.minimum(idx.max(0) + m + 1, wt.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    out = np.zeros(wt.shape, dtype=bool)
    dist = ndimage.distance_transform_edt(~wt[box])
    out[box] = (dist > 0) & (dist <= width_vox) & domain[box]
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def patient_metrics(res, patient, shell: np.ndarray) -> dict:
    """Errors of one result against the patient's truth."""
    t, p = patient.truth, res.parameters
    dens = res.density_array
    obs_wt, obs_core = patient.whole_tumor, patient.core
    lo, hi = float(p["threshold_edema"]), float(p["threshold_core"])
    x, y = dens[shell].astype(np.float64), patient.density[shell].astype(np.float64)
    corr = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else 0.0
    unc = res.uncertainty
    cover = {k: bool(unc[k]["ci95"][0] <= t[k] <= unc[k]["ci95"][1]) for k in ("mu_D_mm", "mu_rho")}
    return {
        "dice_whole_tumor": res.fit["dice_whole_tumor"], "dice_core": res.fit["dice_core"],
        "dice_mean": res.fit["dice_mean"],
        "dice_mean_1mm": 0.5 * (_dice(dens >= lo, obs_wt) + _dice(dens >= hi, obs_core)),
        "rel_error_mu_D": abs(p["mu_D_mm"] / t["mu_D_mm"] - 1),
        "rel_error_mu_rho": abs(p["mu_rho"] / t["mu_rho"] - 1),
        "rel_error_infiltration_length": abs(p["infiltration_length_mm"] / t["infiltration_length_mm"] - 1),
        "origin_error_mm": float(np.linalg.norm(np.subtract(p["origin_mm"], t["origin_mm"]))),
        "density_corr_outside": corr,
        "covered_mu_D": cover["mu_D_mm"], "covered_mu_rho": cover["mu_rho"],
        "query_s": res.timings["query"], "total_s": res.timings["total"],
    }


def truth_ceiling(res, patient, atlas, grid) -> dict:
    """Dice of the TRUE model's masks (true density, true thresholds) against the observed, noisy ones: what a
    perfect fit scores, on the database grid (as ``dice_mean``) and at 1 mm (as ``dice_mean_1mm``)."""
    from gliofit.inverse.observation import to_grid_masks

    wt_t, co_t = patient.clean_masks()
    obs = res.observation
    wt_g = to_grid_masks(wt_t, atlas.affine, grid)
    co_g = to_grid_masks(co_t, atlas.affine, grid) & wt_g
    return {"dice_mean": 0.5 * (_dice(wt_g, obs.wt) + _dice(co_g, obs.core)),
            "dice_mean_1mm": 0.5 * (_dice(wt_t, patient.whole_tumor) + _dice(co_t, patient.core))}


def summarise(rows: list[dict]) -> dict:
    """Median and IQR of every numeric metric; fractions for the booleans."""
    out = {}
    for k in rows[0]:
        v = np.array([r[k] for r in rows], dtype=np.float64)
        if isinstance(rows[0][k], bool):
            out[k] = round(float(v.mean()), 4)
        else:
            q1, med, q3 = np.percentile(v, [25, 50, 75])
            out[k] = {"median": round(float(med), 5), "iqr": [round(float(q1), 5), round(float(q3), 5)]}
    return out


def run(a: argparse.Namespace) -> dict:
    import gliofit
    from gliofit.inverse.synthetic import read_patient
    from gliofit.growth.atlas import load_atlas

    build_s, _ = ensure_database(a.db, a.simulations, a.resolution, 150 if a.quick else 1000)
    db = gliofit.open_database(a.db)
    entries = int(len(db.entries["id"]))
    atlas = load_atlas(db.manifest.atlas_spec)
    proot = a.cache / f"patients-{a.patient_resolution:g}mm-seed{a.seed}"
    check_mm = max(4.0, a.patient_resolution) if not a.quick else 6.0
    cases, grow_s = ensure_patients(proot, a.patients, a.seed, atlas, a.patient_resolution, check_mm)
    kw = dict(in_atlas_space=True, atlas=atlas)
    for method in ("index", "exhaustive"):                    # warm-up: index load, caches (not timed)
        gliofit.infer(db, cases[0] / "seg.nii.gz", method=method, **kw)
    rows: dict[str, list[dict]] = {"ours": [], "baseline": [], "truth": []}
    per_patient = []
    for case in cases:
        patient = read_patient(case)
        shell = _shell(patient.whole_tumor, atlas.domain, SHELL_MM / min(atlas.spacing_mm))
        rec = {"case": case.name, "true_whole_tumor_cm3": patient.truth["whole_tumor_cm3"]}
        for name, method in (("ours", "index"), ("baseline", "exhaustive")):
            res = gliofit.infer(db, case / "seg.nii.gz", method=method, **kw)
            m = patient_metrics(res, patient, shell)
            rows[name].append(m)
            rec[name] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}
            if name == "ours":
                rows["truth"].append(truth_ceiling(res, patient, atlas, db.grid))
                rec["truth"] = {k: round(v, 4) for k, v in rows["truth"][-1].items()}
        per_patient.append(rec)
        print(f"{case.name}: ours Dice {rec['ours']['dice_mean']:.3f} in {rec['ours']['query_s']:.3f}s, "
              f"baseline {rec['baseline']['dice_mean']:.3f} in {rec['baseline']['query_s']:.2f}s", file=sys.stderr)
    refine = (run_refine(db, cases[: a.refine], kw, a.refine_budget, [r["dice_mean"] for r in rows["ours"]])
              if a.refine else None)
    ours, base = summarise(rows["ours"]), summarise(rows["baseline"])
    large = [i for i, r in enumerate(per_patient) if r["true_whole_tumor_cm3"] >= LARGE_CM3]
    subgroup = {name: {k: v for k, v in summarise([rows[name][i] for i in large]).items() if k in SUBGROUP_KEYS}
                for name in ("ours", "baseline")} if large else {}
    truth = summarise(rows["truth"])
    share = [o["dice_mean"] / max(t["dice_mean"], 1e-9) for o, t in zip(rows["ours"], rows["truth"])]
    q_ours = np.array([r["query_s"] for r in rows["ours"]])
    q_base = np.array([r["query_s"] for r in rows["baseline"]])
    speed = float(np.median(q_base / q_ours))
    return {"patients": len(cases), "patient_resolution_mm": a.patient_resolution,
            "database": {"path": str(a.db), "entries": entries,
                         "simulations": int(len(np.unique(db.entries["simulation_id"]))),
                         "resolution_mm": float(db.manifest.resolution_mm), "build_s": round(build_s, 1)},
            "grow_patients_s": round(grow_s, 1), "ours": ours, "baseline": base,
            "truth_ceiling": truth, "ours_share_of_ceiling_median": round(float(np.median(share)), 4),
            "speed_ratio_median": round(speed, 2), "speed_ratio_of_medians":
            round(float(np.median(q_base) / np.median(q_ours)), 2),
            f"whole_tumor_ge_{LARGE_CM3:g}cm3": {"patients": len(large), **subgroup},
            "refine": refine, "targets": check_targets(ours, base, speed, entries), "per_patient": per_patient}


def run_refine(db, cases: list[Path], kw: dict, budget: int, match_dice: list[float]) -> dict:
    """infer(refine=True) on ``cases``: mean-Dice gain over the database match (and over the match
    re-simulated by the solver, refine's own start), forward runs and seconds."""
    import gliofit

    gains, gains_start, secs, runs, adopted = [], [], [], [], 0
    for case, before in zip(cases, match_dice):
        res = gliofit.infer(db, case / "seg.nii.gz", refine=True, refine_budget=budget, **kw)
        r = res.extra.get("refine")
        if not isinstance(r, dict):
            return {"error": str(r)}
        gains.append(res.fit["dice_mean"] - before)
        gains_start.append(r["dice_mean"] - r["start_dice_mean"])
        secs.append(r["seconds"])
        runs.append(r["n_forward_runs"])
        adopted += int(r["adopted"])
    return {"patients": len(cases), "budget": budget,
            "dice_mean_gain_over_match_median": round(float(np.median(gains)), 4),
            "dice_mean_gain_over_match_mean": round(float(np.mean(gains)), 4),
            "dice_mean_gain_over_resimulated_start_median": round(float(np.median(gains_start)), 4),
            "seconds_median": round(float(np.median(secs)), 2),
            "forward_runs_median": float(np.median(runs)), "adopted": adopted}


def check_targets(ours: dict, base: dict, speed: float, entries: int) -> dict:
    med = {k: ours[k]["median"] for k in ("dice_mean", "origin_error_mm", "rel_error_mu_D", "rel_error_mu_rho")}
    return {
        "speedup_ge_50": speed >= TARGETS["speedup"],
        "accuracy_ge_baseline": med["dice_mean"] >= base["dice_mean"]["median"] - 1e-9,
        "dice_mean_ge_0.85": med["dice_mean"] >= TARGETS["dice_mean"],
        "origin_error_le_5mm": med["origin_error_mm"] <= TARGETS["origin_error_mm"],
        "rel_error_mu_le_20pct": max(med["rel_error_mu_D"], med["rel_error_mu_rho"]) <= TARGETS["rel_error_mu"],
        "entries_ge_20k": entries >= TARGETS["entries_for_mu_target"],
    }


def print_table(r: dict) -> None:
    keys = ["dice_whole_tumor", "dice_core", "dice_mean", "dice_mean_1mm", "rel_error_mu_D", "rel_error_mu_rho",
            "rel_error_infiltration_length", "origin_error_mm", "density_corr_outside", "query_s", "total_s"]
    d = r["database"]
    print(f"database {d['path']}: {d['entries']} entries ({d['simulations']} simulations) at "
          f"{d['resolution_mm']:g} mm; {r['patients']} patients grown at {r['patient_resolution_mm']:g} mm")
    print(f"{'metric':32s} {'ours median [IQR]':>28s} {'baseline median [IQR]':>28s}")
    def fmt(s: dict) -> str:
        return f"{s['median']:.4f} [{s['iqr'][0]:.4f}, {s['iqr'][1]:.4f}]"

    for k in keys:
        o, b = r["ours"][k], r["baseline"][k]
        print(f"{k:32s} {fmt(o):>28s} {fmt(b):>28s}")
    t = r["truth_ceiling"]
    print(f"ceiling (the TRUE model's masks vs the noisy observed ones): dice_mean {t['dice_mean']['median']:.4f} "
          f"[{t['dice_mean']['iqr'][0]:.4f}, {t['dice_mean']['iqr'][1]:.4f}], dice_mean_1mm "
          f"{t['dice_mean_1mm']['median']:.4f}; ours reach {r['ours_share_of_ceiling_median']:.1%} of it (median)")
    for k in ("covered_mu_D", "covered_mu_rho"):
        print(f"{k + ' (95% CI)':32s} {r['ours'][k]:>28.2f} {r['baseline'][k]:>28.2f}")
    print(f"speed ratio (baseline / ours query time): median {r['speed_ratio_median']:.1f}x, "
          f"of medians {r['speed_ratio_of_medians']:.1f}x")
    sub = r[f"whole_tumor_ge_{LARGE_CM3:g}cm3"]
    if sub["patients"]:
        print(f"whole tumour >= {LARGE_CM3:g} cm3 ({sub['patients']} patients): " + "; ".join(
            f"{k} ours {sub['ours'][k]['median']:.3f} baseline {sub['baseline'][k]['median']:.3f}"
            for k in SUBGROUP_KEYS))
    if r["refine"]:
        print(f"refine: {json.dumps(r['refine'])}")
    print("targets: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in r["targets"].items()))


def main(argv=None) -> None:
    a = _args(argv)
    r = run(a)
    print_table(r)
    slim = {k: v for k, v in r.items() if k != "per_patient"}
    (a.cache / "last-result.json").write_text(json.dumps(r, indent=2))
    print("BENCH " + json.dumps(slim))


if __name__ == "__main__":
    main()
