"""Fixtures of the database tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from dbhelpers import RESOLUTION_MM, RULE

from gliofit.simulations_db.build import build_database


@pytest.fixture(scope="session")
def reference_db(tmp_path_factory) -> Path:
    """20 simulations at 6 mm (K = 4 up to 300 days), seed 0, built in this process: the expected content."""
    db = tmp_path_factory.mktemp("reference") / "DB"
    build_database(db, 20, resolution_mm=RESOLUTION_MM, seed=0, workers=1, snapshots=RULE, progress=False)
    return db
