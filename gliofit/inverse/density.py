"""The best estimate's tumour-cell density on the 1 mm atlas grid.

Two ways, chosen by measurement (``benchmarks/inverse_density.py``, figures in
benchmarks/RESULTS.md):

``"upsample"`` (default) the entry's stored density (uint8, database grid),
    trilinearly interpolated onto the atlas grid: milliseconds.
``"resimulate"`` the entry's parameters run again by the forward solver on
    the atlas at 1 mm (:func:`~gliofit.growth.solver.simulate_one`):
    tens of seconds.
"""

from __future__ import annotations

import numpy as np

from gliofit.common.errors import InputError
from gliofit.common.units import DEFAULT_DIFFUSIVITY_RATIO
from gliofit.growth.atlas import Atlas, resample_atlas, to_atlas_grid

__all__ = ["DENSITY_METHODS", "upsampled_density", "resimulated_density", "best_density"]

DENSITY_METHODS = ("upsample", "resimulate")


def upsampled_density(db, entry_id: int, atlas: Atlas) -> np.ndarray:
    """(X, Y, Z) float32 in [0, 1] on ``atlas``: the stored density interpolated trilinearly."""
    return np.clip(to_atlas_grid(db.density(int(entry_id)), db.grid, atlas), 0.0, 1.0).astype(np.float32)


def resimulated_density(parameters: dict, atlas: Atlas, *, resolution_mm: float = 1.0,
                        diffusivity_ratio: float = DEFAULT_DIFFUSIVITY_RATIO, device: str = "cpu") -> np.ndarray:
    """(X, Y, Z) float32 on ``atlas``: the forward solver run with ``parameters`` at ``resolution_mm``.

    ``parameters`` holds ``D_mm2_per_day``, ``rho_per_day``, ``T_days`` and ``origin_mm`` (INTERFACES.md units).
    """
    from gliofit.growth.solver import simulate_one

    grid = resample_atlas(atlas, resolution_mm)
    u = simulate_one(grid, parameters["D_mm2_per_day"], parameters["rho_per_day"], parameters["origin_mm"],
                     parameters["T_days"], diffusivity_ratio=diffusivity_ratio, device=device)
    return np.clip(to_atlas_grid(u, grid, atlas), 0.0, 1.0).astype(np.float32)


def best_density(db, entry_id: int, parameters: dict, atlas: Atlas, method: str = "upsample") -> np.ndarray:
    """The density of the best match on the atlas grid by ``method`` (:data:`DENSITY_METHODS`)."""
    if method == "upsample":
        return upsampled_density(db, entry_id, atlas)
    if method == "resimulate":
        ratio = float(db.manifest.design.get("diffusivity_ratio", DEFAULT_DIFFUSIVITY_RATIO))
        return resimulated_density(parameters, atlas, diffusivity_ratio=ratio)
    raise InputError(f"density method must be one of {', '.join(DENSITY_METHODS)}, got {method!r}")
