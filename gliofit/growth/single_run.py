"""One forward simulation from parameters to a density on the atlas grid (``gliofit simulate``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gliofit.common.errors import check_positive, check_vector
from gliofit.common.units import DEFAULT_DIFFUSIVITY_RATIO
from gliofit.growth.atlas import Atlas, resample_atlas, to_atlas_grid
from gliofit.growth.solver import SolverConfig, simulate_one, validate_origin

__all__ = ["GrownTumour", "grow_tumour"]


@dataclass(frozen=True, eq=False)
class GrownTumour:
    """A simulated density on its simulation grid and on the atlas grid (float32, [0, 1])."""

    density_grid: np.ndarray
    grid: Atlas
    density_atlas: np.ndarray
    atlas: Atlas


def grow_tumour(
    atlas: Atlas,
    D_mm2_per_day: float,
    rho_per_day: float,
    T_days: float,
    origin_mm,
    *,
    resolution_mm: float = 1.0,
    diffusivity_ratio: float = DEFAULT_DIFFUSIVITY_RATIO,
    config: SolverConfig = SolverConfig(),
    device: str = "cpu",
    on_step=None,
) -> GrownTumour:
    """Grow one tumour on ``atlas`` resampled to ``resolution_mm`` and map it back to the atlas grid.

    Parameters are in INTERFACES.md units: D in mm²/day, rho in 1/day, T in
    days, origin in world mm. Invalid values raise :class:`InputError`.
    """
    D = check_positive(D_mm2_per_day, "D_mm2_per_day")
    rho = check_positive(rho_per_day, "rho_per_day")
    T = check_positive(T_days, "T_days")
    origin = check_vector(origin_mm, "origin_mm", 3)
    res = check_positive(resolution_mm, "resolution_mm")
    validate_origin(atlas, origin)
    grid = resample_atlas(atlas, res)
    u = simulate_one(
        grid, D, rho, origin, T, diffusivity_ratio=diffusivity_ratio, config=config, device=device, on_step=on_step
    )
    back = np.clip(to_atlas_grid(u, grid, atlas), 0.0, 1.0).astype(np.float32)
    return GrownTumour(u, grid, back, atlas)
