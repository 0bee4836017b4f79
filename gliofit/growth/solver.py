"""Fisher–Kolmogorov forward solver (float32, CPU or CUDA, batched).

Solves, on a simulation grid (:class:`~gliofit.growth.atlas.Atlas`),

    du/dt = div(D(x) grad u) + rho u (1 - u),    u in [0, 1] (fraction of carrying capacity)

with D = D_w in white matter and D_w / ratio in grey matter, weighted by the
tissue probabilities (D(x) = D_w (P_wm + P_gm / ratio)); face diffusivities
are the mean of the two neighbouring voxels, and no flux crosses a face that
touches a voxel with GM + WM < 0.1 (CSF, outside). Units: mm, days.

Two integrators share one conservative 7-point operator (:mod:`.stencil`):

``"euler"``  the reference: explicit Euler on the whole equation at a fixed
             fraction of its stability limit.
``"rkl2"``   the default: Strang splitting, an exact logistic half-step for
             the reaction on each side of a second-order Runge–Kutta–Legendre
             super-time-step for the diffusion (s stages cover ~s²/4 explicit
             steps), on an active bounding box around the tumour.

Many simulations with different D, rho and seed points advance together (a
batch), and each returns snapshots at its own times from one run. RKL2 on the
CPU runs as fused numba loops (:mod:`.cpu_batch`) on numpy arrays
(:mod:`.fields`) without importing torch; the other cases run on torch
(:mod:`.torch_stepper`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

from gliofit.common.errors import InputError, check_positive
from gliofit.common.units import DEFAULT_DIFFUSIVITY_RATIO, SEED_PEAK, SEED_SIGMA_MM, seed_record
from gliofit.growth.atlas import TISSUE_THRESHOLD, Atlas

if TYPE_CHECKING:
    import torch

__all__ = ["SolverConfig", "simulate", "simulate_one", "validate_origin", "uses_cpu_kernels"]


@dataclass(frozen=True)
class SolverConfig:
    """How to integrate (not what): method, step control, active box, seed.

    Attributes
    ----------
    method : ``"rkl2"`` (fast, default) or ``"euler"`` (reference).
    cfl_safety : fraction of the stability limit used for each step.
    dt_days : a fixed step for ``"euler"`` (None: ``cfl_safety`` x its limit).
    max_dt_days : upper bound of a ``"rkl2"`` step (accuracy of splitting).
    rho_dt_max : upper bound of rho x step for ``"rkl2"`` (splitting accuracy).
    active_box : compute only on the box where u > ``box_eps`` plus a margin.
    box_eps : density below which a voxel is treated as empty when sizing the box.
    seed_sigma_mm : standard deviation of the Gaussian seed, mm.
    seed_amplitude : peak of the (continuous) Gaussian seed.
    compile : fuse the stencil with ``torch.compile`` (True/False); None
        decides by size: on when batch x grid voxels >= ``torch_stepper.COMPILE_MIN_VOXELS``
        and a compiler is available (a first compilation costs seconds).
    """

    method: str = "rkl2"
    cfl_safety: float = 0.9
    dt_days: float | None = None
    max_dt_days: float = 8.0
    rho_dt_max: float = 0.2
    active_box: bool = True
    box_eps: float = 1e-6
    seed_sigma_mm: float = SEED_SIGMA_MM
    seed_amplitude: float = SEED_PEAK
    compile: bool | None = None

    def seed(self) -> dict:
        """The seed as recorded in manifests and result.json (:func:`~gliofit.common.units.seed_record`)."""
        return seed_record(self.seed_sigma_mm, self.seed_amplitude)


def validate_origin(grid: Atlas, origin_mm: Sequence[float]) -> None:
    """Raise :class:`InputError` unless the origin lies in brain tissue (GM + WM >= 0.1)."""
    tissue = grid.tissue_at(origin_mm)
    if tissue < TISSUE_THRESHOLD:
        xyz = ", ".join(f"{float(v):.1f}" for v in origin_mm)
        raise InputError(
            f"origin ({xyz}) mm lies outside brain tissue of atlas {grid.name} "
            f"(GM + WM = {tissue:.2f} < {TISSUE_THRESHOLD})"
        )


def _as_batch(name: str, values, n: int | None = None, *, allow_zero: bool = False) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        raise InputError(f"{name} must be one value per simulation ({n}), got shape {arr.shape}")
    for v in arr:
        if not (allow_zero and v == 0.0):
            check_positive(v, name)
    return arr


def _snapshot_times(times_days, batch: int) -> np.ndarray:
    t = np.asarray(times_days, dtype=np.float64)
    if t.ndim <= 1:
        t = np.broadcast_to(np.atleast_1d(t), (batch, np.atleast_1d(t).size))
    if t.ndim != 2 or t.shape[0] != batch:
        raise InputError(f"times_days must be (K,) or ({batch}, K), got shape {t.shape}")
    for v in t.ravel():
        check_positive(v, "T (days)")
    return np.array(t)


def simulate(
    grid: Atlas,
    D_mm2_per_day,
    rho_per_day,
    origin_mm,
    times_days,
    *,
    diffusivity_ratio: float = DEFAULT_DIFFUSIVITY_RATIO,
    config: SolverConfig = SolverConfig(),
    device: str | torch.device = "cpu",
    on_step: Callable[[float, float], None] | None = None,
) -> np.ndarray:
    """Grow a batch of tumours and return density snapshots.

    Parameters
    ----------
    grid : the simulation grid (an atlas, usually from ``resample_atlas``).
    D_mm2_per_day : (B,) white-matter diffusivities, mm²/day.
    rho_per_day : (B,) proliferation rates, 1/day (0 allowed: pure diffusion).
    origin_mm : (B, 3) seed points, world mm (RAS); each must lie in tissue.
    times_days : (K,) times for every simulation, or (B, K), days since seeding.
    diffusivity_ratio : white over grey matter diffusivity.
    config : integrator settings (:class:`SolverConfig`).
    device : ``"cpu"``, ``"cuda"`` ...
    on_step : called as ``on_step(t_days, t_end_days)`` after each step (progress).

    Returns
    -------
    (B, K, X, Y, Z) float32 densities in [0, 1], snapshot k of simulation b at
    ``times_days[b, k]``.
    """
    D = _as_batch("D (mm^2/day)", D_mm2_per_day)
    batch = D.shape[0]
    rho = _as_batch("rho (1/day)", rho_per_day, batch, allow_zero=True)
    origins = np.asarray(origin_mm, dtype=np.float64).reshape(-1, 3)
    if origins.shape[0] != batch:
        raise InputError(f"origin_mm must be ({batch}, 3), got {np.shape(origin_mm)}")
    for o in origins:
        validate_origin(grid, o)
    times = _snapshot_times(times_days, batch)
    check_positive(diffusivity_ratio, "diffusivity ratio")
    if config.method not in ("rkl2", "euler"):
        raise InputError(f"unknown solver method {config.method!r} (rkl2 or euler)")

    out = np.zeros((batch,) + times.shape[1:] + grid.shape, dtype=np.float32)
    if uses_cpu_kernels(config, device) and min(grid.shape) >= 2:
        from gliofit.growth.fields import face_arrays, seed_array

        field = face_arrays(grid, diffusivity_ratio)
        u = np.stack([seed_array(grid, o, config.seed_sigma_mm, config.seed_amplitude) for o in origins])
        u *= field.domain
        _run_cpu(field, u, D, rho, times, config, out, on_step)
        return out
    from gliofit.growth.torch_stepper import run_torch

    run_torch(grid, D, rho, origins, times, diffusivity_ratio, config, device, out, on_step)
    return out


def _run_cpu(field, u: np.ndarray, D, rho, times, config: SolverConfig, out: np.ndarray, on_step) -> None:
    """The fused CPU kernels over contiguous groups of the batch, one thread each (:func:`cpu_threads`
    groups, at most one per simulation; one with a progress callback). The kernels release the GIL, and a
    simulation's snapshots do not depend on the rest of its batch, so the split changes no number."""
    from gliofit.common.executors import cpu_threads
    from gliofit.growth.cpu_batch import run_independent

    groups = 1 if on_step is not None else min(cpu_threads(), len(D))
    if groups <= 1:
        run_independent(field, u, D, rho, times, config, out, on_step)
        return
    from concurrent.futures import ThreadPoolExecutor

    edges = np.linspace(0, len(D), groups + 1).astype(int)
    with ThreadPoolExecutor(groups, thread_name_prefix="gliofit-solver") as pool:
        runs = [
            pool.submit(run_independent, field, u[a:b], D[a:b], rho[a:b], times[a:b], config, out[a:b])
            for a, b in zip(edges[:-1], edges[1:])
        ]
        for r in runs:
            r.result()


def uses_cpu_kernels(config: SolverConfig, device: str | torch.device) -> bool:
    """True where :func:`simulate` runs the fused CPU kernels (RKL2 on the CPU, fusion not switched off, numba
    present, and a grid of at least two voxels per axis); this path never imports torch."""
    kind = getattr(device, "type", None) or str(device).split(":")[0]
    if kind != "cpu" or config.method != "rkl2" or config.compile is False:
        return False
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def simulate_one(
    grid: Atlas, D_mm2_per_day: float, rho_per_day: float, origin_mm, T_days: float, **kwargs
) -> np.ndarray:
    """One simulation to one time: (X, Y, Z) float32 density. Keywords as :func:`simulate`."""
    return simulate(grid, [D_mm2_per_day], [rho_per_day], [origin_mm], [T_days], **kwargs)[0, 0]
