"""Fixtures of the inverse-solver tests: one small database, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from inversehelpers import N_SIMULATIONS, RESOLUTION_MM, RULE

from gliofit.simulations_db.build import build_database
from gliofit.simulations_db.database import open_database


@pytest.fixture(scope="session")
def small_db_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inverse") / "DB"
    build_database(path, N_SIMULATIONS, resolution_mm=RESOLUTION_MM, seed=0, workers=1, snapshots=RULE, progress=False)
    return path


@pytest.fixture(scope="session")
def small_db(small_db_path):
    db = open_database(small_db_path)
    yield db
    db.close()
