"""Calibrated intervals: the conformal rule covers as promised on known distributions and on synthetic
patients not used for calibration; calibration files of other databases are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from inversehelpers import write_labels
from typer.testing import CliRunner

import gliofit
from gliofit.cli import app
from gliofit.common.errors import InputError
from gliofit.inverse.calibrate import calibrate
from gliofit.inverse.calibration import (
    CALIBRATED_KEYS,
    CALIBRATION_FILE,
    conformal_quantile,
    fit_quantiles,
    leave_one_out_coverage,
    normalised_errors,
    read_calibration,
)
from gliofit.inverse.synthetic import grow_cohort, read_patient

runner = CliRunner()


def test_conformal_quantile_covers_at_the_nominal_rate_on_a_known_distribution():
    """Errors |N(0, 1)| * scale: the quantile fitted on 200 draws covers ~95 % / ~50 % of 20,000 new ones."""
    rng = np.random.default_rng(0)
    for level in (0.5, 0.95):
        hits = []
        for _ in range(20):
            q = conformal_quantile(np.abs(rng.standard_normal(200)) * 3.0, level)
            hits.append(np.mean(np.abs(rng.standard_normal(1000)) * 3.0 <= q))
        assert abs(np.mean(hits) - level) < 0.02, (level, np.mean(hits))
    assert conformal_quantile([1.0, 2.0, 3.0], 0.95) == np.inf  # too few patients for 95 %
    assert conformal_quantile(np.arange(1.0, 20.0), 0.95) == 19.0  # ceil(20 * 0.95) = 19th


def test_normalised_errors_are_log_ratios_and_mm_over_the_spread():
    est = {
        "D_mm2_per_day": 0.1,
        "rho_per_day": 0.02,
        "T_days": 100.0,
        "mu_D_mm": 4.0,
        "mu_rho": 2.0,
        "infiltration_length_mm": 3.0,
        "velocity_mm_per_day": 0.1,
        "origin_mm": [0.0, 1.0, 2.0],
    }
    truth = dict(est, mu_D_mm=4.0 * np.e, origin_mm=[3.0, 1.0, 0.0])
    spread = dict.fromkeys(CALIBRATED_KEYS, 0.5)
    r = normalised_errors(est, truth, spread)
    assert r["mu_D_mm"] == pytest.approx(2.0) and r["mu_rho"] == 0.0
    assert [r["origin_x_mm"], r["origin_y_mm"], r["origin_z_mm"]] == pytest.approx([6.0, 0.0, 4.0])


@pytest.mark.slow
def test_calibrated_intervals_cover_truth_on_patients_not_used_for_calibration(tmp_path, small_db, atlas1):
    """Calibrate the small database on 24 synthetic patients (seed 11), then count how often the intervals
    hold the truth of 24 others (seed 12), grown the same way."""
    out = tmp_path / "calibration.json"
    rep = calibrate(
        small_db,
        patients=24,
        seed=11,
        patient_resolution_mm=6.0,
        patients_dir=tmp_path / "cal",
        refine_budget=8,
        out=out,
        progress=False,
    )
    assert rep["patients"] == 24 and set(rep["coverage95"]) == set(CALIBRATED_KEYS)
    cases, _ = grow_cohort(tmp_path / "test", 24, 12, atlas1, resolution_mm=6.0, check_mm=6.0, progress=False)
    inside = {"ci95": [], "ci50": []}
    width95 = []
    for case in cases:
        truth = read_patient(case, density=False).truth
        res = gliofit.infer(
            small_db, case / "seg.nii.gz", in_atlas_space=True, atlas=atlas1, refine_budget=8, calibration=out
        )
        assert res.calibration["patients"] == 24
        for level in inside:
            for k in ("mu_D_mm", "mu_rho"):
                lo, hi = res.uncertainty[k][level]
                inside[level].append(lo <= truth[k] <= hi)
            lo, hi = res.uncertainty["origin_mm"][level]
            inside[level] += [lo[a] <= truth["origin_mm"][a] <= hi[a] for a in range(3)]
        lo, hi = res.uncertainty["mu_D_mm"]["ci95"]
        width95.append(hi / lo)
    cover95, cover50 = np.mean(inside["ci95"]), np.mean(inside["ci50"])
    assert 0.82 <= cover95 <= 1.0, cover95  # 120 checks, nominal 0.95
    assert 0.35 <= cover50 <= 0.68, cover50  # nominal 0.50


def test_calibration_of_another_database_is_refused(tmp_path, small_db, small_db_path):
    records = [{"errors": dict.fromkeys(CALIBRATED_KEYS, float(i))} for i in range(1, 30)]
    doc = {
        "method": "m",
        "database": {"atlas_checksum": "other", "resolution_mm": 6.0, "design_seed": 0, "entries": 1},
        "patients": 29,
        "quantiles": fit_quantiles(records),
        **leave_one_out_coverage(records),
    }
    p = tmp_path / CALIBRATION_FILE
    p.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="another database"):
        read_calibration(small_db, p)
    seg = tmp_path / "seg.nii.gz"
    lab = np.zeros(small_db.grid.shape, np.uint8)
    lab[10:16, 12:18, 12:18] = 2
    lab[12:14, 14:16, 14:16] = 3
    write_labels(seg, lab, small_db.grid.affine)
    r = runner.invoke(
        app,
        [
            "infer",
            "--db",
            str(small_db_path),
            "--seg",
            str(seg),
            "-o",
            str(tmp_path / "OUT"),
            "--calibration",
            str(p),
            "--no-refine",
        ],
    )
    assert r.exit_code == 2 and "another database" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "OUT").exists()


def test_uncalibrated_database_warns_how_to_calibrate(tmp_path, small_db):
    doc, warning = read_calibration(small_db)
    assert doc is None and f"gliofit db calibrate {small_db.path}" in warning
