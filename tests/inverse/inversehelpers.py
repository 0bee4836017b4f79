"""Shared fixtures of the inverse-solver tests: the atlas, one small database, synthetic queries.

The database (100 simulations at 6 mm, 4 snapshots each up to 1500 days) is built once per
session. Queries are grown by the same solver on the database grid from design points the
database does not hold (indices past its end), at times between its snapshots: known
parameters that are NOT an entry.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from gliofit.common.nifti import save_volume
from gliofit.simulations_db.atlas import load_atlas
from gliofit.simulations_db.build import build_database
from gliofit.simulations_db.database import open_database
from gliofit.simulations_db.design import Design, SnapshotRule
from gliofit.simulations_db.solver import simulate_one

N_SIMULATIONS = 100
RESOLUTION_MM = 6.0
RULE = SnapshotRule(count=4)
GLIOFIT = str(Path(sys.executable).with_name("gliofit"))


@pytest.fixture(scope="session")
def atlas1():
    """The 1 mm ICBM152 atlas (loaded once)."""
    return load_atlas("icbm152")


@pytest.fixture(scope="session")
def small_db_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inverse") / "DB"
    build_database(path, N_SIMULATIONS, resolution_mm=RESOLUTION_MM, seed=0, workers=1, snapshots=RULE,
                   progress=False)
    return path


@pytest.fixture(scope="session")
def small_db(small_db_path):
    db = open_database(small_db_path)
    yield db
    db.close()


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
    """``n`` queries from design indices past the database's end, at times between snapshots."""
    rng = np.random.default_rng(seed)
    design = Design.from_dict(db.manifest.design)
    rule = SnapshotRule.from_dict(db.manifest.snapshots)
    cases, i = [], N_SIMULATIONS + 500
    while len(cases) < n:
        p = design.parameters(db.grid, np.array([i]))
        i += 1
        D, rho, o = float(p["D_mm2_per_day"][0]), float(p["rho_per_day"][0]), p["origin_mm"][0]
        ts = rule.times(D, rho)
        if len(ts) < 3:
            continue
        T = float(np.sqrt(ts[-3] * ts[-2]) * np.exp(rng.uniform(-0.1, 0.1)))
        u = simulate_one(db.grid, D, rho, o, T)
        if (u >= 0.25).sum() < min_voxels or (u >= 0.675).sum() < 5:
            continue
        cases.append(Case(D, rho, T, o, u))
    return cases


def write_labels(path: Path, labels: np.ndarray, affine: np.ndarray) -> Path:
    return save_volume(labels, affine, path, dtype=np.uint8)


__all__ = ["atlas1", "small_db_path", "small_db", "Case", "grow_cases", "write_labels", "GLIOFIT", "RESOLUTION_MM"]
