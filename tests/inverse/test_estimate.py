"""The posterior-like summary: weights, temperature rule, weighted quantiles, uncertainty layout."""

from __future__ import annotations

import numpy as np
import pytest

from gliofit.inverse.estimate import (
    PARAMETER_KEYS,
    TAU_MIN,
    holding,
    match_weights,
    summarise,
    temperature,
    weighted_quantile,
)


def test_weighted_quantile_with_equal_weights_is_the_midpoint_rule():
    x = np.array([4.0, 1.0, 3.0, 2.0])
    assert weighted_quantile(x, np.ones(4), 0.5) == pytest.approx(2.5)
    assert weighted_quantile(x, np.ones(4), [0.0, 1.0]).tolist() == [1.0, 4.0]
    assert weighted_quantile(x, np.array([0, 0, 1.0, 0]), [0.025, 0.975]).tolist() == [3.0, 3.0]


def test_temperature_rule():
    s = 0.8 - 0.01 * np.arange(30)
    assert temperature(s) == pytest.approx(0.1)
    assert temperature(np.full(5, 0.999)) == TAU_MIN
    w = match_weights(s)
    assert w.sum() == pytest.approx(1.0) and np.all(np.diff(w) < 0)
    assert w[10] / w[0] == pytest.approx(np.exp(-1))


def _params(n):
    rng = np.random.default_rng(0)
    p = {k: rng.uniform(1, 2, n) for k in PARAMETER_KEYS if k != "origin_mm"}
    p["origin_mm"] = rng.uniform(-50, 50, (n, 3))
    return p


def test_summary_of_one_dominant_match_is_that_match():
    p = _params(6)
    w = np.array([0, 0, 1.0, 0, 0, 0])
    u = summarise(p, w)
    assert set(u) == set(PARAMETER_KEYS)
    assert u["mu_D_mm"]["mean"] == pytest.approx(p["mu_D_mm"][2]) and u["mu_D_mm"]["std"] == pytest.approx(0)
    assert u["mu_D_mm"]["ci95"] == pytest.approx([p["mu_D_mm"][2]] * 2)
    assert u["origin_mm"]["mean"] == pytest.approx(p["origin_mm"][2].tolist())
    assert np.shape(u["origin_mm"]["ci95"]) == (2, 3)


def test_summary_mean_and_std_match_numpy_for_equal_weights():
    p = _params(50)
    u = summarise(p, np.full(50, 1 / 50))
    assert u["rho_per_day"]["mean"] == pytest.approx(p["rho_per_day"].mean())
    assert u["rho_per_day"]["std"] == pytest.approx(p["rho_per_day"].std())
    lo, hi = u["origin_mm"]["ci95"]
    assert np.all(np.asarray(lo) < p["origin_mm"].mean(0)) and np.all(p["origin_mm"].mean(0) < np.asarray(hi))


def test_matches_below_half_the_best_score_get_no_weight():
    w = match_weights(np.array([0.6, 0.5, 0.31, 0.29, 0.0]))
    assert w[3] == 0 and w[4] == 0 and w[2] > 0 and w.sum() == pytest.approx(1.0)


def test_origin_interval_is_widened_by_half_a_database_voxel():
    p = _params(3)
    u = summarise(p, np.array([0, 1.0, 0]), origin_spacing_mm=4.0)
    lo, hi = np.asarray(u["origin_mm"]["ci95"])
    assert np.allclose(lo, p["origin_mm"][1] - 2.0) and np.allclose(hi, p["origin_mm"][1] + 2.0)
    assert np.allclose(u["origin_mm"]["std"], 4.0 / np.sqrt(12))


def test_holding_widens_intervals_to_hold_the_estimate():
    summary = {
        "mu_D_mm": {"mean": 5.0, "std": 1.0, "ci95": [4.0, 6.0], "ci50": [4.5, 5.5]},
        "origin_mm": {
            "mean": [0, 0, 0],
            "std": [1, 1, 1],
            "ci95": [[-2, -2, -2], [2, 2, 2]],
            "ci50": [[-1] * 3, [1] * 3],
        },
    }
    out = holding(summary, {"mu_D_mm": 7.0, "origin_mm": [0.0, -3.0, 1.5]})
    assert out["mu_D_mm"]["ci95"] == [4.0, 7.0] and out["mu_D_mm"]["ci50"] == [4.5, 7.0]
    assert out["origin_mm"]["ci95"] == [[-2, -3, -2], [2, 2, 2]]
    assert out["origin_mm"]["ci50"] == [[-1, -3, -1], [1, 1, 1.5]]
    assert holding(summary, {"mu_D_mm": 5.0, "origin_mm": [0, 0, 0]})["mu_D_mm"] == summary["mu_D_mm"]
