"""``gliofit preprocess``: RAS, N4, co-registration against a known motion, brain mask against the phantom's brain."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from dicomhelpers import PREPROCESS_MM, dice, gliofit

from gliofit.common.grids import resample_linear, voxel_to_world
from gliofit.common.nifti import load_volume
from gliofit.pipelines.preprocess import head_mask, n4, rigid_to


@pytest.mark.slow  # the preprocessed_patient fixture: N4 and co-registration of a study
def test_preprocess_writes_a_brats_2023_folder_on_one_ras_grid(preprocessed_patient) -> None:
    out = preprocessed_patient
    rec = json.loads((out / "preprocess.json").read_text())
    steps = [s["step"] for s in rec["steps"]]
    assert steps.count("reorient") == 4 and steps.count("n4") == 4 and steps.count("register") == 3
    assert {"resample", "brain_mask"} <= set(steps)
    assert rec["import_record"].endswith("import.json")
    grid = np.asarray(rec["output_grid"]["affine"])
    for suffix in ("t1n", "t1c", "t2w", "t2f"):
        img = nib.load(out / f"P001-{suffix}.nii.gz")
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert np.allclose(img.affine, grid, atol=1e-5)
        assert np.allclose(nib.affines.voxel_sizes(img.affine), PREPROCESS_MM)
    for s in rec["steps"]:
        if "file" in s:
            assert (out / s["file"]).is_file()


@pytest.mark.slow  # the preprocessed_patient fixture: N4 and co-registration of a study
def test_coregistration_recovers_the_known_motion(preprocessed_patient, dicom_study) -> None:
    """Mean displacement error over the phantom brain below 1 mm for T1, T2 and FLAIR."""
    rec = json.loads((preprocessed_patient / "preprocess.json").read_text())
    brain, affine = dicom_study.brain
    pts = voxel_to_world(affine, np.argwhere(brain).astype(float))
    pts = np.c_[pts, np.ones(len(pts))]
    for s in (s for s in rec["steps"] if s["step"] == "register"):
        est = np.asarray(s["matrix_ras"])  # T1c world -> modality world
        truth = np.linalg.inv(dicom_study.motion[s["modality"]])
        err = np.linalg.norm((pts @ est.T - pts @ truth.T)[:, :3], axis=1)
        moved = np.linalg.norm((pts @ truth.T - pts)[:, :3], axis=1)
        assert moved.mean() > 2.0  # there was a motion to find
        assert err.mean() < 1.0, (s["modality"], err.mean(), est.round(3).tolist(), truth.round(3).tolist())


@pytest.mark.slow  # the preprocessed_patient fixture: N4 and co-registration of a study
def test_brain_mask_matches_the_phantom_brain_and_world_coordinates_hold(preprocessed_patient, dicom_study) -> None:
    mask, grid = load_volume(preprocessed_patient / "brain_mask.nii.gz")
    brain, affine = dicom_study.brain
    truth = resample_linear(brain.astype(np.float32), affine, grid, mask.shape) >= 0.5
    assert dice(mask > 0, truth) >= 0.95
    centre = voxel_to_world(grid, np.argwhere(mask > 0).mean(axis=0))
    centre_truth = voxel_to_world(grid, np.argwhere(truth).mean(axis=0))
    assert np.linalg.norm(centre - centre_truth) < 0.5
    t1c, _ = load_volume(preprocessed_patient / "P001-t1c.nii.gz")
    assert (t1c[mask == 0] == 0).all() and (t1c[mask > 0] > 0).mean() > 0.95


def test_n4_flattens_a_known_bias_field() -> None:
    rng = np.random.default_rng(0)
    shape = (48, 48, 40)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    ball = np.linalg.norm(np.indices(shape) - np.array(shape)[:, None, None, None] / 2, axis=0) < 18
    x = np.linspace(-1, 1, shape[0])[:, None, None]
    bias = np.exp(0.3 * x + 0.2 * x**2) * np.ones(shape)
    img = np.where(ball, 500.0 * bias * (1 + 0.02 * rng.normal(size=shape)), 0.0).astype(np.float32)
    out = n4(img, affine, head_mask(img))
    cv = lambda a: float(a[ball].std() / a[ball].mean())  # noqa: E731
    assert cv(out) < 0.5 * cv(img)


def test_preprocess_refuses_bad_folders(tmp_path, imported_patient) -> None:
    proc = gliofit("preprocess", tmp_path / "nope", "-o", tmp_path / "o", "--no-progress")
    assert proc.returncode == 2 and "patient folder not found" in proc.stderr
    bad = tmp_path / "P002"
    bad.mkdir()
    for f in imported_patient.glob("P001-t1*.nii.gz"):
        (bad / f.name.replace("P001", "P002")).write_bytes(f.read_bytes())
    proc = gliofit("preprocess", bad, "-o", tmp_path / "o", "--no-progress")
    assert proc.returncode == 2 and "missing t2" in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


def test_rigid_registration_is_seeded_and_finds_a_small_shift(tmp_path) -> None:
    """Two runs on the same pair give the same matrix (the seed reaches ANTs; one ITK thread), and the
    shift between the two images is found within 0.5 mm."""
    rng = np.random.default_rng(3)
    shape = (40, 40, 36)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    texture = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    ball = np.linalg.norm(np.indices(shape) - np.array(shape)[:, None, None, None] / 2, axis=0) < 15
    fixed = np.where(ball, 400.0 + 4000.0 * texture, 0.0).astype(np.float32)
    moved = affine.copy()
    moved[:3, 3] = [2.0, -3.0, 1.5]  # the same voxels 3.9 mm elsewhere in the world
    first = rigid_to((fixed, affine), (fixed, moved), tmp_path / "a.mat")
    again = rigid_to((fixed, affine), (fixed, moved), tmp_path / "b.mat")
    assert first["matrix_ras"] == again["matrix_ras"]
    truth = moved @ np.linalg.inv(affine)  # fixed world -> moving world
    assert np.abs(np.asarray(first["matrix_ras"]) - truth)[:3, 3].max() < 0.5
