"""The seed every simulation starts from is recorded in the manifest; older manifests read as the default."""

from __future__ import annotations

import json

import pytest

from gliofit.common.units import seed_record
from gliofit.growth.solver import SolverConfig
from gliofit.simulations_db.design import Design, SnapshotRule
from gliofit.simulations_db.manifest import Manifest, manifest_path, read_manifest, write_manifest


def _manifest() -> Manifest:
    return Manifest(
        atlas="box",
        atlas_spec="box",
        atlas_checksum="0" * 64,
        resolution_mm=2.0,
        grid_shape=(10, 10, 10),
        design=Design().to_dict(),
        snapshots=SnapshotRule().to_dict(),
    )


def test_the_manifest_records_the_solver_seed(tmp_path):
    write_manifest(tmp_path, _manifest())
    seed = json.loads(manifest_path(tmp_path).read_text())["seed"]
    assert (
        seed
        == SolverConfig().seed()
        == {"kind": "gaussian", "sigma_mm": 1.5, "peak": 1.0, "mass_mm3": pytest.approx(53.155, abs=0.001)}
    )
    assert read_manifest(tmp_path).seed == seed


def test_a_manifest_without_a_seed_reads_as_the_default_seed(tmp_path):
    write_manifest(tmp_path, _manifest())
    d = json.loads(manifest_path(tmp_path).read_text())
    del d["seed"]
    manifest_path(tmp_path).write_text(json.dumps(d))
    assert read_manifest(tmp_path).seed == seed_record()
