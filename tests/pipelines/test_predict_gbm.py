"""``gliofit predict-gbm``: a tumour grown in a patient's own tissue maps is fitted back on the input grid."""

from __future__ import annotations

import json

import numpy as np

from dicomhelpers import dice, gliofit

from gliofit.common.nifti import load_volume, save_volume
from gliofit.growth.atlas import Atlas
from gliofit.growth.solver import simulate_one

SHAPE, SPACING = (34, 38, 32), 2.0
TRUTH = {"D_mm2_per_day": 0.1, "rho_per_day": 0.03, "T_days": 365.0}


def _patient(root, x: str = "007"):
    """A spherical 'brain' (WM core, GM shell, CSF outside) with a tumour grown by the solver."""
    affine = np.diag([SPACING] * 3 + [1.0])
    affine[:3, 3] = -SPACING * (np.asarray(SHAPE) - 1) / 2
    r = np.linalg.norm((np.indices(SHAPE).T - (np.asarray(SHAPE) - 1) / 2).T * SPACING, axis=0)
    wm = (r < 24).astype(np.float32)
    gm = ((r >= 24) & (r < 30)).astype(np.float32)
    csf = (1.0 - gm - wm).astype(np.float32)
    atlas = Atlas("sphere", gm, wm, csf, affine)
    u = simulate_one(atlas, TRUTH["D_mm2_per_day"], TRUTH["rho_per_day"], [6.0, -4.0, 2.0], TRUTH["T_days"])
    lab = np.zeros(SHAPE, np.uint8)
    lab[u >= 0.25], lab[u >= 0.675], lab[u >= 0.95] = 2, 3, 1
    folder = root / f"Patient-{x}"
    folder.mkdir(parents=True)
    for name, v in (("gm", gm), ("wm", np.where(lab > 0, 0.0, wm)), ("csf", csf)):  # tumour: no tissue
        save_volume(v, affine, folder / f"{x}-{name}.nii.gz")
    save_volume(lab, affine, folder / f"{x}-tumorseg.nii.gz", dtype=np.uint8)
    return folder, lab, affine


def test_predict_gbm_writes_the_density_on_the_input_grid_and_fits(tmp_path) -> None:
    folder, lab, affine = _patient(tmp_path / "IN")
    proc = gliofit(
        "predict-gbm", tmp_path / "IN", tmp_path / "OUT", "--resolution-mm", "2", "--budget", "24", "--no-progress"
    )
    assert proc.returncode == 0, proc.stderr
    dens, aff = load_volume(tmp_path / "OUT" / "007.nii.gz")
    assert dens.shape == lab.shape and np.allclose(aff, affine)
    assert 0.0 <= dens.min() and dens.max() <= 1.0
    assert dice(dens >= 0.25, lab > 0) >= 0.8
    assert dice(dens >= 0.675, np.isin(lab, (1, 3))) >= 0.7
    fit = json.loads((tmp_path / "OUT" / "007.json").read_text())
    truth_length = np.sqrt(TRUTH["D_mm2_per_day"] / TRUTH["rho_per_day"])
    assert 0.5 < np.sqrt(fit["D_mm2_per_day"] / fit["rho_per_day"]) / truth_length < 2.0
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["patient"] == "007"


def test_predict_gbm_refuses_bad_input(tmp_path) -> None:
    folder, lab, affine = _patient(tmp_path / "IN")
    (folder / "007-wm.nii.gz").unlink()
    proc = gliofit("predict-gbm", tmp_path / "IN", tmp_path / "OUT", "--no-progress")
    assert proc.returncode == 2 and "007-wm.nii.gz: missing wm" in proc.stderr, proc.stderr
    folder2, _, _ = _patient(tmp_path / "IN2", "008")
    save_volume(np.where(lab > 0, 4, 0).astype(np.uint8), affine, folder2 / "008-tumorseg.nii.gz", dtype=np.uint8)
    proc = gliofit("predict-gbm", tmp_path / "IN2", tmp_path / "OUT2", "--no-progress")
    assert proc.returncode == 2 and "found 4" in proc.stderr, proc.stderr
    assert not (tmp_path / "OUT2" / "008.nii.gz").exists()
    proc = gliofit("predict-gbm", tmp_path / "nothing", tmp_path / "OUT3", "--no-progress")
    assert proc.returncode == 2 and "input folder not found" in proc.stderr
