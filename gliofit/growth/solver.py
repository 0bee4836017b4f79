"""Fisher–Kolmogorov forward solver (torch, float32, CPU or CUDA, batched).

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
batch), and each returns snapshots at its own times from one run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gliofit.common.errors import InputError, check_positive
from gliofit.common.units import DEFAULT_DIFFUSIVITY_RATIO, SEED_PEAK, SEED_SIGMA_MM, seed_record
from gliofit.growth.atlas import TISSUE_THRESHOLD, Atlas
from gliofit.growth import kernels
from gliofit.growth.stencil import ActiveBox, DiffusionField, rkl2_coefficients, seed_density

__all__ = ["SolverConfig", "simulate", "simulate_one", "validate_origin", "COMPILE_MIN_VOXELS"]

COMPILE_MIN_VOXELS = 2_000_000
"""Batch x grid voxels from which ``compile=None`` fuses the stencil (a 1 mm brain is ~4.7M)."""


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
        decides by size: on when batch x grid voxels >= ``COMPILE_MIN_VOXELS``
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

    dev = torch.device(device)
    field = DiffusionField.from_grid(grid, diffusivity_ratio, dev)
    u = torch.stack([seed_density(grid, o, config.seed_sigma_mm, config.seed_amplitude, dev) for o in origins])
    u *= field.domain
    out = np.zeros((batch,) + times.shape[1:] + grid.shape, dtype=np.float32)
    if uses_cpu_kernels(config, dev) and min(grid.shape) >= 2:
        from gliofit.growth.cpu_batch import run_independent

        run_independent(field, u.numpy(), D, rho, times, config, out, on_step)
        return out
    stepper = _Stepper(field, D, rho, config, dev)
    stops = np.unique(times)
    t = 0.0
    for stop in stops:
        while t < stop - 1e-9:
            dt = stepper.advance(u, stop - t)
            t += dt
            if on_step is not None:
                on_step(t, float(stops[-1]))
        t = float(stop)
        hits = np.argwhere(np.isclose(times, stop, rtol=0, atol=1e-9))
        if len(hits):
            snap = u.clamp(0.0, 1.0).cpu().numpy()
            for b, k in hits:
                out[b, k] = snap[b]
    return out


def uses_cpu_kernels(config: SolverConfig, device: torch.device) -> bool:
    """True where :func:`simulate` runs the fused CPU kernels (RKL2 on the CPU, fusion not switched off, numba
    present, and a grid of at least two voxels per axis)."""
    if device.type != "cpu" or config.method != "rkl2" or config.compile is False:
        return False
    return kernels.has_numba()


def simulate_one(
    grid: Atlas, D_mm2_per_day: float, rho_per_day: float, origin_mm, T_days: float, **kwargs
) -> np.ndarray:
    """One simulation to one time: (X, Y, Z) float32 density. Keywords as :func:`simulate`."""
    return simulate(grid, [D_mm2_per_day], [rho_per_day], [origin_mm], [T_days], **kwargs)[0, 0]


class _Stepper:
    """Advances a batch state ``u`` (B, X, Y, Z) in place by one step of the configured method."""

    def __init__(
        self, field: DiffusionField, D: np.ndarray, rho: np.ndarray, config: SolverConfig, device: torch.device
    ) -> None:
        self.field = field
        self.config = config
        shape = (-1, 1, 1, 1)
        self.D = torch.tensor(D, dtype=torch.float32, device=device).view(shape)
        self.rho = torch.tensor(rho, dtype=torch.float32, device=device).view(shape)
        self.rho_np = rho
        # explicit Euler limit of the diffusion part (Gershgorin bound on the operator)
        self.dt_explicit = 1.0 / (float(D.max()) * field.max_diagonal)
        self.box = ActiveBox(field.shape, enabled=config.active_box, eps=config.box_eps)
        want = config.compile
        if want is None:
            want = len(D) * int(np.prod(field.shape)) >= COMPILE_MIN_VOXELS and kernels.can_compile(device)
        self.fused = bool(want)
        self.device = device

    def _scalar(self, value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=torch.float32, device=self.device)

    def advance(self, u: torch.Tensor, remaining: float) -> float:
        if self.config.method == "euler":
            return self._euler(u, remaining)
        return self._rkl2(u, remaining)

    def _euler(self, u: torch.Tensor, remaining: float) -> float:
        dt_lim = self.config.cfl_safety * min(self.dt_explicit, 1.0 / max(float(self.rho_np.max()), 1e-12))
        dt = min(self.config.dt_days or dt_lim, remaining)
        sl = self.box.update(u, reach=1)
        v = u[sl]
        if self.fused:
            step = kernels.compiled(kernels.euler_step)
            v.copy_(step(v, *self.field.box_faces(sl), self.D, self.rho, self._scalar(dt)))
            return dt
        du = self.field.apply(v, sl) * self.D
        du.addcmul_(self.rho * v, 1.0 - v)
        v.add_(du, alpha=dt)
        return dt

    def _rkl2(self, u: torch.Tensor, remaining: float) -> float:
        dt = min(remaining, self.config.max_dt_days, self.config.rho_dt_max / max(float(self.rho_np.max()), 1e-12))
        ratio = dt / (self.config.cfl_safety * self.dt_explicit)
        stages = 1 if ratio <= 1.0 else max(2, math.ceil((-1 + math.sqrt(9 + 16 * ratio)) / 2))
        sl = self.box.update(u, reach=stages + 1)
        v = u[sl]
        self._logistic(v, dt / 2)
        if stages == 1:
            v.add_(self.field.apply(v, sl) * self.D, alpha=dt)
        elif self.fused:
            self._rkl2_diffusion_fused(v, sl, dt, stages)
        else:
            self._rkl2_diffusion(v, sl, dt, stages)
        self._logistic(v, dt / 2)
        return dt

    def _logistic(self, v: torch.Tensor, dt: float) -> None:
        """Exact solution of du/dt = rho u (1 - u) over dt, in place."""
        g = torch.exp(self.rho * dt) - 1.0
        v.div_(1.0 + v * g).mul_(1.0 + g)

    def _rkl2_diffusion(self, v: torch.Tensor, sl, dt: float, s: int) -> None:
        """One RKL2 super-step (Meyer, Balsara & Aslam 2014) of du/dt = D L u, in place.

        Written for the increments d_j = Y_j - Y_0, which the linear operator
        allows: d_j = mu d_{j-1} + nu d_{j-2} + mu~ tau L d_{j-1} + (mu~ + gamma~) tau L Y_0.
        Rounding then acts on small increments, so float32 conserves mass to ~1e-7.
        """
        mu, nu, mu_t, gamma_t = rkl2_coefficients(s)
        scale = self.D * dt
        ly0 = self.field.apply(v, sl).mul_(scale)
        d_prev2 = torch.zeros_like(v)
        d_prev = ly0 * mu_t[1]
        for j in range(2, s + 1):
            d = self.field.apply(d_prev, sl).mul_(scale).mul_(mu_t[j])
            d.add_(d_prev, alpha=mu[j]).add_(d_prev2, alpha=nu[j]).add_(ly0, alpha=mu_t[j] + gamma_t[j])
            d_prev2, d_prev = d_prev, d
        v.add_(d_prev)

    def _rkl2_diffusion_fused(self, v: torch.Tensor, sl, dt: float, s: int) -> None:
        """:meth:`_rkl2_diffusion` with one fused kernel per stage (torch.compile)."""
        mu, nu, mu_t, gamma_t = rkl2_coefficients(s)
        faces = self.field.box_faces(sl)
        scale = self.D * dt
        ly0 = kernels.compiled(kernels.scaled_laplacian)(v, *faces, scale)
        stage = kernels.compiled(kernels.rkl2_stage)
        d_prev2 = torch.zeros_like(v)
        d_prev = ly0 * mu_t[1]
        for j in range(2, s + 1):
            c = [self._scalar(x) for x in (mu[j], nu[j], mu_t[j], mu_t[j] + gamma_t[j])]
            d_prev2, d_prev = d_prev, stage(d_prev, d_prev2, ly0, *faces, scale, *c)
        v.add_(d_prev)
