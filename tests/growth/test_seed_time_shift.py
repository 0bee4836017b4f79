"""What T means: a seed of another mass is a shift in time (docs/growth.md), measured in a homogeneous box."""

from __future__ import annotations

import numpy as np

from gliofit.growth.solver import SolverConfig, simulate

D, RHO, R = 0.1, 0.05, 4.0  # mm²/day, 1/day, mass ratio of the two seeds
TIMES = np.arange(5.0, 361.0, 5.0)


def _lag_days(curve_a: np.ndarray, curve_b: np.ndarray, level: float) -> float:
    """Days by which the increasing curve b reaches ``level`` after the increasing curve a."""
    return float(np.interp(level, curve_b, TIMES) - np.interp(level, curve_a, TIMES))


def test_a_lighter_seed_is_our_seed_later_by_ln_ratio_over_rho(make_box_atlas):
    box = make_box_atlas((55, 55, 55), 2.0)
    runs = [
        simulate(box, [D], [RHO], [[0.0, 0.0, 0.0]], TIMES, config=SolverConfig(seed_amplitude=peak, active_box=False))[
            0
        ].astype(np.float64)
        for peak in (1.0, 1.0 / R)
    ]
    mass = [np.log(u.sum(axis=(1, 2, 3))) for u in runs]
    # while the tumour is small (u << 1 but near the seed), mass grows as exp(rho t): the lag is ln R / rho
    early = _lag_days(mass[0], mass[1], mass[0][1])  # the level our seed reaches at 10 days
    assert abs(early - np.log(R) / RHO) < 0.05 * np.log(R) / RHO
    # once the front travels, its leading edge exp(-r sqrt(rho/D)) carries the mass: the lag tends to ln R / 2 rho
    c = box.shape[0] // 2
    front = [
        np.array([np.interp(-0.25, -u[k, c:, c, c], np.arange(c + 1) * 2.0) for k in range(len(TIMES))]) for u in runs
    ]
    assert front[0][-1] < 2.0 * (c - 4)  # still clear of the walls
    late = _lag_days(front[0], front[1], front[0][-10])
    assert abs(late - np.log(R) / (2 * RHO)) < 0.10 * np.log(R) / (2 * RHO)
    assert late < early
