"""The same design built in parallel: a local process pool and a real Dask LocalCluster."""

from __future__ import annotations

import pytest
from dbhelpers import RESOLUTION_MM, RULE, assert_same_content, content

from gliofit.simulations_db.build import build_database
from gliofit.simulations_db.database import open_database
from gliofit.simulations_db.verify import verify_database


@pytest.mark.slow
def test_local_pool_of_two_equals_inline_build(reference_db, tmp_path):
    db = tmp_path / "DB"
    report = build_database(
        db, 20, resolution_mm=RESOLUTION_MM, seed=0, workers=2, batch_size=2, snapshots=RULE, progress=False
    )
    assert report["new"]["tasks"] == 10 and report["simulations"] == 20
    assert_same_content(content(reference_db), content(db))
    assert verify_database(db) == []


@pytest.mark.slow
def test_dask_local_cluster_builds_the_same_entries(reference_db, tmp_path):
    distributed = pytest.importorskip("distributed")
    db = tmp_path / "DB"
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        report = build_database(
            db,
            20,
            resolution_mm=RESOLUTION_MM,
            seed=0,
            scheduler=cluster.scheduler_address,
            batch_size=2,
            snapshots=RULE,
            progress=False,
        )
        with distributed.Client(cluster) as client:
            worker_pids = set(client.run(lambda: __import__("os").getpid()).values())
    assert len(worker_pids) == 2
    assert report["new"]["tasks"] == 10 and report["simulations"] == 20
    assert_same_content(content(reference_db), content(db))
    with open_database(db).engine.connect() as conn:
        from sqlalchemy import select

        from gliofit.simulations_db.schema import build_runs_t

        assert conn.execute(select(build_runs_t.c.executor)).scalar().startswith("dask tcp://127.0.0.1")
    assert verify_database(db) == []
