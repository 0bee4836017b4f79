"""Numerical building blocks of the solver: the diffusion operator, the active
box, the Gaussian seed and the RKL2 coefficients.

The operator is conservative: each face carries one flux, added to one voxel
and taken from its neighbour, so the discrete mass is conserved to rounding
and nothing enters a voxel whose faces all have zero coefficient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtr

from gliofit.common.grids import world_to_voxel
from gliofit.growth.atlas import Atlas

__all__ = ["DiffusionField", "ActiveBox", "seed_density", "rkl2_coefficients"]

Slices = tuple[slice, slice, slice, slice]


@dataclass(frozen=True, eq=False)
class DiffusionField:
    """Face coefficients of div(kappa grad .) for D_w = 1, in 1/mm² (so D x L u is per day).

    ``faces[a]`` has the grid's shape less one along axis ``a``:
    ``0.5 (kappa_i + kappa_j) / h_a²`` between voxels i and j when both lie in
    the domain, else 0. ``domain`` is a float32 (X, Y, Z) 0/1 mask.
    """

    faces: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    domain: torch.Tensor
    max_diagonal: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.domain.shape)  # type: ignore[return-value]

    @classmethod
    def from_grid(cls, grid: Atlas, diffusivity_ratio: float, device: torch.device | str = "cpu") -> DiffusionField:
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
            faces.append(torch.tensor(k, dtype=torch.float32, device=device))
        return cls(
            faces=tuple(faces),  # type: ignore[arg-type]
            domain=torch.tensor(domain, dtype=torch.float32, device=device),
            max_diagonal=float(max(diagonal.max(), 1e-12)),
        )

    def box_faces(self, sl: Slices) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The face coefficients inside the box ``sl`` (views, no copy)."""
        box = sl[1:]
        out = []
        for axis, k in enumerate(self.faces):
            kb = list(box)
            kb[axis] = slice(box[axis].start, box[axis].stop - 1)
            out.append(k[tuple(kb)])
        return tuple(out)  # type: ignore[return-value]

    def apply(self, v: torch.Tensor, sl: Slices) -> torch.Tensor:
        """L v on the box ``sl`` (zero flux across the box faces): a new (B, x, y, z) tensor."""
        out = torch.zeros_like(v)
        for axis, k in enumerate(self.box_faces(sl)):
            n = v.shape[axis + 1]
            if n < 2:
                continue
            flux = torch.diff(v, dim=axis + 1).mul_(k)
            out.narrow(axis + 1, 0, n - 1).add_(flux)
            out.narrow(axis + 1, 1, n - 1).sub_(flux)
        return out


class ActiveBox:
    """The axis-aligned box where the tumour lives, grown before the density reaches its edge.

    Outside the box the density is exactly 0 and never touched. ``update``
    returns slices (batch, x, y, z) for the next step; ``reach`` is how many
    voxels the step can carry density (stages of the stencil).
    """

    def __init__(self, shape: tuple[int, int, int], *, enabled: bool = True, eps: float = 1e-6) -> None:
        self.shape = np.asarray(shape)
        self.enabled = enabled
        self.eps = eps
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None

    def _slices(self) -> Slices:
        return (slice(None),) + tuple(slice(int(a), int(b)) for a, b in zip(self.lo, self.hi))  # type: ignore[return-value]

    def _support(self, v: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
        occupied = (v > self.eps).any(dim=0)
        lo, hi = [], []
        for axis in range(3):
            dims = tuple(d for d in range(3) if d != axis)
            idx = torch.nonzero(occupied.any(dim=dims)).flatten()
            if idx.numel() == 0:
                return None
            lo.append(int(idx[0]))
            hi.append(int(idx[-1]) + 1)
        return np.asarray(lo), np.asarray(hi)

    def update(self, u: torch.Tensor, reach: int) -> Slices:
        if not self.enabled:
            self.lo, self.hi = np.zeros(3, int), self.shape.copy()
            return self._slices()
        margin = reach + 2
        if self.lo is None:
            support = self._support(u)
            if support is None:
                self.lo, self.hi = np.zeros(3, int), self.shape.copy()
                return self._slices()
            self._grow(*support, margin)
            outside = torch.ones(u.shape[1:], dtype=torch.bool, device=u.device)
            outside[self._slices()[1:]] = False
            u[:, outside] = 0.0
            return self._slices()
        support = self._support(u[self._slices()])
        if support is None:
            return self._slices()
        lo, hi = support[0] + self.lo, support[1] + self.lo
        near = ((lo - self.lo < margin) & (self.lo > 0)) | ((self.hi - hi < margin) & (self.hi < self.shape))
        if near.any():
            self._grow(lo, hi, margin)
        return self._slices()

    def _grow(self, lo: np.ndarray, hi: np.ndarray, margin: int) -> None:
        pad = 2 * margin + 2
        new_lo = np.maximum(lo - pad, 0)
        new_hi = np.minimum(hi + pad, self.shape)
        if self.lo is not None:
            new_lo, new_hi = np.minimum(new_lo, self.lo), np.maximum(new_hi, self.hi)
        self.lo, self.hi = new_lo, new_hi


def seed_density(
    grid: Atlas, origin_mm, sigma_mm: float, amplitude: float, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """A Gaussian seed (peak ``amplitude``, std ``sigma_mm``) averaged over each voxel.

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
    return torch.tensor(seed, dtype=torch.float32, device=device)


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
