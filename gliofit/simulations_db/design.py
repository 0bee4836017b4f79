"""The parameter design of a database and the snapshot rule.

Design: a scrambled Sobol sequence (``scipy.stats.qmc``, seeded) over five
coordinates in [0, 1): log D, log rho and three for the seed point. The seed
point maps through the cumulative distribution of a tissue weight that
favours white matter and is zero outside tissue (never CSF): the first
coordinate picks an x slab by its marginal weight, the second a y row within
it, the third a voxel z within that row (a conditional inverse-CDF, so the
low discrepancy of the sequence spreads seeds over the brain). Design index
``i`` maps to the same parameters for a given ``seed`` whatever the number of
simulations, so a larger database extends the same sequence.

Snapshot rule: from the Fisher–Kolmogorov front speed ``v = 2 sqrt(D rho)``
and a transient of about ``1 / rho``, the visible radius is
``r(t) ~ v (t - 1/rho)``; ``K`` target volumes log-spaced between 1 and
300 cm³ (spheres of radius r_k) give ``t_k = 1/rho + r_k / v``, clipped to
the reference range 50–1500 days (FACTS.md). Snapshots whose whole tumour is
empty or above ``max_store_cm3`` are not stored.

>>> d = Design(seed=0)
>>> p = d.parameters(grid, np.arange(4))   # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np

from gliofit.common.errors import InputError
from gliofit.common.grids import voxel_to_world
from gliofit.common.units import DEFAULT_DIFFUSIVITY_RATIO
from gliofit.growth.atlas import Atlas

__all__ = ["Design", "SnapshotRule", "origin_weights"]

CSF_EXCLUDE_TISSUE = 0.5
"""Seed voxels need GM + WM >= this (well inside tissue, never CSF)."""


@dataclass(frozen=True)
class Design:
    """Quasi-random design over log D, log rho and the seed point.

    Attributes
    ----------
    seed : scrambling seed of the Sobol sequence (recorded with every simulation).
    D_min_mm2_per_day, D_max_mm2_per_day : white-matter diffusivity range, mm²/day.
    rho_min_per_day, rho_max_per_day : proliferation range, 1/day.
    grey_weight : weight of grey matter relative to white matter for seed points.
    diffusivity_ratio : white over grey matter diffusivity of every simulation.
    """

    seed: int = 0
    D_min_mm2_per_day: float = 0.02
    D_max_mm2_per_day: float = 1.5
    rho_min_per_day: float = 0.002
    rho_max_per_day: float = 0.2
    grey_weight: float = 0.25
    diffusivity_ratio: float = DEFAULT_DIFFUSIVITY_RATIO

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Design:
        return cls(**d)

    def unit_points(self, indices: np.ndarray) -> np.ndarray:
        """(n, 5) Sobol points in [0, 1) for the given design indices (any order)."""
        from scipy.stats import qmc

        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return np.zeros((0, 5))
        if idx.min() < 0:
            raise InputError(f"design indices must be >= 0, got {int(idx.min())}")
        sampler = qmc.Sobol(d=5, scramble=True, seed=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # balance warning for n not a power of two
            points = sampler.random(int(idx.max()) + 1)
        return points[idx]

    def parameters(self, grid: Atlas, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Parameters of design indices on a simulation grid.

        Returns
        -------
        dict of arrays: ``D_mm2_per_day`` (n,), ``rho_per_day`` (n,),
        ``origin_mm`` (n, 3) world mm at voxel centres of ``grid``.
        """
        u = self.unit_points(indices)
        logd = np.log(self.D_min_mm2_per_day) + u[:, 0] * np.log(self.D_max_mm2_per_day / self.D_min_mm2_per_day)
        logr = np.log(self.rho_min_per_day) + u[:, 1] * np.log(self.rho_max_per_day / self.rho_min_per_day)
        ijk = _conditional_inverse_cdf(origin_weights(grid, self.grey_weight), u[:, 2:5])
        return {
            "D_mm2_per_day": np.exp(logd),
            "rho_per_day": np.exp(logr),
            "origin_mm": voxel_to_world(grid.affine, ijk.astype(np.float64)),
        }


def origin_weights(grid: Atlas, grey_weight: float = 0.25) -> np.ndarray:
    """(X, Y, Z) float64 seed weight: WM + grey_weight x GM where GM + WM >= 0.5, else 0."""
    w = grid.wm.astype(np.float64) + grey_weight * grid.gm.astype(np.float64)
    w[grid.tissue < CSF_EXCLUDE_TISSUE] = 0.0
    if not w.any():
        raise InputError(f"atlas {grid.name}: no voxel with GM + WM >= {CSF_EXCLUDE_TISSUE} to seed tumours in")
    return w


def _pick(cdf_weights: np.ndarray, u: float) -> int:
    c = np.cumsum(cdf_weights)
    return int(min(np.searchsorted(c, u * c[-1], side="right"), len(c) - 1))


def _conditional_inverse_cdf(w: np.ndarray, u: np.ndarray) -> np.ndarray:
    """(n, 3) voxel indices: x by its marginal, y given x, z given (x, y); never a zero-weight voxel."""
    wx = w.sum(axis=(1, 2))
    out = np.zeros((u.shape[0], 3), dtype=np.int64)
    for n, (ux, uy, uz) in enumerate(u):
        i = _pick(wx, ux)
        j = _pick(w[i].sum(axis=1), uy)
        k = _pick(w[i, j], uz)
        out[n] = (i, j, k)
    return out


@dataclass(frozen=True)
class SnapshotRule:
    """When to take the K snapshots of a simulation, and which ones to keep.

    Attributes
    ----------
    count : K, snapshots per simulation (before de-duplication and filtering).
    volume_min_cm3, volume_max_cm3 : target whole-tumour volumes of the first and last snapshot.
    t_min_days, t_max_days : clip range of the snapshot times, days.
    max_store_cm3 : snapshots whose whole tumour exceeds this are not stored.
    """

    count: int = 10
    volume_min_cm3: float = 1.0
    volume_max_cm3: float = 300.0
    t_min_days: float = 50.0
    t_max_days: float = 1500.0
    max_store_cm3: float = 400.0

    def __post_init__(self) -> None:
        if self.count < 1:
            raise InputError(f"snapshots per simulation must be >= 1, got {self.count}")
        if not 0 < self.t_min_days <= self.t_max_days:
            raise InputError(f"snapshot times need 0 < t_min <= t_max, got {self.t_min_days}, {self.t_max_days}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SnapshotRule:
        return cls(**d)

    def times(self, D_mm2_per_day: float, rho_per_day: float) -> np.ndarray:
        """(k,) increasing snapshot times in days (k <= count after de-duplication), rounded to 0.01 day."""
        volumes_mm3 = 1000.0 * np.geomspace(self.volume_min_cm3, self.volume_max_cm3, self.count)
        radii_mm = np.cbrt(3.0 * volumes_mm3 / (4.0 * np.pi))
        speed = 2.0 * np.sqrt(D_mm2_per_day * rho_per_day)
        t = 1.0 / rho_per_day + radii_mm / speed
        t = np.clip(t, self.t_min_days, self.t_max_days)
        return np.unique(np.round(t, 2))
