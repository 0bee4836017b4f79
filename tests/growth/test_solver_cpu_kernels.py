"""The fused CPU kernels: bit-identical simulations whatever shares their batch, and the eager operator's result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gliofit.growth.atlas import load_atlas, resample_atlas
from gliofit.growth.solver import SolverConfig, simulate, uses_cpu_kernels

pytestmark = pytest.mark.skipif(
    not uses_cpu_kernels(SolverConfig(), torch.device("cpu")), reason="numba is not installed"
)

D = [0.2, 0.9, 0.05, 0.4, 0.02]
RHO = [0.03, 0.01, 0.12, 0.05, 0.004]
ORIGINS = [[-30.0, -10.0, 20.0], [25.0, 0.0, 30.0], [-20.0, 30.0, 10.0], [-30.0, -10.0, 20.0], [10.0, -40.0, 0.0]]
TIMES = [[80.0, 160.0], [50.0, 230.0], [60.0, 200.0], [33.3, 150.0], [120.0, 400.0]]


@pytest.fixture(scope="module")
def grid():
    return resample_atlas(load_atlas(), 4.0)


def test_batch_members_are_bit_identical_to_runs_alone(grid):
    batch = simulate(grid, D, RHO, ORIGINS, TIMES)
    assert batch[:, -1].max() > 0.5
    for b in range(len(D)):
        alone = simulate(grid, [D[b]], [RHO[b]], [ORIGINS[b]], [TIMES[b]])[0]
        assert np.array_equal(alone, batch[b]), f"simulation {b} changed with its batch"
    pair = simulate(grid, D[3:], RHO[3:], ORIGINS[3:], TIMES[3:])  # another split, another order
    assert np.array_equal(pair, batch[3:])
    reordered = simulate(grid, D[::-1], RHO[::-1], ORIGINS[::-1], TIMES[::-1])
    assert np.array_equal(reordered[::-1], batch)


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_batch_split_over_threads_changes_no_number(grid, monkeypatch, threads):
    """The batch split into contiguous groups on threads (more threads than simulations: one each) gives the
    single-thread result bit for bit; the groups are as many as the threads, at most one per simulation."""
    import gliofit.common.executors as executors
    import gliofit.growth.cpu_batch as cpu_batch

    monkeypatch.setattr(executors, "cpu_threads", lambda: 1)
    one = simulate(grid, D, RHO, ORIGINS, TIMES)
    groups, run = [], cpu_batch.run_independent

    def spy(field, u, D_g, *args, **kwargs):
        groups.append(list(D_g))
        return run(field, u, D_g, *args, **kwargs)

    monkeypatch.setattr(cpu_batch, "run_independent", spy)
    monkeypatch.setattr(executors, "cpu_threads", lambda: threads)
    split = simulate(grid, D, RHO, ORIGINS, TIMES)
    assert np.array_equal(split, one)
    assert len(groups) == min(threads, len(D))
    ordered = sorted(groups, key=lambda g: D.index(g[0]))
    assert sum(ordered, []) == D  # contiguous groups covering the batch


@pytest.mark.slow
@pytest.mark.parametrize("active_box", [True, False])
def test_fused_kernels_equal_the_eager_operator(grid, active_box):
    fused = simulate(grid, D, RHO, ORIGINS, TIMES, config=SolverConfig(active_box=active_box))
    for b in range(len(D)):
        eager = simulate(
            grid, [D[b]], [RHO[b]], [ORIGINS[b]], [TIMES[b]], config=SolverConfig(compile=False, active_box=active_box)
        )[0]
        np.testing.assert_allclose(fused[b], eager, atol=2e-5)


def test_mass_conserved_by_pure_diffusion(grid):
    seeded = simulate(grid, [0.3, 0.05], [0.0, 0.0], ORIGINS[:2], [[1e-3, 300.0], [1e-3, 300.0]])
    for b in range(2):
        m0, m1 = seeded[b, 0].sum(dtype=np.float64), seeded[b, 1].sum(dtype=np.float64)
        assert abs(m1 - m0) / m0 < 1e-5
