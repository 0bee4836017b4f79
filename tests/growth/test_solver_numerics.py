"""Every speed-up of the solver against the explicit reference; snapshots and batches against single runs."""

from __future__ import annotations

import numpy as np
import pytest

from gliofit.common.errors import InputError
from gliofit.growth.atlas import load_atlas, resample_atlas
from gliofit.growth.solver import SolverConfig, simulate, simulate_one


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


@pytest.fixture(scope="module")
def grid():
    return resample_atlas(load_atlas(), 3.0)


ORIGIN = [-30.0, -10.0, 20.0]


@pytest.mark.slow
@pytest.mark.parametrize("D,rho,T", [(0.5, 0.05, 150.0), (0.1, 0.15, 120.0), (1.2, 0.02, 400.0)])
def test_fast_solver_matches_reference_at_fine_step(grid, D, rho, T):
    ref = simulate_one(grid, D, rho, ORIGIN, T, config=SolverConfig(method="euler", dt_days=0.1))
    fast = simulate_one(grid, D, rho, ORIGIN, T)
    for threshold in (0.25, 0.675):
        if (ref >= threshold).sum() > 10:
            assert dice(ref >= threshold, fast >= threshold) >= 0.98
    assert np.abs(ref - fast).max() < 0.03


def test_active_box_changes_nothing(grid):
    cfg = SolverConfig(method="euler")
    boxed = simulate_one(grid, 0.6, 0.04, ORIGIN, 150.0, config=cfg)
    full = simulate_one(grid, 0.6, 0.04, ORIGIN, 150.0, config=SolverConfig(method="euler", active_box=False))
    assert np.abs(boxed - full).max() < 1e-5


@pytest.mark.parametrize(
    "config,atol",
    [
        pytest.param(SolverConfig(method="euler", dt_days=0.25), 1e-6, marks=pytest.mark.slow),
        (SolverConfig(), 1e-6),
    ],
)
def test_snapshots_equal_separate_runs(grid, config, atol):
    # times on the step grid so that both runs take the very same steps
    both = simulate(grid, [0.3], [0.05], [ORIGIN], [60.0, 140.0], config=config)[0]
    first = simulate_one(grid, 0.3, 0.05, ORIGIN, 60.0, config=config)
    second = simulate_one(grid, 0.3, 0.05, ORIGIN, 140.0, config=config)
    np.testing.assert_allclose(both[0], first, atol=atol)
    np.testing.assert_allclose(both[1], second, atol=atol)
    assert both[1].sum() > both[0].sum()


@pytest.mark.slow
def test_batch_equals_runs_one_by_one(grid):
    D, rho = [0.2, 0.6, 0.05], [0.03, 0.05, 0.1]
    origins = [ORIGIN, [25.0, 0.0, 30.0], [-20.0, 30.0, 10.0]]
    times = [[80.0, 160.0], [50.0, 100.0], [60.0, 200.0]]
    # reference integrator with a fixed step: batching must not change a single value
    cfg = SolverConfig(method="euler", dt_days=0.5)
    batch = simulate(grid, D, rho, origins, times, config=cfg)
    for b in range(3):
        single = simulate(grid, [D[b]], [rho[b]], [origins[b]], [times[b]], config=cfg)[0]
        np.testing.assert_allclose(batch[b], single, atol=1e-5)
    # default integrator: the batch shares its step (set by its largest rho) and stage count, so the
    # two differ by the step's discretisation error, bounded against a fine step in test_fast_solver_matches_reference_at_fine_step
    fast = simulate(grid, D, rho, origins, times)
    for b in range(3):
        single = simulate(grid, [D[b]], [rho[b]], [origins[b]], [times[b]])[0]
        assert np.abs(fast[b] - single).max() < 2e-2
        assert dice(fast[b, -1] >= 0.25, single[-1] >= 0.25) >= 0.98


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(D_mm2_per_day=[0.0]), "D"),
        (dict(D_mm2_per_day=[-1.0]), "D"),
        (dict(rho_per_day=[-0.1]), "rho"),
        (dict(times_days=[0.0]), "T"),
        (dict(origin_mm=[[0.0, 0.0, 200.0]]), "outside brain tissue"),
    ],
)
def test_bad_parameters_raise_input_error(grid, kwargs, message):
    args = dict(D_mm2_per_day=[0.5], rho_per_day=[0.05], origin_mm=[ORIGIN], times_days=[10.0]) | kwargs
    with pytest.raises(InputError, match=message):
        simulate(grid, **args)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["euler", "rkl2"])
def test_fused_compiled_kernels_equal_eager(grid, method):
    kwargs = dict(method=method, dt_days=0.5 if method == "euler" else None)
    eager = simulate_one(grid, 0.4, 0.05, ORIGIN, 150.0, config=SolverConfig(compile=False, **kwargs))
    fused = simulate_one(grid, 0.4, 0.05, ORIGIN, 150.0, config=SolverConfig(compile=True, **kwargs))
    assert eager.max() > 0.7
    np.testing.assert_allclose(fused, eager, atol=1e-5)
