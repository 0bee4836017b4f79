"""``gliofit.infer`` and ``gliofit infer``: recovery, result.json schema, conventions, bad input."""

from __future__ import annotations

import json
import subprocess

import nibabel as nib
import numpy as np
import pytest
from inversehelpers import GLIOFIT, grow_cases, write_labels
from scipy import ndimage
from typer.testing import CliRunner

import gliofit
from gliofit.cli import app
from gliofit.common.grids import resample_linear
from gliofit.common.nifti import save_volume
from gliofit.inverse.estimate import PARAMETER_KEYS
from gliofit.growth.atlas import to_atlas_grid
from gliofit.growth.solver import SolverConfig, simulate_one

runner = CliRunner()


@pytest.fixture(scope="module")
def cases(small_db):
    return grow_cases(small_db, 6)


@pytest.fixture(scope="module")
def case_seg(tmp_path_factory, small_db, cases):
    """The first case as a BraTS 2023 label map on the database grid (atlas space)."""
    return write_labels(tmp_path_factory.mktemp("seg") / "seg.nii.gz", cases[0].labels(), small_db.grid.affine)


def test_recovery_truth_lies_in_the_95_interval_for_most_cases(tmp_path, small_db, atlas1, cases):
    """mu_D, mu_rho and the origin of queries grown from parameters not in the database; the intervals
    must also say something (narrower than the database's own spread)."""
    inside, n, narrow = 0, 0, 0
    e = small_db.entries
    db_span = np.percentile(e["mu_D_mm"], 97.5) - np.percentile(e["mu_D_mm"], 2.5)
    for k, c in enumerate(cases):
        seg = write_labels(tmp_path / f"seg{k}.nii.gz", c.labels(), small_db.grid.affine)
        res = gliofit.infer(small_db, seg, atlas=atlas1, refine=False, shift=False)  # the uncalibrated match summary
        u = res.uncertainty
        checks = [
            u["mu_D_mm"]["ci95"][0] <= c.mu_D_mm <= u["mu_D_mm"]["ci95"][1],
            u["mu_rho"]["ci95"][0] <= c.mu_rho <= u["mu_rho"]["ci95"][1],
            bool(
                np.all(
                    (np.asarray(u["origin_mm"]["ci95"][0]) <= c.origin_mm)
                    & (c.origin_mm <= np.asarray(u["origin_mm"]["ci95"][1]))
                )
            ),
        ]
        inside += sum(checks)
        n += len(checks)
        origin_width = np.asarray(u["origin_mm"]["ci95"][1]) - np.asarray(u["origin_mm"]["ci95"][0])
        narrow += bool(
            u["mu_D_mm"]["ci95"][1] - u["mu_D_mm"]["ci95"][0] < 0.75 * db_span and np.all(origin_width <= 30.0)
        )
        assert res.fit["dice_whole_tumor"] > 0.2  # the best match overlaps the query
        assert res.matches[0]["dice_whole_tumor"] == res.extra["match_fit"]["dice_whole_tumor"]
    assert inside >= 0.75 * n, f"truth inside the 95% interval in {inside} of {n} checks"
    assert narrow >= len(cases) // 2, f"informative intervals in {narrow} of {len(cases)} cases"


def test_result_json_has_exactly_the_interface_keys(tmp_path, small_db, case_seg):
    res = gliofit.infer(small_db.path, case_seg, refine=False)
    files = res.save(tmp_path / "OUT")
    assert {p.name for p in files.values()} == {
        "result.json",
        "tumor_density_atlas.nii.gz",
        "tumor_density.nii.gz",
        "report.png",
        "report.html",
    }
    html = (tmp_path / "OUT" / "report.html").read_text()
    assert "data:image/png;base64," in html and "mu_D_mm" in html and html.rstrip().endswith("</html>")
    d = json.loads((tmp_path / "OUT" / "result.json").read_text())
    assert set(d) == {
        "gliofit_version",
        "space",
        "database",
        "parameters",
        "seed",
        "uncertainty",
        "calibration",
        "fit",
        "matches",
        "timings_s",
        "warnings",
    }
    assert d["seed"] == {
        "kind": "gaussian",
        "sigma_mm": 1.5,
        "peak": 1.0,
        "mass_mm3": pytest.approx(53.2, abs=0.1),
        "independent_of_seed": ["infiltration_length_mm", "velocity_mm_per_day"],
    }
    assert {"method", "coverage95"} <= set(d["calibration"]) and "gliofit db calibrate" in d["calibration"]["warning"]
    assert any("gliofit db calibrate" in w for w in d["warnings"])
    assert d["gliofit_version"] == gliofit.__version__ and d["space"] == "atlas"
    assert set(d["database"]) == {"path", "entries", "atlas", "resolution_mm"}
    assert d["database"]["entries"] == len(small_db.entries["id"]) and d["database"]["resolution_mm"] == 6.0
    assert list(d["parameters"]) == list(PARAMETER_KEYS)
    assert len(d["parameters"]["origin_mm"]) == 3
    assert set(d["uncertainty"]) == set(PARAMETER_KEYS)
    for k, v in d["uncertainty"].items():
        assert set(v) == {"mean", "std", "ci95", "ci50"} and len(v["ci95"]) == 2
        if k != "origin_mm":
            assert v["ci95"][0] <= v["mean"] <= v["ci95"][1] or np.isclose(v["ci95"][0], v["ci95"][1])
    assert set(d["fit"]) == {"dice_whole_tumor", "dice_core", "dice_mean"}
    assert d["fit"]["dice_mean"] == pytest.approx(0.5 * (d["fit"]["dice_whole_tumor"] + d["fit"]["dice_core"]))
    assert 1 <= len(d["matches"]) <= 10 and [m["rank"] for m in d["matches"]] == list(range(1, len(d["matches"]) + 1))
    for m in d["matches"]:
        assert set(m) == {
            "rank",
            "entry_id",
            "simulation_id",
            "dice_whole_tumor",
            "dice_core",
            "shift_voxels",
            "parameters",
        }
        assert list(m["parameters"]) == list(PARAMETER_KEYS)
    assert d["matches"][0]["parameters"] == d["parameters"]
    assert set(d["timings_s"]) == {"load", "segmentation", "registration", "query", "total"}
    atlas_img = nib.load(tmp_path / "OUT" / "tumor_density_atlas.nii.gz")
    assert atlas_img.shape == (197, 233, 189)
    dens = np.asarray(atlas_img.dataobj)
    assert dens.dtype == np.float32 and 0 <= dens.min() and dens.max() <= 1
    inp = nib.load(tmp_path / "OUT" / "tumor_density.nii.gz")
    assert inp.shape == small_db.grid.shape and np.allclose(inp.affine, small_db.grid.affine)


def test_density_is_the_best_entry_solved_uncropped(small_db, case_seg, atlas1):
    res = gliofit.infer(small_db, case_seg, atlas=atlas1, refine=False, shift=False)
    ratio = float(small_db.manifest.design["diffusivity_ratio"])
    u = simulate_one(
        small_db.grid,
        *(res.parameters[k] for k in ("D_mm2_per_day", "rho_per_day", "origin_mm", "T_days")),
        diffusivity_ratio=ratio,
        config=SolverConfig(active_box=False),
    )
    assert isinstance(res.density, nib.Nifti1Image)
    assert np.allclose(
        np.asarray(res.density.dataobj), np.clip(to_atlas_grid(u, small_db.grid, atlas1), 0, 1), atol=1e-6
    )
    assert np.allclose(res.density.affine, atlas1.affine)
    # the same tumour as the stored entry where the entry was stored, and positive past its crop, in all
    # tissue within a plan's 15 mm of the visible tumour
    stored = small_db.density(res.matches[0]["entry_id"])
    kept = stored > 0
    assert np.abs(u[kept] - stored[kept]).max() < 0.02
    near = ndimage.distance_transform_edt(stored < 0.25, sampling=small_db.grid.spacing_mm) <= 15.0
    assert (small_db.grid.domain & near & ~kept).any()
    assert np.all(u[small_db.grid.domain & near] > 0)


def test_conventions_give_the_same_result(tmp_path, small_db, atlas1, cases):
    c, g = cases[1], small_db.grid
    lab23 = c.labels("brats2023")
    p23 = write_labels(tmp_path / "s23.nii.gz", lab23, g.affine)
    p21 = write_labels(tmp_path / "s21.nii.gz", c.labels("brats2021"), g.affine)
    pwt = write_labels(tmp_path / "wt.nii.gz", (lab23 > 0).astype(np.uint8), g.affine)
    pco = write_labels(tmp_path / "co.nii.gz", (lab23 == 3).astype(np.uint8), g.affine)
    results = [
        gliofit.infer(small_db, p23, atlas=atlas1),
        gliofit.infer(small_db, p21, atlas=atlas1),
        gliofit.infer(small_db, pwt, labels="masks", core=pco, atlas=atlas1),
    ]
    first = results[0].to_dict()
    for r in results[1:]:
        d = r.to_dict()
        assert d["parameters"] == first["parameters"] and d["matches"] == first["matches"]
        assert d["uncertainty"] == first["uncertainty"]


def test_exhaustive_method_runs_and_reports_its_best_score(small_db, case_seg, atlas1):
    res = gliofit.infer(small_db, case_seg, method="exhaustive", top_k=20, atlas=atlas1)
    assert res.extra["method"] == "exhaustive" and res.extra["candidates"] == len(small_db.entries["id"])
    assert len(res.matches) == 10


def test_cli_infer_writes_outputs_and_prints_json(tmp_path, small_db_path, case_seg):
    out = tmp_path / "OUT"
    r = runner.invoke(
        app, ["infer", "--db", str(small_db_path), "--seg", str(case_seg), "-o", str(out), "--top-k", "50"]
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["space"] == "atlas" and (out / "result.json").is_file() and (out / "report.png").is_file()
    assert json.loads((out / "result.json").read_text())["parameters"]["mu_D_mm"] == summary["parameters"]["mu_D_mm"]


def _bad_seg(tmp_path, kind, g):
    lab = np.zeros(g.shape, np.uint8)
    lab[10:14, 12:16, 12:16] = 2
    lab[11:13, 13:15, 13:15] = 3
    if kind == "not-3d":
        return save_volume(np.stack([lab, lab], -1), g.affine, tmp_path / "seg.nii.gz", dtype=np.uint8), []
    if kind == "unknown-labels":
        lab[lab == 3] = 9
    if kind == "empty":
        lab[:] = 0
    affine = g.affine @ np.diag([-1.0, -1, 1, 1]) if kind == "patient-space" else g.affine
    extra = ["--labels", "brats2021"] if kind == "wrong-convention" else []
    return save_volume(lab, affine, tmp_path / "seg.nii.gz", dtype=np.uint8), extra


@pytest.mark.parametrize("kind", ["not-3d", "unknown-labels", "empty", "patient-space", "wrong-convention"])
def test_cli_bad_input_exit_2_one_line_nothing_written(tmp_path, small_db_path, small_db, kind):
    seg, extra = _bad_seg(tmp_path, kind, small_db.grid)
    out = tmp_path / "OUT"
    r = runner.invoke(app, ["infer", "--db", str(small_db_path), "--seg", str(seg), "-o", str(out), *extra])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gliofit: error:") and "seg.nii.gz" in lines[0]
    assert not out.exists()


def test_console_script_patient_space_without_t1(tmp_path, small_db_path, small_db):
    seg, _ = _bad_seg(tmp_path, "patient-space", small_db.grid)
    p = subprocess.run(
        [GLIOFIT, "infer", "--db", str(small_db_path), "--seg", str(seg), "-o", str(tmp_path / "O")],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2 and "not in atlas space" in p.stderr and "--t1" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "O").exists()


def test_refined_simulation_is_what_is_reported(small_db, atlas1, cases, tmp_path):
    seg = write_labels(tmp_path / "seg.nii.gz", cases[2].labels(), small_db.grid.affine)
    plain = gliofit.infer(small_db, seg, atlas=atlas1, refine=False)
    res = gliofit.infer(small_db, seg, atlas=atlas1, refine_budget=10)
    rep = res.extra["refine"]
    assert rep["n_forward_runs"] <= 10 and rep["dice_mean"] >= rep["start_dice_mean"]
    assert rep["adopted"] == (any(res.matches[0]["shift_voxels"]) or rep["dice_mean"] > plain.fit["dice_mean"])
    if rep["adopted"]:
        assert res.fit["dice_mean"] == pytest.approx(rep["dice_mean"])
        assert res.parameters["D_mm2_per_day"] == pytest.approx(rep["D_mm2_per_day"])
        assert res.parameters["origin_mm"] == pytest.approx(rep["origin_mm"])
    else:
        assert res.parameters == plain.parameters and res.fit == plain.fit
    assert res.density_array.shape == atlas1.shape and res.density_array.max() > 0.5
    assert plain.matches == res.matches  # the query is the same; refinement starts from it


@pytest.mark.parametrize(
    "flags", [["--no-refine", "--refine-budget", "5"], ["--refine-budget", "0"], ["--refine-budget", "-3"]]
)
def test_cli_refine_flags_bad_input_exit_2(tmp_path, small_db_path, case_seg, flags):
    out = tmp_path / "OUT"
    r = runner.invoke(app, ["infer", "--db", str(small_db_path), "--seg", str(case_seg), "-o", str(out), *flags])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--refine-budget" in lines[0] and not out.exists()


def test_shifted_affine_is_not_taken_for_atlas_space(tmp_path, small_db_path, small_db, cases):
    """A segmentation on the database grid is detected as atlas space; the same voxels with the affine
    moved by 12 mm are not (they would put the origin 12 mm off)."""
    g = small_db.grid
    ok = write_labels(tmp_path / "ok.nii.gz", cases[0].labels(), g.affine)
    moved = g.affine.copy()
    moved[0, 3] += 12.0
    bad = write_labels(tmp_path / "seg.nii.gz", cases[0].labels(), moved)
    r = runner.invoke(
        app, ["infer", "--db", str(small_db_path), "--seg", str(ok), "-o", str(tmp_path / "A"), "--no-refine"]
    )
    assert r.exit_code == 0, r.output
    assert "detected" in json.loads(r.stdout)["space_note"]
    r = runner.invoke(
        app, ["infer", "--db", str(small_db_path), "--seg", str(bad), "-o", str(tmp_path / "B"), "--no-refine"]
    )
    assert r.exit_code == 2 and "not in atlas space" in r.stderr and not (tmp_path / "B").exists()
    r = runner.invoke(
        app,
        [
            "infer",
            "--db",
            str(small_db_path),
            "--seg",
            str(bad),
            "-o",
            str(tmp_path / "C"),
            "--no-refine",
            "--in-atlas-space",
        ],
    )
    assert r.exit_code == 0, r.output


def test_top_level_api_names():
    from gliofit.inverse.result import Result
    from gliofit.simulations_db.database import open_database

    assert gliofit.Result is Result and gliofit.open_database is open_database and callable(gliofit.infer)
    assert {"open_database", "infer", "Result"} <= set(gliofit.__all__)


def test_input_on_the_atlas_grid_gets_the_atlas_density_file(tmp_path, small_db, case_seg, atlas1):
    obs = gliofit.infer(small_db, case_seg, atlas=atlas1, refine=False).observation
    seg = np.where(obs.core_atlas, 1, np.where(obs.wt_atlas, 2, 0)).astype(np.uint8)
    path = tmp_path / "seg-1mm.nii.gz"
    nib.save(nib.Nifti1Image(seg, atlas1.affine), path)
    res = gliofit.infer(small_db, path, atlas=atlas1, refine=False)
    assert res.observation.on_atlas_grid(atlas1)
    np.testing.assert_allclose(
        res.density_on_input_grid(),
        resample_linear(res.density_array, atlas1.affine, atlas1.affine, atlas1.shape),
        atol=1e-6,
    )
    res.save(tmp_path / "OUT", figure=False)
    a, b = (nib.load(tmp_path / "OUT" / f) for f in ("tumor_density_atlas.nii.gz", "tumor_density.nii.gz"))
    assert np.array_equal(a.affine, b.affine) and np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
