"""Two scans: the time-rescaling query recovers D, rho, T of a pair that is a rescaled stored simulation;
the refinement recovers a pair grown off the database; the consistency checks; the calibration fit."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from inversehelpers import GLIOFIT, write_labels
from typer.testing import CliRunner

from gliofit.cli import app
from gliofit.common.errors import InputError
from gliofit.growth.solver import simulate
from gliofit.inverse.longitudinal import (
    infer_two_scans,
    joint_candidates,
    shrinkage_warning,
)
from gliofit.inverse.observation import Observation
from gliofit.inverse.calibration import calibration_record, write_calibration
from gliofit.inverse.two_scan_calibration import CALIBRATION_FILE, read_two_scan_calibration

runner = CliRunner()


def _labels(u: np.ndarray) -> np.ndarray:
    lab = np.zeros(u.shape, np.uint8)
    lab[u >= 0.25] = 2
    lab[u >= 0.675] = 3
    return lab


def _stored_simulation(db, min_voxels: int = 40):
    """A simulation with >= 3 snapshots whose second and third hold tumours of >= ``min_voxels`` voxels."""
    e = db.entries
    for sim in np.unique(e["simulation_id"]):
        rows = np.flatnonzero(e["simulation_id"] == sim)
        rows = rows[np.argsort(e["T_days"][rows])]
        if (
            len(rows) >= 3
            and e["wt_voxels"][rows[1]] >= min_voxels
            and e["core_voxels"][rows[1]] >= 5
            and e["wt_voxels"][rows[2]] > 1.5 * e["wt_voxels"][rows[1]]
        ):
            return rows
    raise RuntimeError("no suitable simulation in the test database")


def _pair(db, D, rho, origin, T, n, tmp_path):
    u = simulate(db.grid, [D], [rho], [origin], [T, T + n])[0]
    return (
        write_labels(tmp_path / "early.nii.gz", _labels(u[0]), db.grid.affine),
        write_labels(tmp_path / "later.nii.gz", _labels(u[1]), db.grid.affine),
        u,
    )


def test_rescaled_stored_simulation_is_found_with_its_D_rho_T(small_db):
    """(D, rho, t) -> (s D, s rho, t / s) leaves the solution unchanged: a pair of stored snapshots t1 < t2
    matches scans (t2 - t1) / s days apart with D = s D_s, rho = s rho_s, T = t1 / s."""
    e = small_db.entries
    rows = _stored_simulation(small_db)
    s = 1.7
    D, rho = s * e["D_mm2_per_day"][rows[1]], s * e["rho_per_day"][rows[1]]
    t1, t2 = e["T_days"][rows[1]], e["T_days"][rows[2]]
    origin = [e["origin_x_mm"][rows[1]], e["origin_y_mm"][rows[1]], e["origin_z_mm"][rows[1]]]
    u = simulate(small_db.grid, [D], [rho], [origin], [t1 / s, t2 / s])[0]
    scans = [(v >= 0.25, (v >= 0.675) & (v >= 0.25)) for v in u]
    c = joint_candidates(small_db, scans[0], scans[1], (t2 - t1) / s, top_k=100, thresholds_search=False)
    assert c.simulation_id[0] == e["simulation_id"][rows[1]]
    assert c.score[0] > 0.95
    for est, truth in ((c.D_mm2_per_day[0], D), (c.rho_per_day[0], rho), (c.T_days[0], t1 / s)):
        assert est == pytest.approx(truth, rel=0.10)


@pytest.mark.slow
def test_pair_off_the_database_is_recovered_by_the_two_scan_fit(small_db, atlas1, tmp_path):
    """Truth not in the database (D x 1.2, rho x 0.85, seed moved inside its voxel, T between snapshots):
    the two-scan fit recovers T within 30 %, D and rho within 35 % and the seed within one database voxel."""
    e = small_db.entries
    rows = _stored_simulation(small_db, min_voxels=60)
    D, rho = 1.2 * e["D_mm2_per_day"][rows[1]], 0.85 * e["rho_per_day"][rows[1]]
    origin = np.array([e["origin_x_mm"][rows[1]], e["origin_y_mm"][rows[1]], e["origin_z_mm"][rows[1]]]) + [
        1.5,
        -1.0,
        1.0,
    ]
    T = float(np.sqrt(e["T_days"][rows[1]] * e["T_days"][rows[2]]))
    n = 0.5 * (e["T_days"][rows[2]] - e["T_days"][rows[1]])
    early, later, _ = _pair(small_db, D, rho, origin, T, n, tmp_path)
    res = infer_two_scans(small_db, early, later, n, in_atlas_space=True, atlas=atlas1, refine_budget=48)
    p = res.parameters
    assert p["T_days"] == pytest.approx(T + n, rel=0.30)
    assert p["rho_per_day"] == pytest.approx(rho, rel=0.35)
    assert p["D_mm2_per_day"] == pytest.approx(D, rel=0.35)
    assert np.linalg.norm(np.asarray(p["origin_mm"]) - origin) <= small_db.grid.spacing_mm[0]
    assert min(t["fit"]["dice_mean"] for t in res.timepoints) > 0.75
    assert res.extra["refine"]["score"] >= res.extra["refine"]["start_score"]
    for k in ("D_mm2_per_day", "rho_per_day", "T_days"):
        lo, hi = res.uncertainty[k]["ci95"]
        assert 0 < lo < hi


def _stored_pair(db, tmp_path):
    e = db.entries
    rows = _stored_simulation(db)
    origin = [e["origin_x_mm"][rows[1]], e["origin_y_mm"][rows[1]], e["origin_z_mm"][rows[1]]]
    n = float(e["T_days"][rows[2]] - e["T_days"][rows[1]])
    early, later, _ = _pair(
        db, e["D_mm2_per_day"][rows[1]], e["rho_per_day"][rows[1]], origin, e["T_days"][rows[1]], n, tmp_path
    )
    return early, later, n


def _check_outputs(out, n: float) -> dict:
    res = json.loads((out / "result.json").read_text())
    assert [t["scan"] for t in res["timepoints"]] == ["earlier", "later"]
    assert res["timepoints"][1]["T_days"] == pytest.approx(res["timepoints"][0]["T_days"] + n)
    assert res["parameters"]["T_days"] == pytest.approx(res["timepoints"][1]["T_days"])
    cal = res["calibration"]
    assert cal["method"].startswith("none") and "no two-scan calibration" in cal["warning"]
    assert res["projection"]["days_after_later_scan"] == 60 and res["days_between"] == pytest.approx(n)
    for f in ("tumor_density.nii.gz", "tumor_density_projected.nii.gz", "tumor_density_projected_atlas.nii.gz"):
        assert (out / f).is_file()
    return res


@pytest.mark.slow
def test_two_scan_result_has_timepoints_calibration_and_projection(small_db, atlas1, tmp_path):
    early, later, n = _stored_pair(small_db, tmp_path)
    res = infer_two_scans(
        small_db, early, later, n, in_atlas_space=True, atlas=atlas1, refine_budget=12, project_days=60
    )
    res.save(tmp_path / "OUT", figure=False)
    _check_outputs(tmp_path / "OUT", n)
    proj, now = res.projected_density_array, res.density_array
    assert (proj >= 0.25).sum() > (now >= 0.25).sum()  # the tumour grows on


@pytest.mark.slow
def test_cli_two_scans_writes_timepoints_and_projection(small_db_path, small_db, tmp_path):
    early, later, n = _stored_pair(small_db, tmp_path)
    out = tmp_path / "OUT"
    r = runner.invoke(
        app,
        [
            "infer",
            "--db",
            str(small_db_path),
            "--seg",
            str(early),
            "--seg-later",
            str(later),
            "--days-between",
            str(n),
            "--project-days",
            "60",
            "--in-atlas-space",
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    _check_outputs(out, n)
    assert json.loads(r.stdout)["days_between"] == pytest.approx(n)


@pytest.mark.parametrize("days", ["0", "-5", "nan"])
def test_cli_interval_not_positive_exit_2_one_line(small_db_path, tmp_path, days):
    seg = write_labels(tmp_path / "a.nii.gz", np.ones((4, 4, 4), np.uint8) * 2, np.eye(4))
    out = tmp_path / "OUT"
    p = subprocess.run(
        [
            GLIOFIT,
            "infer",
            "--db",
            str(small_db_path),
            "--seg",
            str(seg),
            "--seg-later",
            str(seg),
            f"--days-between={days}",
            "--in-atlas-space",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "--days-between" in p.stderr
    assert not out.exists()


def test_cli_grids_differ_or_missing_interval_exit_2(small_db_path, small_db, tmp_path):
    g = small_db.grid
    lab = np.zeros(g.shape, np.uint8)
    lab[10:14, 12:16, 12:16] = 2
    a = write_labels(tmp_path / "a.nii.gz", lab, g.affine)
    b = write_labels(tmp_path / "b.nii.gz", lab[1:], g.affine)
    out = tmp_path / "OUT"
    for extra, words in (
        (["--seg-later", str(b), "--days-between", "30"], "b.nii.gz: later scan grid differs"),
        (["--seg-later", str(b)], "--days-between"),
        (["--days-between", "30"], "--seg-later"),
    ):
        r = runner.invoke(
            app, ["infer", "--db", str(small_db_path), "--seg", str(a), "--in-atlas-space", "-o", str(out), *extra]
        )
        assert r.exit_code == 2, r.output
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0]
        assert not out.exists()


def _obs(mask: np.ndarray) -> Observation:
    return Observation(mask, mask, mask, mask, "x.nii.gz", "masks", "atlas", mask.shape, np.eye(4))


def _ball(r: float, n: int = 48) -> np.ndarray:
    x = np.indices((n, n, n)) - (n - 1) / 2
    return (x**2).sum(axis=0) <= r * r


def test_shrinkage_warning_only_beyond_boundary_noise():
    early = _obs(_ball(15.0))
    assert shrinkage_warning(early, _obs(_ball(16.0))) is None  # grew
    assert shrinkage_warning(early, _obs(_ball(14.0))) is None  # 1 mm in: within 2 mm of noise
    msg = shrinkage_warning(early, _obs(_ball(11.0)))  # 4 mm in: beyond
    assert msg is not None and "smaller than the earlier" in msg


@pytest.mark.slow
def test_two_scan_intervals_use_the_single_scan_calibration(small_db, atlas1, tmp_path):
    """A calibration fitted on two-scan results (the single-scan records and file format) is read from
    DB/gliofit-calibration-two-scan.json: the 95 % interval is the estimate times exp(+-q95 * spread)."""
    early, later, n = _stored_pair(small_db, tmp_path)
    res = infer_two_scans(small_db, early, later, n, in_atlas_space=True, atlas=atlas1, refine_budget=8)
    truth = {k: v * 1.1 if k != "origin_mm" else [c + 1.0 for c in v] for k, v in res.parameters.items()}
    records = [calibration_record(res, truth, f"pair-{i}") for i in range(3)]
    path = write_calibration(small_db, records, {"test": True}, tmp_path / CALIBRATION_FILE)
    doc, warning = read_two_scan_calibration(small_db, path)
    assert warning is None
    again = infer_two_scans(
        small_db, early, later, n, in_atlas_space=True, atlas=atlas1, refine_budget=8, calibration=path
    )
    assert again.calibration["patients"] == 3 and not any("calibrat" in w for w in again.warnings)
    for k in ("D_mm2_per_day", "rho_per_day", "T_days", "infiltration_length_mm"):
        v, s = again.parameters[k], again.extra["spread"][k]
        q = doc["quantiles"][k]["q95"]
        assert again.uncertainty[k]["ci95"] == pytest.approx([v * np.exp(-q * s), v * np.exp(q * s)])
    other = json.loads(path.read_text())
    other["database"]["resolution_mm"] = 1.0
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(InputError, match="another database"):
        read_two_scan_calibration(small_db, tmp_path / "other.json")
    assert read_two_scan_calibration(small_db)[0] is None  # none in the database folder: uncalibrated


def test_time_scale_uncertainty_of_exponential_growth():
    """A run growing as V0 exp(g t): the scans' times are ln(V / V0) / g, each known to sd / g, so the time
    scale s = (t_l - t_e) / N is known to sqrt(2) sd / ln(V_l / V_e) in log."""
    from gliofit.inverse.two_scan_refine import MAX_LOG_SD, scan_times

    g, v0 = 0.02, 10.0
    times = np.linspace(1.0, 200.0, 400)
    vox = v0 * np.exp(g * times)
    volumes, sd = (200.0, 300.0), 0.05
    t_e, t_l, sd_log_s = scan_times(volumes, (sd, sd), vox, times)
    assert t_e == pytest.approx(np.log(20.0) / g, rel=1e-3)
    assert t_l == pytest.approx(np.log(30.0) / g, rel=1e-3)
    assert sd_log_s == pytest.approx(np.sqrt(2) * sd / np.log(1.5), rel=1e-2)
    # a run that stalls between the scans leaves s unknown: capped
    flat = np.minimum(vox, 250.0)
    assert scan_times(volumes, (sd, sd), flat, times)[2] == MAX_LOG_SD
