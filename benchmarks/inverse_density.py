"""Which 1 mm density should `gliofit infer` report: the stored crop, or the estimate solved uncropped?

For a few patients grown at 1 mm from known parameters (not in the database),
the inverse solver finds the best match; its density on the 1 mm atlas grid
is made three ways (:mod:`gliofit.inverse.density`): ``stored`` (the match's
cropped uint8 density interpolated: the baseline), ``upsample`` (the default:
the estimate solved uncropped on the database grid, interpolated) and
``resimulate`` (solved uncropped at the truth's resolution), and compared with
the truth: mean absolute error over the brain, Dice of the whole tumour
(u >= 0.25) and core (u >= 0.675), the correlation with the truth outside the
visible tumour (where radiotherapy margins live), and what a plan needs: the
voxels of the model target of the standard plan's volume (core + 15 mm, within
the brain) that have density 0 (``zero_in_plan``), and the share of tissue in
the standard target where the density is positive. Times are printed as a
ratio to the baseline's.

    python benchmarks/inverse_density.py [--db DB] [--cases 4] [--quick]

``--quick`` (<= 1 min): one case, truth and re-simulation at 2 mm, a small 6 mm database.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from gliofit.common.nifti import save_volume
from gliofit.inverse.api import atlas_of, infer
from gliofit.inverse.density import best_density, resimulated_density
from gliofit.pipelines.planning import make_plan
from gliofit.growth.atlas import resample_atlas, to_atlas_grid
from gliofit.simulations_db.build import build_database
from gliofit.simulations_db.database import open_database
from gliofit.simulations_db.design import Design, SnapshotRule
from gliofit.simulations_db.dice import dice
from gliofit.growth.solver import simulate_one


def _truth(db, atlas, grid_truth, index: int):
    """A patient from design point ``index`` (past the database's end), at a time between snapshots."""
    design = Design.from_dict(db.manifest.design)
    rule = SnapshotRule.from_dict(db.manifest.snapshots)
    p = design.parameters(db.grid, np.array([index]))
    D, rho, o = float(p["D_mm2_per_day"][0]), float(p["rho_per_day"][0]), p["origin_mm"][0]
    ts = rule.times(D, rho)
    T = float(np.sqrt(ts[len(ts) // 2] * ts[min(len(ts) - 1, len(ts) // 2 + 1)]))
    u = simulate_one(grid_truth, D, rho, o, T)
    return {"D_mm2_per_day": D, "rho_per_day": rho, "T_days": T, "origin_mm": o.tolist()}, np.clip(
        to_atlas_grid(u, grid_truth, atlas), 0, 1
    )


def _compare(est: np.ndarray, truth: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> dict:
    outside = brain & (truth < 0.25) & ((truth > 1e-3) | (est > 1e-3))
    corr = float(np.corrcoef(est[outside], truth[outside])[0, 1]) if outside.sum() > 10 else float("nan")
    plan = make_plan(est, truth >= 0.675, affine, brain=brain, margin_mm=15.0, whole_tumor=truth >= 0.25)
    tissue = plan.standard & brain
    return {
        "mae_brain": float(np.abs(est - truth)[brain].mean()),
        "dice_wt": dice(est >= 0.25, truth >= 0.25),
        "dice_core": dice(est >= 0.675, truth >= 0.675),
        "corr_outside": corr,
        "zero_in_plan": int(plan.summary["zero_density_voxels"]),
        "positive_in_standard_target": float((est[tissue] > 0).mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, default=None, help="database (default: build a small one in a temp dir)")
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    db_path = args.db
    if db_path is None:
        db_path = Path(tmp.name) / "DB"
        n, res = (60, 6.0) if args.quick else (300, 4.0)
        build_database(
            db_path, n, resolution_mm=res, seed=0, workers=1, snapshots=SnapshotRule(count=5), progress=False
        )
    db = open_database(db_path)
    atlas = atlas_of(db)
    truth_res = 2.0 if args.quick else 1.0
    grid_truth = resample_atlas(atlas, truth_res)
    brain = atlas.domain
    n_cases = 1 if args.quick else args.cases
    methods = ("stored", "upsample", "resimulate")
    rows, seconds = [], {m: [] for m in methods}
    ratio = float(db.manifest.design.get("diffusivity_ratio", 10.0))
    index = int(db.info()["simulations"]) + 1000
    while len(rows) < n_cases:
        params, truth = _truth(db, atlas, grid_truth, index)
        index += 1
        if (truth >= 0.675).sum() < 500:
            continue
        lab = np.where(truth >= 0.675, 3, np.where(truth >= 0.25, 2, 0)).astype(np.uint8)
        seg = save_volume(lab, atlas.affine, Path(tmp.name) / f"seg{len(rows)}.nii.gz", dtype=np.uint8)
        res = infer(db, seg, atlas=atlas, in_atlas_space=True)
        row = {"case": len(rows), "fit_dice_mean": res.fit["dice_mean"]}
        for m in methods:
            t0 = time.perf_counter()
            if m == "resimulate":
                est = resimulated_density(res.parameters, atlas, resolution_mm=truth_res, diffusivity_ratio=ratio)
            else:
                est = best_density(db, res.matches[0]["entry_id"], res.parameters, atlas, m)
            seconds[m].append(time.perf_counter() - t0)
            row[m] = _compare(est, truth, brain, atlas.affine)
        rows.append(row)
        print(json.dumps(row), flush=True)
    med = {m: {k: float(np.nanmedian([r[m][k] for r in rows])) for k in rows[0][m]} for m in methods}
    t = {m: float(np.median(seconds[m])) for m in methods}
    summary = {
        "benchmark": "inverse_density",
        "database": str(db_path),
        "resolution_mm": db.manifest.resolution_mm,
        "truth_resolution_mm": truth_res,
        "cases": len(rows),
        "median": med,
        "seconds": t,
        "ratio_time_over_stored": {m: t[m] / max(t["stored"], 1e-9) for m in methods},
    }
    for m in methods:
        print(f"{m}: {med[m]}  ({t[m]:.2f} s, {summary['ratio_time_over_stored'][m]:.0f}x stored)")
    print("BENCH " + json.dumps(summary))


if __name__ == "__main__":
    main()
