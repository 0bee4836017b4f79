"""The solver's inputs as numpy arrays (no torch): face coefficients, the Gaussian seed, RKL2 coefficients.

The fused CPU kernels (:mod:`.cpu_batch`) run on these directly, so a CPU simulation never imports
torch; :mod:`.stencil` wraps the same arrays in tensors for the torch integrators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from gliofit.common.grids import world_to_voxel
from gliofit.growth.atlas import Atlas

__all__ = ["FaceArrays", "face_arrays", "seed_array", "rkl2_coefficients"]


@dataclass(frozen=True, eq=False)
class FaceArrays:
    """Face coefficients of div(kappa grad .) for D_w = 1, in 1/mm² (so D x L u is per day).

    ``faces[a]`` (float32) has the grid's shape less one along axis ``a``:
    ``0.5 (kappa_i + kappa_j) / h_a²`` between voxels i and j when both lie in
    the domain, else 0. ``domain`` is a float32 (X, Y, Z) 0/1 mask;
    ``max_diagonal`` bounds the operator's diagonal (the explicit step limit).
    """

    faces: tuple[np.ndarray, np.ndarray, np.ndarray]
    domain: np.ndarray
    max_diagonal: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.domain.shape)  # type: ignore[return-value]


def face_arrays(grid: Atlas, diffusivity_ratio: float) -> FaceArrays:
    """The face coefficients and domain of ``grid`` for white/grey diffusivity ratio ``diffusivity_ratio``."""
    domain = grid.domain
    kappa = np.where(domain, grid.wm + grid.gm / diffusivity_ratio, 0.0).astype(np.float64)
    faces, diagonal = [], np.zeros(grid.shape)
    for axis, h in enumerate(grid.spacing_mm):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        both = domain[tuple(lo)] & domain[tuple(hi)]
        k = np.where(both, 0.5 * (kappa[tuple(lo)] + kappa[tuple(hi)]), 0.0) / h**2
        diagonal[tuple(lo)] += k
        diagonal[tuple(hi)] += k
        faces.append(k.astype(np.float32))
    return FaceArrays(
        faces=tuple(faces),  # type: ignore[arg-type]
        domain=domain.astype(np.float32),
        max_diagonal=float(max(diagonal.max(), 1e-12)),
    )


def seed_array(grid: Atlas, origin_mm, sigma_mm: float, amplitude: float) -> np.ndarray:
    """A Gaussian seed (peak ``amplitude``, std ``sigma_mm``) averaged over each voxel: (X, Y, Z) float32.

    Voxel averages (not point samples) keep the seed's mass the same on every
    grid spacing, so a 2 mm database and a 1 mm patient start alike. Grids with
    rotated axes fall back to point samples at voxel centres.
    """
    centre = world_to_voxel(grid.affine, np.asarray(origin_mm, dtype=np.float64))
    lin = grid.affine[:3, :3]
    axis_aligned = np.allclose(lin, np.diag(np.diag(lin)))
    spacing = np.asarray(grid.spacing_mm)
    factors = []
    for axis, n in enumerate(grid.shape):
        s = sigma_mm / spacing[axis]
        i = np.arange(n, dtype=np.float64)
        if axis_aligned:
            f = (ndtr((i + 0.5 - centre[axis]) / s) - ndtr((i - 0.5 - centre[axis]) / s)) * math.sqrt(2 * math.pi) * s
        else:
            f = np.exp(-0.5 * ((i - centre[axis]) / s) ** 2)
        factors.append(f)
    seed = amplitude * np.einsum("i,j,k->ijk", *factors)
    if not axis_aligned:
        xyz = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1)
        d2 = (((xyz - centre) @ lin.T) ** 2).sum(-1)
        seed = amplitude * np.exp(-0.5 * d2 / sigma_mm**2)
    return seed.astype(np.float32)


def rkl2_coefficients(s: int) -> tuple[list[float], list[float], list[float], list[float]]:
    """(mu, nu, mu~, gamma~) of the s-stage RKL2 scheme, indexed by stage 0..s.

    Stable for a step up to (s² + s - 2) / 4 times the explicit Euler limit.
    """
    b = [1.0 / 3.0] * 3 + [(j * j + j - 2) / (2.0 * j * (j + 1)) for j in range(3, s + 1)]
    a = [1.0 - bj for bj in b]
    w1 = 4.0 / (s * s + s - 2)
    mu, nu, mu_t, gamma_t = [0.0] * (s + 1), [0.0] * (s + 1), [0.0] * (s + 1), [0.0] * (s + 1)
    mu_t[1] = b[1] * w1
    for j in range(2, s + 1):
        mu[j] = (2 * j - 1) / j * b[j] / b[j - 1]
        nu[j] = -(j - 1) / j * b[j] / b[j - 2]
        mu_t[j] = mu[j] * w1
        gamma_t[j] = -a[j - 1] * mu_t[j]
    return mu, nu, mu_t, gamma_t
