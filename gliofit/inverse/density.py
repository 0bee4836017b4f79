"""The best estimate's tumour-cell density on the 1 mm atlas grid, uncropped.

A radiotherapy plan reaches about 15 mm past the tumour core, so the density
it ranks must be positive there. The crops stored in the database end where
u < 0.5/255 (a straight-edged box with zero outside), and the solver's active
box leaves exactly 0 outside the box it grew; neither can serve a plan. The
density is therefore the forward model solved again at the estimate with the
whole grid active (no active box), positive in every tissue voxel the
seed's diffusion reaches (the whole connected tissue, down to float32
underflow, which happens only far beyond any plan's margin). Methods:

``"upsample"`` (default) solved on the database grid, then trilinearly
    interpolated onto the atlas grid: about a second at 2 mm.
``"resimulate"`` solved on the atlas at 1 mm (the slowest; timings in benchmarks/RESULTS.md).
``"stored"`` the entry's stored (cropped, uint8) density interpolated onto the
    atlas grid: milliseconds, but zero past the crop; for comparison only.

``benchmarks/inverse_density.py`` compares them against a 1 mm truth.
"""

from __future__ import annotations

import numpy as np

from gliofit.common.errors import InputError
from gliofit.common.units import DEFAULT_DIFFUSIVITY_RATIO, SEED_INDEPENDENT
from gliofit.growth.atlas import Atlas, resample_atlas, to_atlas_grid

__all__ = [
    "DENSITY_METHODS",
    "stored_density",
    "upsampled_density",
    "resimulated_density",
    "simulated_density",
    "best_density",
    "seed_of",
]

DENSITY_METHODS = ("upsample", "resimulate", "stored")


def seed_of(manifest) -> dict:
    """The seed record of a database (the default seed for manifests written before it was recorded),
    with the parameters that do not depend on it."""
    from gliofit.common.units import seed_record

    seed = dict(getattr(manifest, "seed", None) or seed_record())
    seed["independent_of_seed"] = list(SEED_INDEPENDENT)
    return seed


def simulated_density(
    parameters: dict,
    grid: Atlas,
    atlas: Atlas,
    *,
    diffusivity_ratio: float = DEFAULT_DIFFUSIVITY_RATIO,
    device: str = "cpu",
) -> np.ndarray:
    """(X, Y, Z) float32 in [0, 1] on ``atlas``: the uncropped solution on ``grid`` at ``parameters``.

    ``parameters`` holds ``D_mm2_per_day``, ``rho_per_day``, ``T_days`` and ``origin_mm`` (INTERFACES.md
    units); the solver integrates the whole grid (no active box), so the density is positive in all
    tissue connected to the seed, then it is interpolated trilinearly onto ``atlas``.
    """
    from gliofit.growth.solver import SolverConfig, simulate_one

    u = simulate_one(
        grid,
        parameters["D_mm2_per_day"],
        parameters["rho_per_day"],
        parameters["origin_mm"],
        parameters["T_days"],
        diffusivity_ratio=diffusivity_ratio,
        config=SolverConfig(active_box=False),
        device=device,
    )
    if grid.shape == atlas.shape and np.allclose(grid.affine, atlas.affine):
        return np.clip(u, 0.0, 1.0).astype(np.float32)
    return np.clip(to_atlas_grid(u, grid, atlas), 0.0, 1.0).astype(np.float32)


def upsampled_density(
    parameters: dict, grid: Atlas, atlas: Atlas, *, diffusivity_ratio: float = DEFAULT_DIFFUSIVITY_RATIO
) -> np.ndarray:
    """The uncropped solution on the database ``grid``, interpolated onto ``atlas``."""
    return simulated_density(parameters, grid, atlas, diffusivity_ratio=diffusivity_ratio)


def resimulated_density(
    parameters: dict,
    atlas: Atlas,
    *,
    resolution_mm: float = 1.0,
    diffusivity_ratio: float = DEFAULT_DIFFUSIVITY_RATIO,
    device: str = "cpu",
) -> np.ndarray:
    """The uncropped solution on ``atlas`` resampled to ``resolution_mm``, back on ``atlas``."""
    grid = (
        atlas if resolution_mm == 1.0 and np.allclose(atlas.spacing_mm, 1.0) else resample_atlas(atlas, resolution_mm)
    )
    return simulated_density(parameters, grid, atlas, diffusivity_ratio=diffusivity_ratio, device=device)


def stored_density(db, entry_id: int, atlas: Atlas) -> np.ndarray:
    """(X, Y, Z) float32 in [0, 1] on ``atlas``: the entry's stored, cropped density interpolated."""
    return np.clip(to_atlas_grid(db.density(int(entry_id)), db.grid, atlas), 0.0, 1.0).astype(np.float32)


def best_density(db, entry_id: int, parameters: dict, atlas: Atlas, method: str = "upsample") -> np.ndarray:
    """The density at ``parameters`` (the estimate; entry ``entry_id`` for ``"stored"``) on the atlas grid
    by ``method`` (:data:`DENSITY_METHODS`)."""
    ratio = float(db.manifest.design.get("diffusivity_ratio", DEFAULT_DIFFUSIVITY_RATIO))
    if method == "upsample":
        return upsampled_density(parameters, db.grid, atlas, diffusivity_ratio=ratio)
    if method == "resimulate":
        return resimulated_density(parameters, atlas, diffusivity_ratio=ratio)
    if method == "stored":
        return stored_density(db, entry_id, atlas)
    raise InputError(f"density method must be one of {', '.join(DENSITY_METHODS)}, got {method!r}")
