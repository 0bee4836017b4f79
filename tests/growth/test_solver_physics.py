"""The solver against analytic results: conservation, front speed, diffusion variance, symmetry."""

from __future__ import annotations

import numpy as np
import pytest

from gliofit.growth.atlas import Atlas
from gliofit.growth.solver import SolverConfig, simulate
from gliofit.growth.stencil import seed_density

METHODS = {
    "euler": SolverConfig(method="euler"),
    "rkl2": SolverConfig(),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_closed_box_conserves_mass_and_never_enters_csf(make_box_atlas, method):
    # a heterogeneous closed region: WM/GM mixture with a CSF shell and a CSF wall inside
    atlas = make_box_atlas((30, 26, 24), 2.0, pad=2, gm_fraction=0.3)
    gm, wm, csf = atlas.gm.copy(), atlas.wm.copy(), atlas.csf.copy()
    gm[15, 6:20, :] = wm[15, 6:20, :] = 0.0
    csf[15, 6:20, :] = 1.0
    atlas = Atlas("walled", gm, wm, csf, atlas.affine)
    origin = [-8.0, 2.0, 0.0]
    seed = seed_density(atlas, origin, 1.5, 1.0).numpy() * atlas.domain
    u = simulate(atlas, [1.0], [0.0], [origin], [20.0, 300.0, 2000.0], config=METHODS[method])[0]
    mass0 = seed.sum(dtype=np.float64)
    for snap in u:
        assert abs(snap.sum(dtype=np.float64) - mass0) / mass0 < 1e-5
        assert np.all(snap[~atlas.domain] == 0.0)
    assert u[-1].max() < 0.5 * seed.max()  # it did spread


@pytest.mark.parametrize(
    "method,config",
    [
        ("euler", SolverConfig(method="euler", dt_days=0.05)),
        ("rkl2", SolverConfig()),
    ],
)
def test_front_speed_in_homogeneous_medium(make_box_atlas, method, config):
    D, rho, h = 0.5, 0.1, 0.5
    atlas = make_box_atlas((640, 3, 3), h, centred=False)
    x0 = 4.0
    t1, t2 = 300.0, 500.0
    u = simulate(atlas, [D], [rho], [[x0, h, h]], [t1, t2], config=config)[0][:, :, 1, 1]

    def front(profile: np.ndarray) -> float:
        i = int(np.nonzero(profile >= 0.5)[0].max())  # last voxel above one half
        return h * (i + (profile[i] - 0.5) / (profile[i] - profile[i + 1]))

    speed = (front(u[1]) - front(u[0])) / (t2 - t1)
    # Bramson's log correction: x(t) = v t - 3/2 sqrt(D/rho) ln t for a pulled front
    bramson = 1.5 * np.sqrt(D / rho) * np.log(t2 / t1) / (t2 - t1)
    v = 2.0 * np.sqrt(D * rho)
    assert abs(speed - v) / v < 0.05
    assert abs(speed + bramson - v) / v < 0.02


@pytest.mark.parametrize(
    "method", [pytest.param(m, marks=pytest.mark.slow) if m == "euler" else m for m in sorted(METHODS)]
)
def test_point_diffusion_variance_grows_2Dt_per_axis(make_box_atlas, method):
    D, h = 0.8, 1.0
    atlas = make_box_atlas((71, 71, 71), h)
    t1, t2 = 5.0, 40.0
    u = simulate(atlas, [D], [0.0], [[0.0, 0.0, 0.0]], [t1, t2], config=METHODS[method])[0]
    coords = np.arange(71) * h - 35.0 * h

    def variances(snap: np.ndarray) -> np.ndarray:
        m = snap.sum(dtype=np.float64)
        out = []
        for axis in range(3):
            marg = snap.sum(axis=tuple(a for a in range(3) if a != axis), dtype=np.float64) / m
            mean = (marg * coords).sum()
            out.append((marg * (coords - mean) ** 2).sum())
        return np.asarray(out)

    growth = variances(u[1]) - variances(u[0])
    np.testing.assert_allclose(growth, 2.0 * D * (t2 - t1), rtol=0.02)


def test_mirror_symmetric_atlas_gives_mirror_solution(make_box_atlas):
    base = make_box_atlas((40, 36, 32), 2.0, pad=2)
    rng = np.random.default_rng(3)
    gm = rng.uniform(0, 0.6, base.shape).astype(np.float32) * (base.wm > 0)
    gm = 0.5 * (gm + gm[::-1])  # symmetric under x -> -x
    wm = (base.wm - gm).clip(0, 1)
    atlas = Atlas("mirror", gm, wm, 1 - gm - wm, base.affine)
    o = np.array([10.0, -6.0, 4.0])
    u = simulate(atlas, [0.4, 0.4], [0.05, 0.05], [o, o * [-1, 1, 1]], [120.0])[:, 0]
    assert u[0].max() > 0.5
    np.testing.assert_allclose(u[0], u[1][::-1], atol=1e-5)
