"""Numerical building blocks of the torch integrators: the diffusion operator, the active
box, and the Gaussian seed and RKL2 coefficients of :mod:`.fields` for torch.

The operator is conservative: each face carries one flux, added to one voxel
and taken from its neighbour, so the discrete mass is conserved to rounding
and nothing enters a voxel whose faces all have zero coefficient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gliofit.growth.atlas import Atlas
from gliofit.growth.fields import face_arrays, rkl2_coefficients, seed_array

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
        a = face_arrays(grid, diffusivity_ratio)
        return cls(
            faces=tuple(torch.from_numpy(k).to(device) for k in a.faces),  # type: ignore[arg-type]
            domain=torch.from_numpy(a.domain).to(device),
            max_diagonal=a.max_diagonal,
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
    """:func:`~.fields.seed_array` as a float32 tensor on ``device``."""
    return torch.from_numpy(seed_array(grid, origin_mm, sigma_mm, amplitude)).to(device)
