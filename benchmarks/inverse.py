"""The headline benchmark: our inverse solver against the published exhaustive method, on synthetic patients.

Synthetic patients (``gliofit.inverse.synthetic.grow_cohort``): parameters drawn from the FACTS.md reference
ranges, restricted to realistic visible tumours; grown by the solver at ``--patient-resolution`` on the atlas,
independently of the database (another grid, continuous seed points, their own times); thresholded at 0.25 /
0.675 on the 1 mm atlas grid with segmentation noise (boundary jitter 1-2 voxels, misregistration <= 2 mm
and <= 2 degrees); labels in BraTS 2023; each also grown on for ΔT ~ U[60, 240] days (the recurrence).
Patients are cached under ``--cache`` (grown only when missing).

On one database, in one process, per patient: ``gliofit.infer`` with its defaults (ours: index query with the
shift search, refinement, the database's calibration) and ``gliofit.infer(method="exhaustive", refine=False)``
(the published method). Reported (median and IQR over patients): Dice of the recovered model's masks against
the observed ones on the database grid (whole tumour, core, mean) and on the 1 mm grid from the recovered
density; relative error of mu_D, mu_rho and the infiltration length; origin error (mm); Pearson correlation,
in a 20 mm shell of tissue outside the observed tumour, of the recovered density with the true one; coverage
of the 95 % and 50 % intervals of mu_D, mu_rho and each origin coordinate; query time (the shift search
included), refinement and density time, whole inference time; the speed ratio of the queries; the ceiling
(the Dice of the TRUE model's masks against the noisy observed ones); the shift search's share (the same
query without it: Dice of the best match, time); and the PREDICT-GBM recurrence coverage: recurrence = the
true density at T + ΔT >= the core threshold, minus the observed pre-operative core; standard plan = core +
15 mm within the brain; model plan = the same voxel count of highest recovered density; oracle = the same
from the TRUE density (``gliofit.pipelines.planning.make_plan``); per patient and median.

    python benchmarks/inverse.py [--quick] [--patients N] [--db DIR] [--simulations N] [--resolution MM]
                                 [--cache DIR] [--patient-resolution MM] [--refine-budget N] [--no-refine]
                                 [--calibration FILE] [--calibrate N] [--calibration-seed S] [--seed S]

``--calibrate N`` first calibrates the database (``gliofit db calibrate``) on N patients of
``--calibration-seed`` (other patients than the test ones); the coverage of the database's calibration is
then measured on the test patients. Independently of it, the test patients' own records give the
leave-one-out conformal coverage (each patient's interval from the quantiles fitted on the others, so no
patient is used for its own calibration). Ends with one line ``BENCH {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from _shared import covered
from scipy import ndimage

CACHE = Path(os.environ.get("GLIOFIT_CACHE", Path.home() / ".cache" / "gliofit"))
SHELL_MM = 20.0
"""Width of the shell outside the observed whole tumour where the density correlation is measured."""
LARGE_CM3 = 20.0
"""Patients whose observed whole tumour has at least this volume form a subgroup (small tumours are few voxels
on a coarse database grid)."""
MARGIN_MM = 15.0
"""The standard plan's margin around the core."""
SUBGROUP_KEYS = ("dice_mean", "rel_error_mu_D", "rel_error_mu_rho", "origin_error_mm", "density_corr_outside")
COVERAGE_KEYS = ("mu_D_mm", "mu_rho", "origin_x_mm", "origin_y_mm", "origin_z_mm")
TARGETS = {
    "speedup": 50.0,
    "share_of_ceiling": 0.97,
    "origin_error_mm": 3.0,
    "rel_error_mu_rho": 0.10,
    "rel_error_mu_D": 0.25,
    "coverage95": (0.90, 0.98),
    "coverage50": (0.40, 0.60),
    "total_s": 10.0,
}


def _args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few patients on a small coarse database")
    ap.add_argument("--patients", type=int, help="synthetic test patients (default 50; quick 4)")
    ap.add_argument("--db", type=Path, help="database directory (default: under --cache)")
    ap.add_argument(
        "--simulations",
        type=int,
        help="build/extend the database to N simulations (default: use as is when it exists; else 2000, quick 150)",
    )
    ap.add_argument("--resolution", type=float, help="resolution of a NEW database, mm (default 2; quick 6)")
    ap.add_argument("--cache", type=Path, default=CACHE / "bench-inverse", help="cache of databases and patients")
    ap.add_argument("--patient-resolution", type=float, help="growth grid of the patients, mm (default 1.5; quick 3)")
    ap.add_argument("--refine-budget", type=int, help="forward runs per refinement (default: infer's; quick 9)")
    ap.add_argument("--no-refine", action="store_true", help="ours without refinement")
    ap.add_argument("--calibration", type=Path, help="calibration file (default: the database's)")
    ap.add_argument("--calibrate", type=int, default=0, help="calibrate the database first on N patients")
    ap.add_argument("--calibration-seed", type=int, default=90_001, help="seed of the calibration patients")
    ap.add_argument("--seed", type=int, default=2024, help="seed of the synthetic test patients")
    a = ap.parse_args(argv)
    quick = a.quick
    a.patients = a.patients or (4 if quick else 50)
    a.resolution = a.resolution or (6.0 if quick else 2.0)
    a.patient_resolution = a.patient_resolution or (3.0 if quick else 1.5)
    a.refine_budget = a.refine_budget or (9 if quick and not a.no_refine else None)
    a.db = a.db or a.cache / f"db-{a.resolution:g}mm"
    if a.calibration_seed == a.seed:
        ap.error("--calibration-seed must differ from --seed (calibration and test patients must differ)")
    return a


def ensure_database(path: Path, n: int | None, resolution_mm: float, default_n: int) -> tuple[float, dict]:
    """Build (or extend/resume) the database; returns (seconds, build report or {})."""
    from gliofit.simulations_db.build import build_database
    from gliofit.simulations_db.manifest import manifest_path

    if manifest_path(path).is_file() and n is None:
        return 0.0, {}
    t0 = time.perf_counter()
    report = build_database(
        path,
        n or default_n,
        resolution_mm=None if manifest_path(path).is_file() else resolution_mm,
        workers=1,
        progress=True,
    )
    return time.perf_counter() - t0, report


def ensure_patients(
    root: Path, n: int, seed: int, atlas, resolution_mm: float, check_mm: float
) -> tuple[list[Path], float]:
    """Patient folders ``root/case-XXX`` with their recurrence (grown when missing, :func:`grow_cohort`)."""
    from gliofit.inverse.synthetic import grow_cohort

    return grow_cohort(root, n, seed, atlas, resolution_mm=resolution_mm, check_mm=check_mm)


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


def patient_metrics(res, patient, shell: np.ndarray, density_s: float = 0.0) -> dict:
    """Errors of one result against the patient's truth."""
    t, p = patient.truth, res.parameters
    dens = res.density_array
    obs_wt, obs_core = patient.whole_tumor, patient.core
    lo, hi = float(p["threshold_edema"]), float(p["threshold_core"])
    x, y = dens[shell].astype(np.float64), patient.density[shell].astype(np.float64)
    corr = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else 0.0
    unc = res.uncertainty
    out = {
        "dice_whole_tumor": res.fit["dice_whole_tumor"],
        "dice_core": res.fit["dice_core"],
        "dice_mean": res.fit["dice_mean"],
        "dice_mean_1mm": 0.5 * (_dice(dens >= lo, obs_wt) + _dice(dens >= hi, obs_core)),
        "rel_error_mu_D": abs(p["mu_D_mm"] / t["mu_D_mm"] - 1),
        "rel_error_mu_rho": abs(p["mu_rho"] / t["mu_rho"] - 1),
        "rel_error_infiltration_length": abs(p["infiltration_length_mm"] / t["infiltration_length_mm"] - 1),
        "origin_error_mm": float(np.linalg.norm(np.subtract(p["origin_mm"], t["origin_mm"]))),
        "density_corr_outside": corr,
        "query_s": res.timings["query"],
        "refine_s": float(res.extra.get("refine", {}).get("seconds", 0.0)),
        "density_s": density_s,
        "total_s": res.timings["total"] + density_s,
    }
    for level in ("ci95", "ci50"):
        if all(level in unc[k] for k in ("mu_D_mm", "mu_rho", "origin_mm")):
            out.update({f"covered{level[2:]}_{k}": v for k, v in covered(unc, t, level, COVERAGE_KEYS[:2]).items()})
    return out


def recurrence_metrics(res, patient, brain: np.ndarray) -> dict:
    """PREDICT-GBM coverage of the recurrence by the standard, model and oracle plans (module docstring)."""
    from gliofit.pipelines.planning import make_plan, recurrence_coverage

    rec = (patient.recurrence_density >= patient.truth["threshold_core"]) & ~patient.core
    if not rec.any():
        return {}
    kw = dict(brain=brain, margin_mm=MARGIN_MM, whole_tumor=patient.whole_tumor)
    ours = make_plan(res.density_array, patient.core, patient.affine, **kw)
    oracle = make_plan(patient.density, patient.core, patient.affine, **kw)
    c = recurrence_coverage(ours, rec)
    return {
        "coverage_standard": c["standard"],
        "coverage_model": c["model"],
        "coverage_oracle": recurrence_coverage(oracle, rec)["model"],
        "recurrence_cm3": float(rec.sum()) * float(np.prod(np.abs(np.diag(patient.affine)[:3]))) / 1000.0,
        "plan_zero_density_voxels": int((ours.model & (res.density_array <= 0)).sum()),
    }


def truth_ceiling(res, patient, atlas, grid) -> dict:
    """Dice of the TRUE model's masks (true density, true thresholds) against the observed, noisy ones: what a
    perfect fit scores, on the database grid (as ``dice_mean``) and at 1 mm (as ``dice_mean_1mm``)."""
    from gliofit.inverse.observation import to_grid_masks

    wt_t, co_t = patient.clean_masks()
    obs = res.observation
    wt_g = to_grid_masks(wt_t, atlas.affine, grid)
    co_g = to_grid_masks(co_t, atlas.affine, grid) & wt_g
    return {
        "dice_mean": 0.5 * (_dice(wt_g, obs.wt) + _dice(co_g, obs.core)),
        "dice_mean_1mm": 0.5 * (_dice(wt_t, patient.whole_tumor) + _dice(co_t, patient.core)),
    }


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
    from gliofit.growth.atlas import load_atlas
    from gliofit.inverse.calibration import calibration_record, leave_one_out_coverage
    from gliofit.inverse.query import query
    from gliofit.inverse.synthetic import read_patient

    build_s, _ = ensure_database(a.db, a.simulations, a.resolution, 150 if a.quick else 2000)
    db = gliofit.open_database(a.db)
    entries = int(len(db.entries["id"]))
    atlas = load_atlas(db.manifest.atlas_spec)
    check_mm = max(4.0, a.patient_resolution) if not a.quick else 6.0
    calib = None
    if a.calibrate:
        from gliofit.inverse.calibrate import calibrate

        croot = a.cache / f"calib-{a.patient_resolution:g}mm-seed{a.calibration_seed}"
        calib = calibrate(
            db,
            patients=a.calibrate,
            seed=a.calibration_seed,
            patient_resolution_mm=a.patient_resolution,
            patients_dir=croot,
            refine_budget=a.refine_budget,
            out=a.calibration,
        )
        print(f"calibration: {json.dumps(calib)}", file=sys.stderr)
    proot = a.cache / f"patients-{a.patient_resolution:g}mm-seed{a.seed}"
    cases, grow_s = ensure_patients(proot, a.patients, a.seed, atlas, a.patient_resolution, check_mm)
    brain = (atlas.gm + atlas.wm) >= 0.1
    ours_kw = dict(
        in_atlas_space=True,
        atlas=atlas,
        refine=not a.no_refine,
        refine_budget=a.refine_budget,
        calibration=a.calibration,
    )
    base_kw = dict(in_atlas_space=True, atlas=atlas, method="exhaustive", refine=False, calibration=False)
    gliofit.infer(db, cases[0] / "seg.nii.gz", **{**ours_kw, "refine": False, "refine_budget": None})  # warm-up
    gliofit.infer(db, cases[0] / "seg.nii.gz", **base_kw)
    rows: dict[str, list[dict]] = {"ours": [], "baseline": [], "truth": [], "shift": [], "recurrence": []}
    per_patient, calibration_doc, records = [], None, []
    for case in cases:
        patient = read_patient(case)
        shell = _shell(patient.whole_tumor, atlas.domain, SHELL_MM / min(atlas.spacing_mm))
        rec = {"case": case.name, "true_whole_tumor_cm3": patient.truth["whole_tumor_cm3"]}
        res = gliofit.infer(db, case / "seg.nii.gz", **ours_kw)
        td = time.perf_counter()
        _ = res.density_array
        m = patient_metrics(res, patient, shell, time.perf_counter() - td)
        calibration_doc = res.calibration
        records.append(calibration_record(res, patient.truth, case.name))
        rows["ours"].append(m)
        rows["truth"].append(truth_ceiling(res, patient, atlas, db.grid))
        obs = res.observation
        tq = time.perf_counter()
        plain = query(db, obs.wt, obs.core, shift=False)
        rows["shift"].append(
            {
                "dice_mean_match_noshift": float(plain.score[0]),
                "query_noshift_s": time.perf_counter() - tq,
                "dice_mean_match_shift": res.extra["match_fit"]["dice_mean"],
                "shift_nonzero": bool(any(res.matches[0]["shift_voxels"])),
            }
        )
        if patient.recurrence_density is not None:
            r = recurrence_metrics(res, patient, brain)
            if r:
                rows["recurrence"].append(r)
                rec["recurrence"] = {k: round(v, 4) for k, v in r.items()}
        base = gliofit.infer(db, case / "seg.nii.gz", **base_kw)
        rows["baseline"].append(patient_metrics(base, patient, shell))
        for name in ("ours", "baseline", "truth", "shift"):
            rec[name] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[name][-1].items()}
        per_patient.append(rec)
        o = rec["ours"]
        print(
            f"{case.name}: ours Dice {o['dice_mean']:.3f} (ceiling {rec['truth']['dice_mean']:.3f}) origin "
            f"{o['origin_error_mm']:.1f} mm, mu_D {o['rel_error_mu_D']:.2f} mu_rho {o['rel_error_mu_rho']:.2f}, "
            f"query {o['query_s']:.3f}s total {o['total_s']:.1f}s; baseline Dice {rec['baseline']['dice_mean']:.3f} "
            f"in {rec['baseline']['query_s']:.2f}s; plans {rec.get('recurrence', {})}",
            file=sys.stderr,
        )
    ours, base = summarise(rows["ours"]), summarise(rows["baseline"])
    large = [i for i, r in enumerate(per_patient) if r["true_whole_tumor_cm3"] >= LARGE_CM3]
    subgroup = (
        {
            name: {k: v for k, v in summarise([rows[name][i] for i in large]).items() if k in SUBGROUP_KEYS}
            for name in ("ours", "baseline")
        }
        if large
        else {}
    )
    truth = summarise(rows["truth"])
    share = [o["dice_mean"] / max(t["dice_mean"], 1e-9) for o, t in zip(rows["ours"], rows["truth"])]
    q_ours = np.array([r["query_s"] for r in rows["ours"]])
    q_base = np.array([r["query_s"] for r in rows["baseline"]])
    speed = float(np.median(q_base / q_ours))
    rec_sum = summarise(rows["recurrence"]) if rows["recurrence"] else {}
    if rows["recurrence"]:
        rec_sum["model_beats_standard"] = round(
            float(np.mean([r["coverage_model"] > r["coverage_standard"] for r in rows["recurrence"]])), 4
        )
    return {
        "patients": len(cases),
        "patient_resolution_mm": a.patient_resolution,
        "database": {
            "path": str(a.db),
            "entries": entries,
            "simulations": int(len(np.unique(db.entries["simulation_id"]))),
            "resolution_mm": float(db.manifest.resolution_mm),
            "build_s": round(build_s, 1),
        },
        "grow_patients_s": round(grow_s, 1),
        "calibration": calibration_doc,
        "calibrated_now": calib,
        "leave_one_out": leave_one_out_coverage(records) if len(records) >= 2 else {},
        "ours": ours,
        "baseline": base,
        "truth_ceiling": truth,
        "ours_share_of_ceiling_median": round(float(np.median(share)), 4),
        "shift": summarise(rows["shift"]),
        "recurrence": rec_sum,
        "speed_ratio_median": round(speed, 2),
        "speed_ratio_of_medians": round(float(np.median(q_base) / np.median(q_ours)), 2),
        f"whole_tumor_ge_{LARGE_CM3:g}cm3": {"patients": len(large), **subgroup},
        "targets": check_targets(
            ours, speed, float(np.median(share)), rec_sum, leave_one_out_coverage(records) if len(records) >= 2 else {}
        ),
        "per_patient": per_patient,
    }


def check_targets(ours: dict, speed: float, share: float, rec: dict, loo: dict) -> dict:
    med = {k: ours[k]["median"] for k in ("origin_error_mm", "rel_error_mu_D", "rel_error_mu_rho", "total_s")}
    out = {
        "speedup_ge_50": speed >= TARGETS["speedup"],
        "share_of_ceiling_ge_0.97": share >= TARGETS["share_of_ceiling"],
        "origin_error_le_3mm": med["origin_error_mm"] <= TARGETS["origin_error_mm"],
        "rel_error_mu_rho_le_10pct": med["rel_error_mu_rho"] <= TARGETS["rel_error_mu_rho"],
        "rel_error_mu_D_le_25pct": med["rel_error_mu_D"] <= TARGETS["rel_error_mu_D"],
        "total_le_10s": med["total_s"] <= TARGETS["total_s"],
    }
    for level in ("95", "50"):
        lo, hi = TARGETS[f"coverage{level}"]
        vals = [ours.get(f"covered{level}_{k}") for k in COVERAGE_KEYS]
        out[f"coverage{level}_in_{lo:g}_{hi:g}"] = all(v is not None and lo <= v <= hi for v in vals)
        if loo:
            vals = [loo[f"coverage{level}"][k] for k in COVERAGE_KEYS]
            out[f"loo_coverage{level}_in_{lo:g}_{hi:g}"] = all(lo <= v <= hi for v in vals)
    if rec:
        out["model_plan_beats_standard"] = rec["coverage_model"]["median"] > rec["coverage_standard"]["median"]
    return out


def print_table(r: dict) -> None:
    keys = [
        "dice_whole_tumor",
        "dice_core",
        "dice_mean",
        "dice_mean_1mm",
        "rel_error_mu_D",
        "rel_error_mu_rho",
        "rel_error_infiltration_length",
        "origin_error_mm",
        "density_corr_outside",
        "query_s",
        "total_s",
    ]
    d = r["database"]
    print(
        f"database {d['path']}: {d['entries']} entries ({d['simulations']} simulations) at "
        f"{d['resolution_mm']:g} mm; {r['patients']} patients grown at {r['patient_resolution_mm']:g} mm"
    )
    print(f"{'metric':32s} {'ours median [IQR]':>28s} {'baseline median [IQR]':>28s}")

    def fmt(s: dict) -> str:
        return f"{s['median']:.4f} [{s['iqr'][0]:.4f}, {s['iqr'][1]:.4f}]"

    for k in keys:
        print(f"{k:32s} {fmt(r['ours'][k]):>28s} {fmt(r['baseline'][k]):>28s}")
    for k in ("refine_s", "density_s"):
        print(f"{k:32s} {fmt(r['ours'][k]):>28s}")
    t = r["truth_ceiling"]
    print(
        f"ceiling (the TRUE model's masks vs the noisy observed ones): dice_mean {t['dice_mean']['median']:.4f} "
        f"[{t['dice_mean']['iqr'][0]:.4f}, {t['dice_mean']['iqr'][1]:.4f}], dice_mean_1mm "
        f"{t['dice_mean_1mm']['median']:.4f}; ours reach {r['ours_share_of_ceiling_median']:.1%} of it (median)"
    )
    sh = r["shift"]
    print(
        f"shift search: best-match Dice {sh['dice_mean_match_noshift']['median']:.4f} -> "
        f"{sh['dice_mean_match_shift']['median']:.4f} (median), shifted best match in {sh['shift_nonzero']:.0%}; "
        f"query {sh['query_noshift_s']['median'] * 1e3:.1f} -> {r['ours']['query_s']['median'] * 1e3:.1f} ms"
    )
    print(f"calibration: {(r['calibration'] or {}).get('method')}")
    for level in ("95", "50"):
        cov = {k: r["ours"].get(f"covered{level}_{k}") for k in COVERAGE_KEYS}
        print(
            f"{level}% interval covers the truth: " + ", ".join(f"{k} {v:.2f}" for k, v in cov.items() if v is not None)
        )
    loo = r["leave_one_out"]
    for level in ("95", "50"):
        if loo:
            cov = loo[f"coverage{level}"]
            print(
                f"{level}% interval, leave-one-out conformal (each patient against the quantiles of the "
                "others): " + ", ".join(f"{k} {cov[k]:.2f}" for k in COVERAGE_KEYS)
            )
    rec = r["recurrence"]
    if rec:
        print(
            f"recurrence coverage (median [IQR]): standard {fmt(rec['coverage_standard'])}, model "
            f"{fmt(rec['coverage_model'])}, oracle {fmt(rec['coverage_oracle'])}; model > standard in "
            f"{rec['model_beats_standard']:.0%} of patients"
        )
    print(
        f"speed ratio (baseline / ours query time): median {r['speed_ratio_median']:.1f}x, "
        f"of medians {r['speed_ratio_of_medians']:.1f}x"
    )
    sub = r[f"whole_tumor_ge_{LARGE_CM3:g}cm3"]
    if sub["patients"]:
        print(
            f"whole tumour >= {LARGE_CM3:g} cm3 ({sub['patients']} patients): "
            + "; ".join(
                f"{k} ours {sub['ours'][k]['median']:.3f} baseline {sub['baseline'][k]['median']:.3f}"
                for k in SUBGROUP_KEYS
            )
        )
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
