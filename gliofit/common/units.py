"""Units and the derived quantities of the Fisher–Kolmogorov model.

Every name carries its unit (INTERFACES.md): D in mm²/day, rho in 1/day, T in
days. The data identify only D·T and rho·T, hence ``mu_D_mm = sqrt(D·T)`` and
``mu_rho = sqrt(rho·T)``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "DEFAULT_THRESHOLD_EDEMA",
    "DEFAULT_THRESHOLD_CORE",
    "DEFAULT_DIFFUSIVITY_RATIO",
    "SEED_SIGMA_MM",
    "SEED_PEAK",
    "SEED_INDEPENDENT",
    "seed_record",
    "derived_parameters",
]

DEFAULT_THRESHOLD_EDEMA = 0.25
"""Fraction of carrying capacity visible on FLAIR (whole tumour)."""
DEFAULT_THRESHOLD_CORE = 0.675
"""Fraction of carrying capacity visible on T1Gd (tumour core)."""
DEFAULT_DIFFUSIVITY_RATIO = 10.0
"""White-matter over grey-matter diffusivity."""
SEED_SIGMA_MM = 1.5
"""Standard deviation of the Gaussian seed every simulation starts from, mm."""
SEED_PEAK = 1.0
"""Peak of that seed, fraction of carrying capacity."""
SEED_INDEPENDENT = ("infiltration_length_mm", "velocity_mm_per_day")
"""Parameters that do not depend on the seed (T, mu_D_mm and mu_rho do: docs/growth.md)."""


def seed_record(sigma_mm: float = SEED_SIGMA_MM, peak: float = SEED_PEAK) -> dict:
    """What T = 0 means: the Gaussian seed as recorded in the database manifest and result.json.

    ``mass_mm3`` is the seed's integral, peak x (2 pi)^(3/2) sigma³, in mm³ of tumour at carrying
    capacity. A seed of mass m reaches the same small tumour ln(m / mass_mm3) / rho days sooner
    (about half that for a large one): docs/growth.md.
    """
    return {
        "kind": "gaussian",
        "sigma_mm": float(sigma_mm),
        "peak": float(peak),
        "mass_mm3": float(peak * (2.0 * math.pi) ** 1.5 * sigma_mm**3),
    }


def derived_parameters(D_mm2_per_day, rho_per_day, T_days) -> dict[str, np.ndarray | float]:
    """The identifiable and interpretable quantities of INTERFACES.md.

    Returns ``mu_D_mm`` (sqrt(D·T), mm), ``mu_rho`` (sqrt(rho·T)),
    ``infiltration_length_mm`` (sqrt(D/rho), mm) and
    ``velocity_mm_per_day`` (2·sqrt(D·rho), mm/day); scalars in, scalars out.
    """
    import numpy as np  # here, not at the top: the command line reads this module's constants at start-up

    D = np.asarray(D_mm2_per_day, dtype=np.float64)
    rho = np.asarray(rho_per_day, dtype=np.float64)
    T = np.asarray(T_days, dtype=np.float64)
    out = {
        "mu_D_mm": np.sqrt(D * T),
        "mu_rho": np.sqrt(rho * T),
        "infiltration_length_mm": np.sqrt(D / rho),
        "velocity_mm_per_day": 2.0 * np.sqrt(D * rho),
    }
    if D.ndim == rho.ndim == T.ndim == 0:
        return {k: float(v) for k, v in out.items()}
    return out
