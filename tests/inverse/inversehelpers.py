"""Helpers of the inverse-solver tests: the small database's recipe and synthetic queries.

The database (100 simulations at 6 mm, 4 snapshots each up to 1500 days) is built once per
session (``conftest.py``). Queries are grown by the same solver on the database grid from design points the
database does not hold (indices past its end), at times between its snapshots: known
parameters that are NOT an entry.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gliofit.common.nifti import save_volume
from gliofit.simulations_db.design import SnapshotRule
from gliofit.growth.solver import simulate_one

N_SIMULATIONS = 100
RESOLUTION_MM = 6.0
RULE = SnapshotRule(count=4)
GLIOFIT = str(Path(sys.executable).with_name("gliofit"))


@dataclass
class Case:
    """A query grown from known parameters on the database grid."""

    D_mm2_per_day: float
    rho_per_day: float
    T_days: float
    origin_mm: np.ndarray
    density: np.ndarray

    @property
    def mu_D_mm(self) -> float:
        return float(np.sqrt(self.D_mm2_per_day * self.T_days))

    @property
    def mu_rho(self) -> float:
        return float(np.sqrt(self.rho_per_day * self.T_days))

    def labels(self, convention: str = "brats2023") -> np.ndarray:
        """Label map: edema where u >= 0.25, enhancing where u >= 0.675 (the database's thresholds)."""
        lab = np.zeros(self.density.shape, np.uint8)
        lab[self.density >= 0.25] = 2
        lab[self.density >= 0.675] = 4 if convention == "brats2021" else 3
        return lab


def grow_cases(db, n: int, *, seed: int = 1, min_voxels: int = 60) -> list[Case]:
    """``n`` queries near the database's samples but not in it.

    Each starts from a stored simulation (one with a tumour of at least ``min_voxels`` voxels at its
    second-to-last snapshot) and changes every parameter: D and rho by factors in [0.8, 1.25], the
    seed point anywhere inside its voxel (uniform, up to half a voxel along each axis), and T to a
    time between two snapshots.
    A dense database is this close to any patient; a sparse one is not, see benchmarks/RESULTS.md.
    """
    rng = np.random.default_rng(seed)
    rule = SnapshotRule.from_dict(db.manifest.snapshots)
    e = db.entries
    sims = np.unique(e["simulation_id"])
    cases = []
    for sim in rng.permutation(sims):
        if len(cases) == n:
            break
        row = np.flatnonzero(e["simulation_id"] == sim)[0]
        D = float(e["D_mm2_per_day"][row] * np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
        rho = float(e["rho_per_day"][row] * np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
        o = np.array([e["origin_x_mm"][row], e["origin_y_mm"][row], e["origin_z_mm"][row]])
        o = o + db.grid.spacing_mm[0] * rng.uniform(-0.49, 0.49, 3)
        ts = rule.times(D, rho)
        if len(ts) < 3 or db.grid.tissue_at(o) < 0.5:
            continue
        T = float(np.sqrt(ts[-3] * ts[-2]))
        u = simulate_one(db.grid, D, rho, o, T)
        if (u >= 0.25).sum() < min_voxels or (u >= 0.675).sum() < 5:
            continue
        cases.append(Case(D, rho, T, o, u))
    if len(cases) < n:
        raise RuntimeError(f"only {len(cases)} cases of {n} could be grown")
    return cases


def write_labels(path: Path, labels: np.ndarray, affine: np.ndarray) -> Path:
    return save_volume(labels, affine, path, dtype=np.uint8)


__all__ = ["Case", "grow_cases", "write_labels", "GLIOFIT", "RESOLUTION_MM"]
