"""Shared by the pipeline and cohort benchmarks: the database they run on (not a benchmark itself)."""

from __future__ import annotations

from pathlib import Path

from gliofit.simulations_db.build import build_database
from gliofit.simulations_db.design import SnapshotRule

QUICK_SIMULATIONS, QUICK_RESOLUTION_MM = 60, 4.0
"""The ``--quick`` database: 60 simulations at 4 mm (about 20 s to build on two cores)."""


def benchmark_database(db: str | None, quick: bool, tmp: Path) -> Path:
    """``db`` if given; else a small database in ``tmp`` (``quick``) or the demo database (built once, cached)."""
    if db:
        return Path(db)
    if quick:
        path = tmp / "DB"
        build_database(
            path,
            QUICK_SIMULATIONS,
            resolution_mm=QUICK_RESOLUTION_MM,
            seed=0,
            snapshots=SnapshotRule(count=6),
            progress=False,
        )
        return path
    from gliofit.pipelines.demo import demo_database

    return demo_database(progress=True)
