"""Shared fixtures of the pipeline tests: one small database and phantom patient folders (built once per process)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gliofit.segmentation.phantoms import make_phantoms
from gliofit.growth.atlas import load_atlas
from gliofit.simulations_db.build import build_database
from gliofit.simulations_db.design import SnapshotRule

GLIOFIT = str(Path(sys.executable).with_name("gliofit"))
PHANTOM_MM = 3.0
"""Spacing of the phantom MRI (coarse, so registration and the pipeline take seconds)."""

_ONCE: dict = {}


@pytest.fixture(scope="session")
def atlas1():
    """The 1 mm ICBM152 atlas (loaded once)."""
    if "atlas" not in _ONCE:
        _ONCE["atlas"] = load_atlas("icbm152")
    return _ONCE["atlas"]


@pytest.fixture(scope="session")
def pipeline_db(tmp_path_factory) -> Path:
    """80 simulations at 6 mm, 4 snapshots each."""
    if "db" not in _ONCE:
        path = tmp_path_factory.mktemp("pipeline") / "DB"
        build_database(path, 80, resolution_mm=6.0, seed=0, workers=1, snapshots=SnapshotRule(count=4),
                       progress=False)
        _ONCE["db"] = path
    return _ONCE["db"]


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory, atlas1) -> list[Path]:
    """Three BraTS 2023 phantom patient folders at 3 mm (MRI + segmentation + truth.json)."""
    if "cohort" not in _ONCE:
        root = tmp_path_factory.mktemp("cohort") / "COHORT"
        _ONCE["cohort"] = make_phantoms(root, 3, seed=11, resolution_mm=PHANTOM_MM, atlas=atlas1,
                                        sim_resolution_mm=PHANTOM_MM)
    return _ONCE["cohort"]
