"""Radiotherapy planning: standard target (core + margin in mm), model target (same volume, highest
density), recurrence coverage, the file pipeline and ``gliofit plan`` (through a local Typer app)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import typer
from scipy import ndimage
from scipy.spatial import cKDTree
from typer.testing import CliRunner

from gliofit.cli.planning import plan as plan_command
from gliofit.common.errors import InputError
from gliofit.common.nifti import save_volume
from gliofit.pipelines.planning import make_plan, plan_files, recurrence_coverage

runner = CliRunner()


def _grid(shape, spacing=(1.0, 1.0, 1.0)):
    """World-mm coordinates (X, Y, Z, 3) of the voxel centres and the diagonal affine."""
    affine = np.diag([*spacing, 1.0])
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(float)
    return ijk * np.asarray(spacing), affine


def _ball(xyz, centre_mm, radius_mm):
    return np.linalg.norm(xyz - np.asarray(centre_mm, dtype=float), axis=-1) <= radius_mm


def _ball_volume(r):
    return 4.0 / 3.0 * np.pi * r**3


# ---------------------------------------------------------------------------------------------------
# standard target


def _dilated_by_brute_force(xyz, core, margin_mm):
    """Voxels whose centre lies within ``margin_mm`` of a core voxel centre (k-d tree, world mm)."""
    d, _ = cKDTree(xyz[core]).query(xyz.reshape(-1, 3), distance_upper_bound=margin_mm + 1.0)
    return (d <= margin_mm).reshape(core.shape)


def test_standard_is_the_ball_of_radius_r_plus_margin_isotropic():
    spacing, shape = (0.5, 0.5, 0.5), (64, 64, 64)
    xyz, affine = _grid(shape, spacing)
    c, r, m = (16.0, 16.0, 16.0), 5.0, 10.0
    core = _ball(xyz, c, r)
    plan = make_plan(np.zeros(core.shape), core, affine, margin_mm=m)
    volume_mm3 = plan.standard.sum() * 0.125
    assert abs(volume_mm3 - _ball_volume(r + m)) < 0.03 * _ball_volume(r + m)
    # between the balls of r+m and r+m-sqrt(3)h (h: voxel size; the discrete core's facets)
    assert (plan.standard <= _ball(xyz, c, r + m)).all()
    assert (_ball(xyz, c, r + m - np.sqrt(3) * 0.5) <= plan.standard).all()
    assert (plan.standard == _dilated_by_brute_force(xyz, core, m)).all()
    assert plan.summary["volumes_cm3"]["standard"] == pytest.approx(volume_mm3 / 1000.0, abs=1e-4)
    assert plan.summary["margin_mm"] == m
    assert (core <= plan.standard).all()


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 2.0), (0.5, 0.5, 1.0)])
def test_margin_is_in_mm_on_an_anisotropic_grid(spacing):
    shape = tuple(int(40 / s) for s in spacing)
    xyz, affine = _grid(shape, spacing)
    c, r, m = (20.0, 20.0, 20.0), 5.0, 10.0
    centre = [int(20 / s) for s in spacing]
    core = _ball(xyz, c, r)
    plan = make_plan(np.zeros(core.shape), core, affine, margin_mm=m)
    assert (plan.standard == _dilated_by_brute_force(xyz, core, m)).all()
    assert (plan.standard <= _ball(xyz, c, r + m)).all()
    assert (_ball(xyz, c, r + m - np.sqrt(3) * max(spacing)) <= plan.standard).all()
    i, _, k = np.nonzero(plan.standard)
    sx, sz = spacing[0], spacing[2]
    reach_x = int((np.floor(r / sx) * sx + m) / sx)  # core's extreme voxel + margin, in voxels
    reach_z = int((np.floor(r / sz) * sz + m) / sz)
    assert i.max() - centre[0] == reach_x and k.max() - centre[2] == reach_z
    assert reach_z < reach_x / 1.5  # the margin in voxels differs along z
    assert plan.summary["spacing_mm"] == list(spacing)


def test_targets_are_limited_to_the_brain():
    xyz, affine = _grid((48, 48, 48))
    core = _ball(xyz, (24, 24, 24), 5.0)
    brain = xyz[..., 0] < 32.0  # cuts the 15 mm ball (x up to 39)
    density = np.exp(-np.linalg.norm(xyz - [34.0, 24, 24], axis=-1) / 6.0)  # peak outside the brain
    plan = make_plan(density, core, affine, brain=brain, margin_mm=10.0)
    assert (plan.standard <= brain).all() and (plan.model <= brain).all()
    unlimited = make_plan(density, core, affine, margin_mm=10.0)
    assert plan.standard.sum() < unlimited.standard.sum()
    assert (plan.standard == (unlimited.standard & brain)).all()
    assert plan.model.sum() == plan.standard.sum()
    assert plan.summary["brain"] == "given" and unlimited.summary["brain"] == "none"
    assert any("no brain mask" in w for w in unlimited.summary["warnings"])


def test_brain_mask_never_cuts_the_tumour():
    xyz, affine = _grid((32, 32, 32))
    core = _ball(xyz, (16, 16, 16), 4.0)
    brain = xyz[..., 0] < 15.0  # misses part of the core
    plan = make_plan(np.zeros(core.shape), core, affine, brain=brain, margin_mm=5.0)
    assert (core <= plan.standard).all() and (core <= plan.model).all()
    assert (plan.standard <= (brain | core)).all()


# ---------------------------------------------------------------------------------------------------
# model target


def test_model_target_is_the_top_n_density_voxels():
    xyz, affine = _grid((40, 40, 40))
    core = _ball(xyz, (20, 20, 20), 4.0)
    rng = np.random.default_rng(0)
    dist = np.linalg.norm(xyz - [24.0, 20, 20], axis=-1)  # centred 4 mm off the core
    density = np.exp(-dist / 5.0) * (1.0 - 1e-6 * rng.random(dist.shape))  # no ties
    plan = make_plan(density, core, affine, margin_mm=8.0)
    n = int(plan.standard.sum())
    assert int(plan.model.sum()) == n
    top = np.zeros(density.size, dtype=bool)
    top[np.argsort(-density, axis=None)[:n]] = True
    assert (plan.model.reshape(-1) == top).all()
    assert (core <= plan.model).all()
    assert plan.threshold == pytest.approx(density[plan.model].min())
    assert plan.threshold > density[~plan.model].max()
    assert plan.summary["core_voxels_forced"] == 0
    assert plan.summary["volumes_cm3"]["model"] == plan.summary["volumes_cm3"]["standard"]
    assert 0.0 < plan.summary["dice_standard_model"] < 1.0


def test_model_target_contains_the_core_even_where_the_density_is_low():
    xyz, affine = _grid((48, 48, 48))
    core = _ball(xyz, (14, 24, 24), 4.0)
    density = np.exp(-np.linalg.norm(xyz - [34.0, 24, 24], axis=-1) / 4.0)  # peak 20 mm away
    plan = make_plan(density, core, affine, margin_mm=6.0)
    assert plan.model.sum() == plan.standard.sum()
    assert (core <= plan.model).all()
    assert plan.threshold == pytest.approx(density[plan.model].min())
    assert plan.summary["core_voxels_forced"] > 0
    rest = plan.model & ~core
    assert density[rest].min() >= density[~plan.model].max()  # the rest is still the top density


def test_ties_at_zero_density_go_to_the_voxels_closest_to_the_core():
    xyz, affine = _grid((40, 40, 40))
    core = _ball(xyz, (20, 20, 20), 3.0)
    density = np.where(_ball(xyz, (20, 20, 20), 5.0), 0.8, 0.0)  # support smaller than the target
    plan = make_plan(density, core, affine, margin_mm=8.0)
    assert plan.model.sum() == plan.standard.sum()  # exactly the same volume
    d_core, _ = cKDTree(xyz[core]).query(xyz.reshape(-1, 3))  # mm to the nearest core voxel
    d_core = d_core.reshape(core.shape)
    zero_in, zero_out = plan.model & (density == 0), ~plan.model & (density == 0)
    assert zero_in.any()
    assert d_core[zero_in].max() <= d_core[zero_out].min()  # closest to the core first
    assert plan.threshold == 0.0


def test_empty_core_falls_back_to_the_whole_tumour():
    xyz, affine = _grid((32, 32, 32))
    wt = _ball(xyz, (16, 16, 16), 4.0)
    plan = make_plan(np.zeros(wt.shape), np.zeros(wt.shape, bool), affine, margin_mm=5.0, whole_tumor=wt)
    assert plan.summary["basis"] == "whole_tumor"
    assert (wt <= plan.standard).all() and plan.summary["volumes_cm3"]["core"] == 0.0
    assert any("core is empty" in w for w in plan.summary["warnings"])
    with pytest.raises(InputError, match="no tumour"):
        make_plan(np.zeros(wt.shape), np.zeros(wt.shape, bool), affine, whole_tumor=np.zeros(wt.shape, bool))


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"margin_mm": 0.0}, "margin"),
        ({"margin_mm": -5.0}, "margin"),
        ({"density": "nan"}, "NaN"),
        ({"density": "high"}, r"\[0, 1\]"),
        ({"brain": "shape"}, "brain"),
    ],
)
def test_make_plan_rejects_bad_input(bad, match):
    xyz, affine = _grid((16, 16, 16))
    core = _ball(xyz, (8, 8, 8), 2.0)
    density = np.zeros(core.shape)
    kwargs = {"margin_mm": bad.get("margin_mm", 3.0)}
    if bad.get("density") == "nan":
        density[0, 0, 0] = np.nan
    if bad.get("density") == "high":
        density[0, 0, 0] = 1.5
    if bad.get("brain") == "shape":
        kwargs["brain"] = np.ones((16, 16, 15), bool)
    with pytest.raises(InputError, match=match):
        make_plan(density, core, affine, **kwargs)


# ---------------------------------------------------------------------------------------------------
# recurrence coverage


def test_recurrence_half_inside_the_standard_target():
    xyz, affine = _grid((48, 48, 48))
    core = _ball(xyz, (24, 24, 24), 5.0)
    plan = make_plan(np.zeros(core.shape), core, affine, margin_mm=10.0)
    rec = np.zeros(core.shape, bool)
    rec[25:40, 24, 24] = True  # 15 inside (x = 25..39)
    rec[25:40, 24, 2] = True  # 15 outside (z = 2: >= 17 mm from the core)
    cov = recurrence_coverage(plan, rec)
    assert cov["standard"] == pytest.approx(0.5)
    assert set(cov) == {"standard", "model"}
    enh = np.zeros(core.shape, bool)
    enh[25:40, 24, 24] = True
    cov = recurrence_coverage(plan, rec, enh)
    assert cov["standard_enhancing"] == pytest.approx(1.0)
    assert 0.0 <= cov["model_enhancing"] <= 1.0
    with pytest.raises(InputError, match="no voxels"):
        recurrence_coverage(plan, np.zeros(core.shape))


def test_recurrence_along_the_density_gradient_is_covered_better_by_the_model():
    xyz, affine = _grid((64, 48, 48))
    core = _ball(xyz, (20, 24, 24), 5.0)
    # infiltration extends towards +x: the density decays slowly along x, fast across
    rel = xyz - [20.0, 24, 24]
    density = np.exp(
        -np.sqrt(
            (np.clip(rel[..., 0], 0, None) / 3.0) ** 2
            + (np.clip(-rel[..., 0], 0, None)) ** 2
            + rel[..., 1] ** 2
            + rel[..., 2] ** 2
        )
        / 3.0
    )
    plan = make_plan(density, core, affine, margin_mm=10.0)
    rec = _ball(xyz, (40, 24, 24), 5.0)  # recurrence 20 mm along the gradient
    cov = recurrence_coverage(plan, rec)
    assert plan.model.sum() == plan.standard.sum()
    assert cov["model"] > cov["standard"] + 0.2


# ---------------------------------------------------------------------------------------------------
# files and the command line


AFFINE = np.array([[2.0, 0, 0, -31.0], [0, 2.0, 0, -40.0], [0, 0, 2.5, 10.0], [0, 0, 0, 1]])


def _case(tmp_path, brain=True, labels=(1, 2, 3)):
    """Density, BraTS-2023 segmentation (and brain mask beside the density) on a 2x2x2.5 mm grid."""
    shape = (32, 32, 24)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(float)
    xyz = ijk * [2.0, 2.0, 2.5]
    d = np.linalg.norm(xyz - [32.0, 32, 30], axis=-1)
    density = np.exp(-d / 8.0).astype(np.float32)
    seg = np.zeros(shape, np.uint8)
    seg[d <= 14.0] = labels[1]
    seg[d <= 8.0] = labels[2]
    seg[d <= 4.0] = labels[0]
    (tmp_path / "in").mkdir()
    dpath = save_volume(density, AFFINE, tmp_path / "in" / "tumor_density.nii.gz")
    spath = save_volume(seg, AFFINE, tmp_path / "in" / "seg.nii.gz", dtype=np.uint8)
    if brain:
        save_volume(
            (xyz[..., 0] < 50.0).astype(np.uint8), AFFINE, tmp_path / "in" / "brain_mask.nii.gz", dtype=np.uint8
        )
    return dpath, spath, xyz


def test_plan_files_write_targets_on_the_input_grid(tmp_path):
    dpath, spath, xyz = _case(tmp_path)
    rec = np.zeros(xyz.shape[:3], np.uint8)
    rec[_ball(xyz, (50.0, 32, 30), 6.0)] = 2
    rec[_ball(xyz, (50.0, 32, 30), 3.0)] = 3  # enhancing (BraTS 2023)
    rpath = save_volume(rec, AFFINE, tmp_path / "in" / "rec.nii.gz", dtype=np.uint8)
    paths = plan_files(dpath, spath, tmp_path / "out", margin_mm=10.0, recurrence_path=rpath)
    assert set(paths) == {"target_standard", "target_model", "plan"}
    std, mod = nib.load(paths["target_standard"]), nib.load(paths["target_model"])
    for img in (std, mod):
        assert np.allclose(img.affine, AFFINE) and img.shape == (32, 32, 24)
        assert img.get_data_dtype() == np.uint8
    s, m = np.asarray(std.dataobj), np.asarray(mod.dataobj)
    assert set(np.unique(s)) <= {0, 1} and s.sum() == m.sum()
    assert (s[xyz[..., 0] >= 50.0] == 0).all()  # brain_mask.nii.gz beside the density used
    summary = json.loads(paths["plan"].read_text())
    assert summary["brain"].endswith("brain_mask.nii.gz")
    assert summary["volumes_cm3"]["standard"] == pytest.approx(s.sum() * 10.0 / 1000.0, abs=1e-3)
    assert set(summary["coverage"]) == {"standard", "model", "standard_enhancing", "model_enhancing"}
    assert summary["recurrence"]["kind"] == "brats2023"
    assert all(0.0 <= v <= 1.0 for v in summary["coverage"].values())


def test_plan_files_without_brain_records_none(tmp_path):
    dpath, spath, _ = _case(tmp_path, brain=False, labels=(1, 2, 4))
    paths = plan_files(dpath, spath, tmp_path / "out", labels="brats2021")
    summary = json.loads(paths["plan"].read_text())
    assert summary["brain"] == "none" and summary["coverage"] is None


def _app():
    app = typer.Typer()
    app.command("plan")(plan_command)
    app.command("noop")(lambda: None)  # two commands: "plan" stays a subcommand
    return app


def test_cli_plan_writes_outputs_and_one_json_line(tmp_path):
    dpath, spath, _ = _case(tmp_path, brain=False)
    out = tmp_path / "out"
    res = runner.invoke(
        _app(), ["plan", "--density", str(dpath), "--seg", str(spath), "--margin-mm", "10", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["volumes_cm3"]["standard"] == line["volumes_cm3"]["model"] > 0
    assert line["files"] == ["plan.json", "target_model.nii.gz", "target_standard.nii.gz"]
    assert "no brain mask" in res.stderr
    for name in line["files"]:
        assert (out / name).is_file()
    assert np.allclose(nib.load(out / "target_model.nii.gz").affine, AFFINE)


def _bad(tmp_path, case):
    dpath, spath, xyz = _case(tmp_path)
    args = {"--density": str(dpath), "--seg": str(spath), "-o": str(tmp_path / "out")}
    if case == "missing":
        args["--seg"] = str(tmp_path / "nope.nii.gz")
    elif case == "grid":
        other = save_volume(np.zeros((32, 32, 23), np.uint8), AFFINE, tmp_path / "other.nii.gz", dtype=np.uint8)
        args["--seg"] = str(other)
    elif case == "affine":
        shifted = AFFINE.copy()
        shifted[0, 3] += 2.0
        other = save_volume(np.asarray(nib.load(spath).dataobj), shifted, tmp_path / "other.nii.gz", dtype=np.uint8)
        args["--recurrence"] = str(other)
    elif case == "margin":
        args["--margin-mm"] = "0"
    elif case == "density":
        bad = np.full(xyz.shape[:3], 1.5, np.float32)
        args["--density"] = str(save_volume(bad, AFFINE, tmp_path / "bad_density.nii.gz"))
    elif case == "empty":
        empty = np.zeros(xyz.shape[:3], np.uint8)
        args["--seg"] = str(save_volume(empty, AFFINE, tmp_path / "e.nii.gz", dtype=np.uint8))
    elif case == "out_file":
        (tmp_path / "out").write_text("x")
    elif case == "not3d":
        args["--density"] = str(save_volume(np.zeros((4, 4, 4, 2), np.float32), AFFINE, tmp_path / "4d.nii.gz"))
    elif case == "labels":
        args["--labels"] = "masks"
    return args


@pytest.mark.parametrize(
    "case, word",
    [
        ("missing", "nope.nii.gz"),
        ("grid", "other.nii.gz"),
        ("affine", "other.nii.gz"),
        ("margin", "margin"),
        ("density", "bad_density.nii.gz"),
        ("empty", "e.nii.gz"),
        ("out_file", "out"),
        ("not3d", "4d.nii.gz"),
        ("labels", "--labels"),
    ],
)
def test_cli_plan_bad_input_exits_2_with_one_line(tmp_path, case, word):
    args = _bad(tmp_path, case)
    res = runner.invoke(_app(), ["plan", *[x for kv in args.items() for x in kv]])
    assert res.exit_code == 2, res.output
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gliofit: error:") and word in err[0]
    assert "Traceback" not in res.output
    if case != "out_file":
        assert not (tmp_path / "out").exists()  # nothing written on bad input


def _reference_plan(density, core, allowed, margin_mm, spacing):
    """The definition, on the whole grid: a full distance transform, every tied voxel sorted."""
    dist = ndimage.distance_transform_edt(~core, sampling=spacing)
    standard = (dist <= margin_mm + 1e-9) & allowed
    model = core.copy()
    k = int(standard.sum()) - int(core.sum())
    idx = np.flatnonzero(allowed & ~model)
    d = density.reshape(-1)[idx]
    if 0 < k < idx.size:
        kth = np.partition(d, idx.size - k)[idx.size - k]
        above, tied = idx[d > kth], idx[d == kth]
        idx = np.concatenate([above, tied[np.argsort(dist.reshape(-1)[tied], kind="stable")[: k - above.size]]])
    if k > 0:
        model.reshape(-1)[idx] = True
    return standard, model


@pytest.mark.parametrize("case", ["positive", "zero_ties_near", "ties_beyond_margin", "density_plateau"])
def test_targets_equal_the_whole_grid_definition(case):
    """The box-limited distance and the restricted tie search give the targets of the definition exactly:
    a density positive well beyond the margin, one that ends inside it (ties of density 0 near the core),
    one whose tied value lies beyond the margin (the whole-grid distance decides), a plateau of equal values."""
    rng = np.random.default_rng(7)
    shape, spacing = (70, 64, 40), np.array([1.0, 1.2, 2.0])
    aff = np.diag([*spacing, 1.0])
    r = np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(np.indices(shape), (30, 32, 20), spacing)))
    core = r < 7
    brain = rng.uniform(size=shape) > 0.1
    density = {
        "positive": np.exp(-np.maximum(r - 7, 0) / 15),
        "zero_ties_near": np.where(r < 12, np.exp(-np.maximum(r - 7, 0) / 4), 0.0),
        "ties_beyond_margin": np.where((r > 7) & (r < 17), 0.1, 0.0) + np.where(np.abs(r - 26) < 3, 0.3, 0.0),
        "density_plateau": np.where(r < 30, 0.5, 0.0) + core * 0.5,
    }[case]
    plan = make_plan(density, core, aff, brain=brain, margin_mm=10.0)
    standard, model = _reference_plan(np.clip(density, 0, 1), core, brain | core, 10.0, spacing)
    assert np.array_equal(plan.standard, standard)
    assert np.array_equal(plan.model, model)
    assert plan.model.sum() == plan.standard.sum()
