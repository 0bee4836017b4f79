"""The reported density reaches as far as a plan: analytic checks in a box, and a synthetic patient's plan."""

from __future__ import annotations

import numpy as np
import pytest

from gliofit.common.units import seed_record
from gliofit.growth.atlas import resample_atlas, to_atlas_grid
from gliofit.growth.solver import simulate_one
from gliofit.inverse.density import simulated_density
from gliofit.inverse.synthetic import grow_patient, onset_days
from gliofit.pipelines.planning import make_plan


def test_pure_diffusion_in_a_box_is_the_analytic_gaussian_out_to_the_walls(make_box_atlas):
    # rho = 0: the seed of mass M spreads as a Gaussian of variance sigma^2 + 2 D t (+ 1/12 voxel^2 from the
    # voxel-averaged seed) per axis
    box = make_box_atlas((61, 61, 61), 1.0)
    D, T = 0.2, 200.0
    u = simulated_density(
        {"D_mm2_per_day": D, "rho_per_day": 0.0, "T_days": T, "origin_mm": [0.0, 0.0, 0.0]}, box, box
    ).astype(np.float64)
    s2 = seed_record()["sigma_mm"] ** 2 + 2 * D * T + 1 / 12
    r2 = sum(c**2 for c in np.meshgrid(*[np.arange(61) - 30.0] * 3, indexing="ij", sparse=True))
    exact = seed_record()["mass_mm3"] * np.exp(-0.5 * r2 / s2) / (2 * np.pi * s2) ** 1.5
    near = r2 <= 2.5**2 * s2  # where the walls' reflections are negligible
    assert np.all(np.abs(u[near] / exact[near] - 1) < 0.02)
    assert np.all(np.diff(u[30:, 30, 30]) < 0)
    assert u.min() > 0  # positive up to the box's walls and corners


def test_growth_in_a_box_decreases_monotonically_away_from_the_origin(make_box_atlas):
    box = make_box_atlas((61, 61, 61), 1.0)
    u = simulated_density(
        {"D_mm2_per_day": 0.05, "rho_per_day": 0.1, "T_days": 150.0, "origin_mm": [0.0, 0.0, 0.0]}, box, box
    ).astype(np.float64)
    assert u.min() > 0 and u.max() > 0.9
    c = 30
    for axis in range(3):  # every line parallel to an axis falls away from the mid-plane
        d = np.diff(np.moveaxis(u, axis, 0), axis=0)
        assert np.all(d[c:] <= 1e-7) and np.all(d[:c] >= -1e-7)
        ray = np.moveaxis(u, axis, 0)[c:, c, c]
        assert np.all(np.diff(ray) < 0)  # strictly along the rays from the origin
    # a density cropped where the stored uint8 ends would be zero in most of the box
    assert (u < 0.5 / 255).sum() > 0.5 * u.size


@pytest.fixture(scope="module")
def patient_and_density(atlas1):
    patient_grid, db_grid = resample_atlas(atlas1, 2.0), resample_atlas(atlas1, 4.0)  # small and fast
    D, rho = 0.05, 0.1
    params = {
        "D_mm2_per_day": D,
        "rho_per_day": rho,
        "T_days": onset_days(D, rho) + 120.0,
        "origin_mm": [20.0, -10.0, 20.0],
    }
    patient = grow_patient(
        patient_grid,
        params,
        rng=np.random.default_rng(3),
        sim_grid=db_grid,
        jitter_voxels=(0.0, 0.0),
        shift_mm=0.0,
        rotation_deg=0.0,
    )
    return patient_grid, db_grid, params, patient, simulated_density(params, db_grid, patient_grid)


def test_the_model_plan_of_a_synthetic_patient_uses_no_zero_density_voxel(patient_and_density):
    atlas, grid, params, patient, density = patient_and_density
    assert patient.core.any()
    plan = make_plan(
        density, patient.core, atlas.affine, brain=atlas.domain, margin_mm=15.0, whole_tumor=patient.whole_tumor
    )
    assert plan.summary["zero_density_voxels"] == 0 and plan.threshold > 0
    assert not any("density is 0" in w for w in plan.summary["warnings"])
    reachable = atlas.domain & plan.standard
    assert np.all(density[reachable] > 0)  # positive in all tissue of the plan volume

    # the same estimate as the database stores it (active box, cropped at half a uint8 step) falls short
    u = simulate_one(grid, params["D_mm2_per_day"], params["rho_per_day"], params["origin_mm"], params["T_days"])
    stored = np.clip(to_atlas_grid(np.where(u >= 0.5 / 255, u, 0.0), grid, atlas), 0, 1)
    short = make_plan(
        stored, patient.core, atlas.affine, brain=atlas.domain, margin_mm=15.0, whole_tumor=patient.whole_tumor
    )
    assert short.summary["zero_density_voxels"] > 0
    assert any("density is 0" in w for w in short.summary["warnings"])
