"""Phantoms: layout, labels re-derived from the recorded truth, contrasts, seeding, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from gliofit.cli import app
from gliofit.segmentation.brats_convert import LAYOUTS, MODALITIES
from gliofit.segmentation.phantoms import PhantomTruth, density_to_labels, make_phantoms
from gliofit.growth.atlas import load_atlas, resample_atlas
from gliofit.growth.solver import simulate_one


@pytest.fixture(scope="module")
def grid4():
    return resample_atlas(load_atlas(), 4.0)


@pytest.fixture(scope="module")
def cases(grid4, tmp_path_factory):
    out = tmp_path_factory.mktemp("ph")
    return make_phantoms(out, 2, seed=3, atlas=grid4)


def _load(case: Path, layout: str = "brats2023"):
    names = LAYOUTS[layout]
    imgs = {m: nib.load(case / f"{case.name}{names[m]}.nii.gz") for m in MODALITIES}
    seg = nib.load(case / f"{case.name}{names['seg']}.nii.gz")
    return {m: np.asarray(i.dataobj) for m, i in imgs.items()}, np.asarray(seg.dataobj), seg.affine


def test_layout_and_grid(cases, grid4):
    for case in cases:
        names = sorted(p.name for p in case.iterdir())
        assert names == sorted([f"{case.name}{s}.nii.gz" for s in LAYOUTS["brats2023"].values()] + ["truth.json"])
        imgs, seg, affine = _load(case)
        np.testing.assert_allclose(affine, grid4.affine, atol=1e-5)
        assert seg.shape == grid4.shape and all(v.shape == grid4.shape for v in imgs.values())
        assert set(np.unique(seg)) <= {0, 1, 2, 3} and (seg > 0).sum() > 50


def test_labels_follow_recorded_truth(cases, grid4):
    """Re-simulating from truth.json reproduces the label map (thresholds 0.25 / 0.675 / 0.95)."""
    case = cases[0]
    t = json.loads((case / "truth.json").read_text())
    truth = PhantomTruth(**{k: t[k] for k in PhantomTruth.__dataclass_fields__})
    u = simulate_one(grid4, t["D_mm2_per_day"], t["rho_per_day"], t["origin_mm"], t["T_days"])
    _, seg, _ = _load(case)
    expected = np.zeros(u.shape, np.uint8)
    expected[u >= 0.25], expected[u >= 0.675], expected[u >= 0.95] = 2, 3, 1
    np.testing.assert_array_equal(seg, expected)
    np.testing.assert_array_equal(density_to_labels(u, truth), expected)
    assert t["voxels_whole_tumor"] == int((expected > 0).sum())
    assert t["mu_D_mm"] == pytest.approx(np.sqrt(t["D_mm2_per_day"] * t["T_days"]))


def test_contrasts(cases, grid4):
    imgs, seg, _ = _load(cases[1])
    healthy = seg == 0
    wm = healthy & (grid4.wm > 0.8)
    gm = healthy & (grid4.gm > 0.7)
    csf = healthy & (grid4.csf > 0.8)
    mean = {
        m: {
            k: float(v[mask].mean())
            for k, mask in (("wm", wm), ("gm", gm), ("csf", csf), ("ed", seg == 2), ("et", seg == 3), ("nc", seg == 1))
        }
        for m, v in imgs.items()
    }
    assert mean["t1"]["wm"] > mean["t1"]["gm"] > mean["t1"]["csf"]
    assert mean["t2"]["csf"] > mean["t2"]["gm"] > mean["t2"]["wm"]
    assert mean["flair"]["csf"] < mean["flair"]["wm"] < mean["flair"]["ed"]
    assert mean["t2"]["ed"] > mean["t2"]["wm"]
    assert mean["t1c"]["et"] > 1.3 * mean["t1c"]["wm"]
    if (seg == 1).any():
        assert mean["t1c"]["nc"] < 0.5 * mean["t1c"]["et"]
    outside = (grid4.gm + grid4.wm + grid4.csf) < 0.1
    assert all(float(np.abs(v[outside]).max()) == 0.0 for v in imgs.values())


def test_seeded_and_2021_layout(cases, grid4, tmp_path):
    again = make_phantoms(tmp_path, 1, seed=3, atlas=grid4, layout="brats2021")[0]
    imgs21, seg21, _ = _load(again, "brats2021")
    imgs23, seg23, _ = _load(cases[0])
    np.testing.assert_array_equal(imgs21["t1c"], imgs23["t1c"])
    assert set(np.unique(seg21)) <= {0, 1, 2, 4}
    np.testing.assert_array_equal(seg21 == 4, seg23 == 3)
    other = make_phantoms(tmp_path / "o", 1, seed=4, atlas=grid4)[0]
    assert (
        json.loads((other / "truth.json").read_text())["D_mm2_per_day"]
        != json.loads((cases[0] / "truth.json").read_text())["D_mm2_per_day"]
    )


def test_cli_phantom_and_bad_input(tmp_path):
    r = CliRunner().invoke(
        app,
        ["phantom", str(tmp_path / "p"), "--cases", "1", "--resolution", "4", "--layout", "brats2021", "--seed", "7"],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p" / "Phantom-7-00000" / "Phantom-7-00000_flair.nii.gz").is_file()
    assert not list((tmp_path / "p").glob(".*"))  # no half-written temp folder left
    exe = str(Path(sys.executable).with_name("gliofit"))
    bad = subprocess.run(
        [exe, "phantom", str(tmp_path / "q"), "--cases", "1", "--layout", "brats2019"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "--layout" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
