"""Fixtures of the reliability tests: one tiny reference database and a query segmentation on its grid."""

from __future__ import annotations

from pathlib import Path

import pytest
from faulthelpers import N_SIMULATIONS, RESOLUTION_MM, RULE, entry_segmentation

from gliofit.simulations_db.build import build_database


@pytest.fixture(scope="session")
def tiny_db(tmp_path_factory) -> Path:
    """20 simulations at 6 mm (4 snapshots up to 300 days), seed 0, built in this process; never modified."""
    db = tmp_path_factory.mktemp("reliability") / "DB"
    build_database(db, N_SIMULATIONS, resolution_mm=RESOLUTION_MM, seed=0, workers=1, snapshots=RULE, progress=False)
    return db


@pytest.fixture(scope="session")
def tiny_seg(tiny_db, tmp_path_factory) -> Path:
    """A label map grown by the solver on the tiny database's grid (atlas space)."""
    return entry_segmentation(tiny_db, tmp_path_factory.mktemp("seg") / "seg.nii.gz")


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory) -> Path:
    """A cohort folder of two BraTS 2023 phantom patients at 3 mm (MRI + segmentation), in atlas space."""
    from gliofit.growth.atlas import load_atlas
    from gliofit.segmentation.phantoms import make_phantoms

    root = tmp_path_factory.mktemp("cohort") / "COHORT"
    make_phantoms(root, 2, seed=11, resolution_mm=3.0, atlas=load_atlas("icbm152"), sim_resolution_mm=3.0)
    return root
