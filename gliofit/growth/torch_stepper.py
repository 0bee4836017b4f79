"""The torch integrators of :func:`~gliofit.growth.solver.simulate`: Euler, and RKL2 off the CPU kernels
(CUDA, ``compile=False``, no numba), optionally fused with ``torch.compile``."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from gliofit.growth import kernels
from gliofit.growth.atlas import Atlas
from gliofit.growth.stencil import ActiveBox, DiffusionField, rkl2_coefficients, seed_density

__all__ = ["run_torch", "COMPILE_MIN_VOXELS"]

COMPILE_MIN_VOXELS = 2_000_000
"""Batch x grid voxels from which ``compile=None`` fuses the stencil (a 1 mm brain is ~4.7M)."""


def run_torch(
    grid: Atlas,
    D: np.ndarray,
    rho: np.ndarray,
    origins: np.ndarray,
    times: np.ndarray,
    diffusivity_ratio: float,
    config,
    device: str | torch.device,
    out: np.ndarray,
    on_step: Callable[[float, float], None] | None = None,
) -> None:
    """Grow the batch on ``device`` and write snapshot k of simulation b into ``out[b, k]`` (arguments
    validated by :func:`~gliofit.growth.solver.simulate`; ``config`` a
    :class:`~gliofit.growth.solver.SolverConfig`)."""
    dev = torch.device(device)
    field = DiffusionField.from_grid(grid, diffusivity_ratio, dev)
    u = torch.stack([seed_density(grid, o, config.seed_sigma_mm, config.seed_amplitude, dev) for o in origins])
    u *= field.domain
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


class _Stepper:
    """Advances a batch state ``u`` (B, X, Y, Z) in place by one step of the configured method."""

    def __init__(self, field: DiffusionField, D: np.ndarray, rho: np.ndarray, config, device: torch.device) -> None:
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
