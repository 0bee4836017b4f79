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


ORIGIN_AXES = ("origin_x_mm", "origin_y_mm", "origin_z_mm")


def covered(unc: dict, truth: dict, level: str, scalar_keys: tuple[str, ...]) -> dict[str, bool]:
    """Whether each printed interval of ``level`` (result.json ``ci95``/``ci50``) holds the truth: per scalar
    key of ``scalar_keys`` and per axis of the seed point (:data:`ORIGIN_AXES`)."""
    out = {}
    for k in scalar_keys:
        lo, hi = unc[k][level]
        out[k] = bool(lo <= truth[k] <= hi)
    lo, hi = unc["origin_mm"][level]
    for a, k in enumerate(ORIGIN_AXES):
        out[k] = bool(lo[a] <= truth["origin_mm"][a] <= hi[a])
    return out
