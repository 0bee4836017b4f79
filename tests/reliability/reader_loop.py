"""A reader process: ``python reader_loop.py DB SEG STOP_FILE REPORT.json`` opens the database and runs
``gliofit.infer`` on SEG in a loop until STOP_FILE exists; writes {"ok", "failures", "versions"}."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path


def main(db: str, seg: str, stop: str, report: str) -> None:
    import gliofit
    from gliofit.simulations_db.database import open_database

    ok, failures, versions = 0, [], set()
    while True:
        last = Path(stop).exists()  # one more query after the writer stopped
        try:
            d = open_database(db)
            try:
                versions.add(int(d.index_row()["version"]))
                res = gliofit.infer(d, seg, in_atlas_space=True, top_k=20, refine=False)
                assert 0.0 <= res.fit["dice_mean"] <= 1.0
                ok += 1
            finally:
                d.close()
        except Exception as exc:  # noqa: BLE001 - every failure is the figure this process reports
            failures.append(f"{type(exc).__name__}: {exc} | {traceback.format_exc(limit=3)[-400:]}")
        if last:
            break
    Path(report).write_text(json.dumps({"ok": ok, "failures": failures, "versions": sorted(versions)}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
