"""``refine``: the CMA-ES on an analytic function, and the local search raising Dice on a coarse grid."""

from __future__ import annotations

import numpy as np
import pytest

from gliofit.common.errors import InputError
from gliofit.inverse.refine import CMAES, refine
from gliofit.growth.atlas import load_atlas, resample_atlas
from gliofit.growth.solver import simulate_one

TRUTH = {"D_mm2_per_day": 0.25, "rho_per_day": 0.05, "T_days": 220.0, "origin_mm": [-26.0, -14.0, 24.0]}


def test_cmaes_minimises_a_shifted_ellipsoid():
    target = np.array([1.0, -2.0, 0.5, 3.0, -1.0])
    scales = np.array([1.0, 4.0, 0.5, 2.0, 1.0])
    es = CMAES(np.zeros(5), 1.0, rng=np.random.default_rng(0))
    for _ in range(150):
        x = es.ask()
        es.tell((((x - target) * scales) ** 2).sum(axis=1))
    np.testing.assert_allclose(es.mean, target, atol=1e-3)
    with pytest.raises(ValueError):
        es.ask(3)
        es.tell(np.zeros(3))


@pytest.fixture(scope="module")
def grid6():
    return resample_atlas(load_atlas(), 6.0)


@pytest.fixture(scope="module")
def observed(grid6):
    u = simulate_one(grid6, TRUTH["D_mm2_per_day"], TRUTH["rho_per_day"], TRUTH["origin_mm"], TRUTH["T_days"])
    return u >= 0.25, u >= 0.675


def _perturbed() -> dict:
    T = TRUTH["T_days"]
    mu_d = np.sqrt(TRUTH["D_mm2_per_day"] * T) * 1.35
    mu_r = np.sqrt(TRUTH["rho_per_day"] * T) * 0.85
    return {
        "D_mm2_per_day": mu_d**2 / T,
        "rho_per_day": mu_r**2 / T,
        "T_days": T,
        "origin_mm": list(np.asarray(TRUTH["origin_mm"]) + [6.0, -4.0, 3.0]),
    }


def test_refine_raises_dice_from_perturbed_truth(grid6, observed):
    wt, core = observed
    assert wt.sum() > 30 and core.sum() > 5
    out = refine(grid6, wt, core, _perturbed(), budget=17, seed=0)
    assert out["n_forward_runs"] <= 17
    assert out["start_dice_mean"] < 0.8
    assert out["dice_mean"] > out["start_dice_mean"] + 0.05
    assert out["dice_mean"] == pytest.approx((out["dice_whole_tumor"] + out["dice_core"]) / 2)
    assert out["T_days"] == TRUTH["T_days"]


def test_refine_never_returns_worse_than_the_start(grid6, observed):
    wt, core = observed
    out = refine(grid6, wt, core, TRUTH, budget=9, seed=1)
    assert out["start_dice_mean"] == pytest.approx(1.0)
    assert out["dice_mean"] == pytest.approx(1.0)
    assert out["origin_mm"] == TRUTH["origin_mm"]
    assert out["D_mm2_per_day"] == pytest.approx(TRUTH["D_mm2_per_day"])
    one = refine(grid6, wt, core, _perturbed(), budget=1)
    assert one["n_forward_runs"] == 1 and one["dice_mean"] == one["start_dice_mean"]


def test_refine_starts_from_the_alternative_that_fits_best(grid6, observed):
    """The truth (at another age T: the same mu_D, mu_rho) among the alternatives is the chosen start."""
    wt, core = observed
    T = 2 * TRUTH["T_days"]
    older = {**TRUTH, "T_days": T, "D_mm2_per_day": TRUTH["D_mm2_per_day"] / 2, "rho_per_day": TRUTH["rho_per_day"] / 2}
    out = refine(grid6, wt, core, _perturbed(), alternatives=[_perturbed(), older], budget=3, seed=0)
    assert out["start"] == 2 and out["T_days"] == T
    assert out["start_dice_mean"] == pytest.approx(1.0) and out["dice_mean"] == pytest.approx(1.0)
    assert out["n_forward_runs"] == 3


def test_refine_rejects_bad_input(grid6, observed):
    wt, core = observed
    with pytest.raises(InputError, match="shape"):
        refine(grid6, wt[1:], core, TRUTH)
    with pytest.raises(InputError, match="empty"):
        refine(grid6, np.zeros_like(wt), core, TRUTH)
    with pytest.raises(InputError, match="budget"):
        refine(grid6, wt, core, TRUTH, budget=0)
