"""Synthetic patients: noise statistics against analytic shapes, labels, truth.json, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gliofit.common.errors import InputError
from gliofit.common.labels import detect_convention, tumour_masks
from gliofit.inverse.synthetic import (
    REFERENCE_RANGES,
    grow_patient,
    masks_to_labels,
    read_patient,
    sample_parameters,
    segmentation_noise,
)
from gliofit.growth.atlas import load_atlas, resample_atlas
from gliofit.simulations_db.dice import dice

AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def _sphere_density(shape=(64, 64, 64), radius=15.0) -> np.ndarray:
    """A radial ramp: u >= 0.25 is a ball of ``radius`` voxels, u >= 0.675 one of ``radius - 8.5``."""
    c = (np.asarray(shape) - 1) / 2
    r = np.sqrt(((np.indices(shape) - c[:, None, None, None]) ** 2).sum(axis=0))
    return np.clip(1.0 - (r - (radius - 15.0)) / 20.0, 0.0, 1.0).astype(np.float32)


def test_no_noise_gives_the_thresholded_density():
    u = _sphere_density()
    wt, core, _ = segmentation_noise(
        u, AFFINE, np.random.default_rng(0), jitter_voxels=(0, 0), shift_mm=0, rotation_deg=0
    )
    assert np.array_equal(wt, u >= 0.25) and np.array_equal(core, u >= 0.675)


def test_shift_moves_the_masks_by_the_recorded_vector():
    u = _sphere_density()
    wt, _, noise = segmentation_noise(
        u, AFFINE, np.random.default_rng(3), jitter_voxels=(0, 0), shift_mm=2.0, rotation_deg=0
    )
    moved = np.argwhere(wt).mean(axis=0) - np.argwhere(u >= 0.25).mean(axis=0)
    assert 0 < np.linalg.norm(noise["shift_mm"]) <= 2.0
    np.testing.assert_allclose(moved, noise["shift_mm"], atol=0.15)


def test_rotation_about_the_centre_keeps_a_centred_ball():
    u = _sphere_density()
    centre = (np.asarray(u.shape) - 1) / 2
    wt, _, noise = segmentation_noise(
        u, AFFINE, np.random.default_rng(4), jitter_voxels=(0, 0), shift_mm=0, rotation_deg=2.0, centre_mm=centre
    )
    assert 0 < noise["rotation_deg"] <= 2.0
    assert dice(wt, u >= 0.25) > 0.995


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boundary_jitter_dice_in_the_expected_band(seed):
    """A ball of radius R with boundary moved by a field of RMS a: Dice ~ 1 - 1.5 E|d| / R.

    For R = 15 and a in [1, 2] (E|d| ~ 0.8 a) the clean-vs-noisy Dice lies near 0.88-0.94.
    """
    u = _sphere_density()
    wt, core, noise = segmentation_noise(u, AFFINE, np.random.default_rng(seed), shift_mm=0, rotation_deg=0)
    a = noise["jitter_rms_voxels"]["whole_tumor"]
    assert 1.0 <= a <= 2.0
    d = dice(wt, u >= 0.25)
    expected = 1 - 1.5 * 0.8 * a / 15.0
    assert 0.82 < d < 0.97 and abs(d - expected) < 0.05, (d, expected)
    assert not np.array_equal(wt, u >= 0.25)
    assert not (core & ~wt).any()


def test_full_noise_and_determinism():
    u = _sphere_density()
    a = segmentation_noise(u, AFFINE, np.random.default_rng(7))
    b = segmentation_noise(u, AFFINE, np.random.default_rng(7))
    c = segmentation_noise(u, AFFINE, np.random.default_rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])
    assert 0.8 < dice(a[0], u >= 0.25) < 0.98


def test_empty_tumour_is_an_input_error():
    with pytest.raises(InputError, match="no voxel above the edema threshold"):
        segmentation_noise(np.zeros((8, 8, 8), np.float32), AFFINE, np.random.default_rng(0))


def test_labels_rim_and_inside():
    u = _sphere_density()
    wt, core = u >= 0.25, u >= 0.675
    lab = masks_to_labels(wt, core, rim_voxels=2.0)
    assert set(np.unique(lab)) == {0, 1, 2, 3}
    masks = tumour_masks(lab, detect_convention(lab))
    assert np.array_equal(masks["whole_tumor"], wt) and np.array_equal(masks["core"], core)
    netc = lab == 1
    # NETC lies strictly inside: every NETC voxel has all 6 neighbours in the core
    assert np.all(core[1:][netc[:-1]]) and np.all(core[:-1][netc[1:]])
    thin = masks_to_labels(wt, core, rim_voxels=50.0)
    assert set(np.unique(thin)) == {0, 2, 3}


@pytest.fixture(scope="module")
def atlas3():
    """The atlas at 3 mm stands in for the 1 mm patient grid (fast tests)."""
    return resample_atlas(load_atlas(), 3.0)


@pytest.fixture(scope="module")
def grid6(atlas3):
    return resample_atlas(atlas3, 6.0)


def test_sample_parameters_in_reference_ranges_and_deterministic(grid6):
    a = sample_parameters(np.random.default_rng(11), grid6)
    b = sample_parameters(np.random.default_rng(11), grid6)
    assert a == b
    for key, (lo, hi) in REFERENCE_RANGES.items():
        assert lo <= a[key] <= hi
    assert grid6.tissue_at(a["origin_mm"]) >= 0.1
    assert 3.0 <= a["check_whole_tumor_cm3"] <= 250.0 and a["check_core_cm3"] >= 0.5


def test_grow_patient_writes_truth_and_seg(atlas3, grid6, tmp_path):
    params = sample_parameters(np.random.default_rng(5), grid6)
    p1 = grow_patient(atlas3, params, rng=np.random.default_rng(5), resolution_mm=6.0, sim_grid=grid6)
    p2 = grow_patient(atlas3, params, rng=np.random.default_rng(5), resolution_mm=6.0, sim_grid=grid6)
    assert np.array_equal(p1.labels, p2.labels) and p1.truth == p2.truth
    assert p1.labels.shape == atlas3.shape and set(np.unique(p1.labels)) <= {0, 1, 2, 3}
    assert p1.truth["whole_tumor_cm3"] > 1.0 and p1.truth["core_cm3"] > 0
    wt, core = p1.clean_masks()
    assert 0.6 < dice(wt, p1.whole_tumor) < 0.99
    out = p1.write(tmp_path / "case")
    truth = json.loads((out / "truth.json").read_text())
    for key in (
        "D_mm2_per_day",
        "rho_per_day",
        "T_days",
        "origin_mm",
        "mu_D_mm",
        "mu_rho",
        "infiltration_length_mm",
        "velocity_mm_per_day",
        "threshold_edema",
        "threshold_core",
        "noise",
    ):
        assert key in truth
    assert truth["mu_D_mm"] == pytest.approx(np.sqrt(params["D_mm2_per_day"] * params["T_days"]))
    back = read_patient(out)
    assert np.array_equal(back.labels, p1.labels) and back.truth == truth
    np.testing.assert_allclose(back.affine, atlas3.affine)
    assert not list(out.glob(".*part*"))
