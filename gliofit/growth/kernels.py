"""Fused solver kernels for ``torch.compile``: pure functions of tensors.

Each function is one step or stage of the integrators in :mod:`.solver`,
written without in-place updates so that TorchInductor fuses it into a single
loop over the box (one read of the state and coefficients, one write): the
per-step cost then sits near the memory-bandwidth bound. Scalars are passed as
tensors so a new step length or stage coefficient does not trigger a
recompilation; shapes are dynamic, so a growing active box does not either.

The eager solver uses the in-place operator of :mod:`.stencil` instead (fewer
temporaries when nothing is fused); both are tested to agree.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["laplacian", "euler_step", "scaled_laplacian", "rkl2_stage", "compiled", "can_compile"]


def laplacian(u: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor, kz: torch.Tensor) -> torch.Tensor:
    """Conservative div(k grad u) of a (B, x, y, z) state with face coefficients, zero flux at the box faces."""
    fx = (u[:, 1:] - u[:, :-1]) * kx
    fy = (u[:, :, 1:] - u[:, :, :-1]) * ky
    fz = (u[:, :, :, 1:] - u[:, :, :, :-1]) * kz
    out = F.pad(fx, (0, 0, 0, 0, 0, 1)) - F.pad(fx, (0, 0, 0, 0, 1, 0))
    out = out + F.pad(fy, (0, 0, 0, 1)) - F.pad(fy, (0, 0, 1, 0))
    return out + F.pad(fz, (0, 1)) - F.pad(fz, (1, 0))


def euler_step(u, kx, ky, kz, D, rho, dt):
    """Explicit Euler: u + dt (D L u + rho u (1 - u)); D, rho (B, 1, 1, 1), dt 0-d."""
    return u + dt * (D * laplacian(u, kx, ky, kz) + rho * u * (1.0 - u))


def scaled_laplacian(v, kx, ky, kz, scale):
    """scale x L v; scale (B, 1, 1, 1) = D dt."""
    return scale * laplacian(v, kx, ky, kz)


def rkl2_stage(d_prev, d_prev2, ly0, kx, ky, kz, scale, mu, nu, mu_t, c_ly0):
    """One RKL2 stage in increment form: mu~ scale L d_prev + mu d_prev + nu d_prev2 + c ly0."""
    return mu_t * scale * laplacian(d_prev, kx, ky, kz) + mu * d_prev + nu * d_prev2 + c_ly0 * ly0


_CACHE: dict[Callable, Callable] = {}


def can_compile(device: torch.device) -> bool:
    """True where TorchInductor can build kernels: CUDA, or a CPU with a C++ compiler."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def compiled(fn: Callable) -> Callable:
    """``torch.compile(fn, dynamic=True)``, built once per process.

    Duck sizing is switched off: otherwise box sides that happen to be equal on
    the first call (a young, cubic tumour box) become a guard, and the growing
    box recompiles every kernel a few times during a run.
    """
    if fn not in _CACHE:
        import torch.fx.experimental._config as fx_config

        fx_config.use_duck_shape = False
        _CACHE[fn] = torch.compile(fn, dynamic=True)
    return _CACHE[fn]
