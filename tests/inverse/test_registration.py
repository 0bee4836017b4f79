"""Patient-space input: a T1 moved by a known affine is registered back to the atlas (SimpleITK)."""

from __future__ import annotations

import numpy as np
import pytest

from gliofit.common.grids import resample_linear, voxel_to_world
from gliofit.common.nifti import save_volume
from gliofit.inverse.observation import observe
from gliofit.simulations_db.dice import dice


def _rotation_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


@pytest.fixture(scope="module")
def patient(tmp_path_factory, atlas1):
    """A 2 mm patient grid stored LPS-style (x and y flipped, so not atlas space) whose world is the
    atlas's moved by a rotation of 6 degrees about z and a shift of (5, -4, 3) mm; a tumour sphere."""
    out = tmp_path_factory.mktemp("patient")
    move = np.eye(4)  # patient world -> atlas world
    move[:3, :3] = _rotation_z(6.0)
    move[:3, 3] = [5.0, -4.0, 3.0]
    shape = (96, 116, 94)
    affine = np.diag([-2.0, -2.0, 2.0, 1.0])
    affine[:3, 3] = [95.0, 115.0, -72.0]
    t1 = resample_linear(atlas1.t1, atlas1.affine, move @ affine, shape)
    centre_atlas = np.array([-28.0, -12.0, 22.0])
    centre_patient = np.linalg.solve(move[:3, :3], centre_atlas - move[:3, 3])
    world = voxel_to_world(affine, np.indices(shape).transpose(1, 2, 3, 0))
    r = np.linalg.norm(world - centre_patient, axis=-1)
    lab = np.where(r <= 18.0, 2, 0).astype(np.uint8)
    lab[r <= 10.0] = 3
    t1 = np.where(r <= 18.0, 0.5 * t1, t1)  # the tumour looks different: masked out of the metric
    seg = save_volume(lab, affine, out / "seg.nii.gz", dtype=np.uint8)
    t1p = save_volume(t1, affine, out / "t1.nii.gz")
    idx = np.indices(atlas1.shape).transpose(1, 2, 3, 0)
    truth_r = np.linalg.norm(voxel_to_world(atlas1.affine, idx) - centre_atlas, axis=-1)
    return seg, t1p, truth_r <= 18.0, lab


def test_registration_puts_the_tumour_where_it_is_in_the_atlas(patient, small_db, atlas1):
    seg, t1, truth_wt_atlas, lab = patient
    obs = observe(seg, grid=small_db.grid, atlas=atlas1, t1=t1)
    assert obs.space == "patient" and obs.timings_s["registration"] > 0
    assert dice(obs.wt_atlas, truth_wt_atlas) > 0.9
    back = obs.to_input_grid(obs.wt_atlas.astype(np.float32), atlas1) >= 0.5
    assert back.shape == lab.shape and dice(back, lab > 0) > 0.9


@pytest.mark.slow
def test_cli_patient_space_writes_the_density_on_the_patient_grid(patient, small_db_path, tmp_path):
    import json

    import nibabel as nib
    from typer.testing import CliRunner

    from gliofit.cli import app

    seg, t1, _, lab = patient
    out = tmp_path / "OUT"
    r = CliRunner().invoke(
        app, ["infer", "--db", str(small_db_path), "--seg", str(seg), "--t1", str(t1), "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    d = json.loads((out / "result.json").read_text())
    assert d["space"] == "patient" and d["timings_s"]["registration"] > 0
    img, seg_img = nib.load(out / "tumor_density.nii.gz"), nib.load(seg)
    assert img.shape == lab.shape and np.allclose(img.affine, seg_img.affine)
    dens = np.asarray(img.dataobj)
    assert dens.max() > 0.5 and dens[lab > 0].mean() > dens[lab == 0].mean()
