"""A database indexed with version-1 features keeps working, and `gliofit db index` moves it to the current version."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
from typer.testing import CliRunner

from gliofit.cli import app
from gliofit.simulations_db.database import open_database
from gliofit.simulations_db.features import FEATURE_VERSION, FeatureSpec, entry_features, query_features
from gliofit.simulations_db.manifest import read_manifest
from gliofit.simulations_db.reindex import _engine, load_features, rebuild_index
from gliofit.simulations_db.upgrade import rewrite_features
from gliofit.simulations_db.store import threshold_level
from gliofit.simulations_db.verify import verify_database

runner = CliRunner()


def _as_version_1(src, dst):
    """A copy of ``src`` as a database written before version 2: v1 features in SQL, manifest and index."""
    shutil.copytree(src, dst)
    m = read_manifest(dst)
    old = FeatureSpec.for_grid(m.grid_shape, m.resolution_mm, version=1)
    assert rewrite_features(dst, old) > 0
    d = json.loads((dst / "gliofit-db.json").read_text())
    d["features"] = old.to_dict()
    del d["features"]["fine_cell_voxels"], d["features"]["fine_weight"], d["seed"]  # keys it never had
    (dst / "gliofit-db.json").write_text(json.dumps(d))
    rebuild_index(dst, "flat")
    return old


def _nearest(db_dir) -> tuple[int, int]:
    """(entry id, id found by the index for that entry's own masks): the query path of this database."""
    db = open_database(db_dir)
    try:
        spec = FeatureSpec.from_dict(db.manifest.features)
        eid = int(db.entries["id"][len(db.entries["id"]) // 2])
        ((box, crop),) = db.read_visible([eid])
        wt, core = (np.zeros(db.manifest.grid_shape, bool) for _ in range(2))
        sl = tuple(slice(box[i], box[i + 3]) for i in range(3))
        wt[sl], core[sl] = crop >= threshold_level(0.25), crop >= threshold_level(0.675)
        return eid, int(db.index.search(query_features(spec, wt, core), 1)[0, 0])
    finally:
        db.close()


def test_a_version_1_database_keeps_working_then_db_index_upgrades_it(reference_db, tmp_path):
    db = tmp_path / "DB"
    old = _as_version_1(reference_db, db)
    assert FeatureSpec.from_dict(read_manifest(db).features) == old and old.version == 1 < FEATURE_VERSION
    assert verify_database(db) == []
    eid, found = _nearest(db)
    assert found == eid  # queries use the old spec with the old index

    result = runner.invoke(app, ["db", "index", str(db), "--kind", "flat"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["features_version"] == FEATURE_VERSION
    new = FeatureSpec.from_dict(read_manifest(db).features)
    assert new.version == FEATURE_VERSION and new == old.current()
    ids, feats = load_features(_engine(db, None))
    assert feats.shape == (len(ids), new.dim) and new.dim > old.dim
    assert verify_database(db) == []  # stored features equal recomputed, index agrees
    assert _nearest(db)[1] == eid
    # a second run finds nothing to recompute and changes no feature
    assert rewrite_features(db, new) == 0
    assert np.array_equal(load_features(_engine(db, None))[1], feats)


def test_version_2_features_hold_both_scales(reference_db):
    m = read_manifest(reference_db)
    spec = FeatureSpec.from_dict(m.features)
    assert spec.version == 2 and spec.fine_cell_voxels >= 1
    v1 = replace(spec, fine_cell_voxels=0, version=1)
    db = open_database(reference_db)
    try:
        ((box, crop),) = db.read_visible([int(db.entries["id"][0])])
    finally:
        db.close()
    wt, core = crop >= threshold_level(0.25), crop >= threshold_level(0.675)
    f2, f1 = entry_features(spec, wt, core, box[:3]), entry_features(v1, wt, core, box[:3])
    n, nf = spec.n_cells, spec.n_fine
    np.testing.assert_array_equal(f2[: 2 * n], f1[: 2 * n])  # the coarse part is version 1's
    np.testing.assert_array_equal(f2[-2:], f1[-2:])  # and so are the log volumes
    fine_wt = f2[2 * n : 2 * n + nf]
    assert abs(float(fine_wt @ fine_wt) - spec.fine_weight**2) < 1e-5
