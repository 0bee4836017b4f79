"""Helpers shared by the database tests: a small fast build, and the content of a database."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sqlalchemy import select

from gliofit.simulations_db.database import open_database
from gliofit.simulations_db.design import SnapshotRule
from gliofit.simulations_db.schema import simulations_t

RESOLUTION_MM = 6.0
RULE = SnapshotRule(count=4, t_max_days=300.0)
GLIOFIT = str(Path(sys.executable).with_name("gliofit"))
"""The console script next to this interpreter."""


def cli_build_args(db: Path, n: int, *extra: str) -> list[str]:
    """``gliofit db build`` arguments matching :data:`RESOLUTION_MM` and :data:`RULE`."""
    return [
        "db",
        "build",
        str(db),
        "--simulations",
        str(n),
        "--resolution",
        str(RESOLUTION_MM),
        "--snapshots",
        str(RULE.count),
        "--max-days",
        str(RULE.t_max_days),
        "--no-progress",
        *extra,
    ]


def content(db_dir: Path, database_url: str | None = None) -> dict:
    """Everything that must be equal between two builds of one design: rows and array bytes."""
    db = open_database(db_dir, database_url)
    try:
        e = db.entries
        with db.engine.connect() as conn:
            sims = conn.execute(
                select(
                    simulations_t.c.id,
                    simulations_t.c.status,
                    simulations_t.c.n_entries,
                    simulations_t.c.D_mm2_per_day,
                    simulations_t.c.rho_per_day,
                    simulations_t.c.origin_x_mm,
                ).order_by(simulations_t.c.id)
            ).all()
        crops = db.read_entries(e["id"])
        return {
            "simulations": [tuple(r) for r in sims],
            "entries": {
                int(i): (int(s), float(t), int(w), int(c), tuple(int(v) for v in b), int(k))
                for i, s, t, w, c, b, k in zip(
                    e["id"], e["simulation_id"], e["T_days"], e["wt_voxels"], e["core_voxels"], e["bbox"], e["crc32"]
                )
            },
            "arrays": {int(i): crop.tobytes() for i, (_, crop) in zip(e["id"], crops)},
        }
    finally:
        db.close()


def assert_same_content(a: dict, b: dict) -> None:
    assert a["simulations"] == b["simulations"]
    assert a["entries"] == b["entries"]
    assert a["arrays"].keys() == b["arrays"].keys()
    assert all(a["arrays"][k] == b["arrays"][k] for k in a["arrays"])


def shard_files(db_dir: Path) -> list[str]:
    return sorted(p.name for p in (Path(db_dir) / "arrays").iterdir())


def n_unique_sims(c: dict) -> int:
    return len({r[0] for r in c["simulations"]})


__all__ = [
    "RESOLUTION_MM",
    "RULE",
    "GLIOFIT",
    "cli_build_args",
    "content",
    "assert_same_content",
    "shard_files",
    "n_unique_sims",
    "np",
]
