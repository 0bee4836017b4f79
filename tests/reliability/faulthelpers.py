"""Helpers of the reliability tests: a tiny database, a size-limited or read-only mount, leftovers, content."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from gliofit.common.nifti import save_volume
from gliofit.simulations_db.database import open_database
from gliofit.simulations_db.design import SnapshotRule
from gliofit.simulations_db.schema import simulations_t

GLIOFIT = str(Path(sys.executable).with_name("gliofit"))
"""The console script next to this interpreter."""
RESOLUTION_MM = 6.0
RULE = SnapshotRule(count=4, t_max_days=300.0)
N_SIMULATIONS = 20
LEFTOVER_MARKS = (".tmp", ".part")
"""Name fragments of the temporary files and folders gliofit writes before a rename."""


def build_args(db: Path, n: int = N_SIMULATIONS, *extra: str) -> list[str]:
    """``gliofit db build`` arguments of the tiny database (6 mm, 4 snapshots up to 300 days)."""
    return [
        GLIOFIT,
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


def gliofit(*args: str, timeout_s: float = 600.0, **kw) -> subprocess.CompletedProcess:
    """Run the console script; stdout/stderr captured as text."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([GLIOFIT, *args], capture_output=True, text=True, timeout=timeout_s, env=env, **kw)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """The single stderr line of a failed command (asserts there is exactly one)."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def _mount(args: list[str]) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def small_filesystem(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` ("300k", "2m") mounted at ``where``; skips the test when mounting is not permitted."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        _mount(["-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)])
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a size-limited tmpfs here (needs root or CAP_SYS_ADMIN): {exc}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def grow_filesystem(where: Path, size: str) -> None:
    """Give a mounted :func:`small_filesystem` more room (space freed)."""
    _mount(["-o", f"remount,size={size}", str(where)])


@contextlib.contextmanager
def read_only_view(source: Path, where: Path) -> Iterator[Path]:
    """``source`` bind-mounted read-only at ``where``; skips the test when mounting is not permitted."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        _mount(["--bind", str(source), str(where)])
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot bind-mount here (needs root or CAP_SYS_ADMIN): {exc}")
    try:
        _mount(["-o", "remount,ro,bind", str(where)])
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def leftovers(root: Path) -> list[str]:
    """Temporary files or folders under ``root`` that a finished or failed command must not leave."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if any(m in p.name for m in LEFTOVER_MARKS))


def tree_bytes(root: Path) -> int:
    """Bytes of all regular files under ``root``."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink())


def entry_segmentation(db_dir: Path, out: Path, entry: int = 7) -> Path:
    """A BraTS 2023 label map on the database grid from one entry (edema >= 0.25, enhancing >= 0.675)."""
    db = open_database(db_dir)
    try:
        u = db.density(int(db.entries["id"][entry]))
        labels = np.where(u >= 0.675, 3, np.where(u >= 0.25, 2, 0)).astype(np.uint8)
        return save_volume(labels, db.grid.affine, out, dtype=np.uint8)
    finally:
        db.close()


def db_content(db_dir: Path, database_url: str | None = None) -> dict:
    """What two builds of one design must share: simulation rows, entry rows and array bytes (as checksums)."""
    import zlib

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
                ).order_by(simulations_t.c.id)
            ).all()
        crops = db.read_entries(e["id"])
        return {
            "simulations": [tuple(r) for r in sims],
            "entries": {
                int(i): (int(s), float(t), tuple(int(v) for v in b), int(k))
                for i, s, t, b, k in zip(e["id"], e["simulation_id"], e["T_days"], e["bbox"], e["crc32"])
            },
            "arrays": {int(i): zlib.crc32(crop.tobytes()) for i, (_, crop) in zip(e["id"], crops)},
        }
    finally:
        db.close()


def session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid`` (a command started with ``start_new_session``)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return sorted(pids)


def done_simulations(db: Path) -> int:
    """Simulations committed as done in a SQLite database (0 while it does not exist yet)."""
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db / 'gliofit.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM simulations WHERE status = 'done'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def wait_until(condition, timeout_s: float, step_s: float = 0.05) -> bool:
    """Poll ``condition()`` until true or ``timeout_s`` passed; returns its last value."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return bool(condition())


def kill_session(sid: int) -> None:
    """SIGKILL whatever is left of session ``sid`` (test clean-up)."""
    import signal

    try:
        os.killpg(sid, signal.SIGKILL)
    except ProcessLookupError:
        pass
