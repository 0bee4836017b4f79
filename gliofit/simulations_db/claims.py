"""Who builds what: build runs, work claims, dead-claim recovery and shard garbage collection.

Every build command registers a row in ``build_runs`` (host, pid) and keeps
its ``heartbeat_at`` fresh from a thread. It claims pending simulations in
batches with one conditional ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE
SKIP LOCKED)`` (PostgreSQL) — on SQLite the statement is atomic by itself —
stamping them with its run id and a fresh claim token. A run is dead when it
finished, when its heartbeat is older than :data:`LEASE_S`, or when it ran on
this host and its process is gone; its claims go back to ``pending``.

A worker's commit (:mod:`.worker`) succeeds only while its token still holds
the claim, so a claimer presumed dead that wakes up cannot duplicate work.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import numpy as np
from sqlalchemy import Engine, func, insert, select, update

from gliofit.simulations_db.schema import build_runs_t, entries_t, simulations_t

__all__ = [
    "LEASE_S",
    "register_run",
    "finish_run",
    "Heartbeat",
    "ensure_simulations",
    "release_dead_claims",
    "claim_batch",
    "collect_garbage",
    "status_counts",
]

LEASE_S = 120.0
"""A run whose heartbeat is older than this (seconds) is presumed dead."""
HEARTBEAT_S = 10.0


def register_run(engine: Engine, n_target: int, executor: str) -> int:
    """Insert this process's build run; returns its id."""
    now = time.time()
    with engine.begin() as conn:
        res = conn.execute(
            insert(build_runs_t).values(
                host=socket.gethostname(),
                pid=os.getpid(),
                started_at=now,
                heartbeat_at=now,
                n_target=int(n_target),
                executor=executor[:255],
                status="running",
                simulations_done=0,
            )
        )
        return int(res.inserted_primary_key[0])


def finish_run(engine: Engine, run_id: int, status: str, done: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(build_runs_t)
            .where(build_runs_t.c.id == run_id)
            .values(status=status, finished_at=time.time(), heartbeat_at=time.time(), simulations_done=int(done))
        )


class Heartbeat:
    """Context manager: refresh ``build_runs.heartbeat_at`` every few seconds from a daemon thread."""

    def __init__(self, engine: Engine, run_id: int, every_s: float = HEARTBEAT_S) -> None:
        self.engine, self.run_id, self.every_s = engine, run_id, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gliofit-heartbeat", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        update(build_runs_t).where(build_runs_t.c.id == self.run_id).values(heartbeat_at=time.time())
                    )
            except Exception:  # noqa: BLE001 - a missed beat is retried; the lease is generous
                pass

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def ensure_simulations(engine: Engine, rows_for, n: int, chunk: int = 2000) -> int:
    """Insert the missing design indices ``0 .. n-1`` as pending rows; returns how many were inserted.

    ``rows_for(indices (m,) int64) -> list of dict`` gives their parameter columns. Inserts
    are ``ON CONFLICT DO NOTHING`` so concurrent builders may both try.
    """
    with engine.connect() as conn:
        have = np.array(
            conn.execute(select(simulations_t.c.id).where(simulations_t.c.id < n)).scalars().all(), dtype=np.int64
        )
    missing = np.setdiff1d(np.arange(n, dtype=np.int64), have)
    inserted = 0
    for start in range(0, len(missing), chunk):
        rows = rows_for(missing[start : start + chunk])
        with engine.begin() as conn:
            stmt = _insert_ignore(engine).values(rows)
            inserted += conn.execute(stmt).rowcount or 0
    return inserted


def _insert_ignore(engine: Engine):
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(simulations_t).on_conflict_do_nothing(index_elements=["id"])
    if engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(simulations_t).on_conflict_do_nothing(index_elements=["id"])
    return insert(simulations_t).prefix_with("IGNORE")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead
    except OSError:
        return True


def release_dead_claims(engine: Engine) -> int:
    """Mark dead runs, return their claimed simulations to ``pending``; returns how many were released."""
    now, host = time.time(), socket.gethostname()
    with engine.begin() as conn:
        running = conn.execute(
            select(build_runs_t.c.id, build_runs_t.c.host, build_runs_t.c.pid, build_runs_t.c.heartbeat_at).where(
                build_runs_t.c.status == "running"
            )
        ).all()
        dead = [
            r.id
            for r in running
            if r.heartbeat_at < now - LEASE_S or (r.host == host and r.pid != os.getpid() and not _pid_alive(r.pid))
        ]
        if dead:
            conn.execute(update(build_runs_t).where(build_runs_t.c.id.in_(dead)).values(status="dead", finished_at=now))
        not_running = select(build_runs_t.c.id).where(build_runs_t.c.status != "running")
        res = conn.execute(
            update(simulations_t)
            .where(simulations_t.c.status == "claimed", simulations_t.c.claimed_by.in_(not_running))
            .values(status="pending", claimed_by=None, claim_token=None, claimed_at=None)
        )
        return int(res.rowcount or 0)


def claim_batch(
    engine: Engine, run_id: int, n_target: int, batch_size: int, attempts: int = 20
) -> tuple[str, list] | None:
    """Claim up to ``batch_size`` pending simulations with id < n_target; (token, rows) or None.

    One transaction: ``SELECT id ... FOR UPDATE SKIP LOCKED`` (PostgreSQL; plain on SQLite), then
    ``UPDATE ... WHERE id IN (those) AND status = 'pending'``. (A single UPDATE with the
    SELECT as subquery may claim more than ``batch_size`` rows on PostgreSQL: the planner can
    run the sub-select more than once.) If a concurrent claimer won every selected row, try again.
    """
    token = uuid.uuid4().hex
    pick = (
        select(simulations_t.c.id)
        .where(simulations_t.c.status == "pending", simulations_t.c.id < n_target)
        .order_by(simulations_t.c.id)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    for _ in range(attempts):
        with engine.begin() as conn:
            ids = conn.execute(pick).scalars().all()
            if not ids:
                return None
            conn.execute(
                update(simulations_t)
                .where(simulations_t.c.id.in_(ids), simulations_t.c.status == "pending")
                .values(status="claimed", claimed_by=run_id, claim_token=token, claimed_at=time.time())
            )
            rows = (
                conn.execute(
                    select(simulations_t).where(simulations_t.c.claim_token == token).order_by(simulations_t.c.id)
                )
                .mappings()
                .all()
            )
        if rows:
            return token, [dict(r) for r in rows]
    return None


def collect_garbage(engine: Engine, arrays_dir) -> list[str]:
    """Delete shard files no committed entry references and no live claim may still commit.

    Order matters: list files, then read the live claim tokens, then the referenced shards
    (a shard committed in between is then seen as referenced).
    """
    names = sorted(p.name for p in arrays_dir.iterdir() if p.is_file())
    with engine.connect() as conn:
        live = set(
            conn.execute(select(simulations_t.c.claim_token).where(simulations_t.c.status == "claimed")).scalars().all()
        )
    with engine.connect() as conn:
        referenced = set(conn.execute(select(entries_t.c.shard).distinct()).scalars().all())
    removed = []
    for name in names:
        if name in referenced or name.split(".", 1)[0] in live:
            continue
        (arrays_dir / name).unlink(missing_ok=True)
        removed.append(name)
    return removed


def status_counts(engine: Engine, n_target: int | None = None) -> dict[str, int]:
    """Simulations per status (restricted to id < n_target when given)."""
    q = select(simulations_t.c.status, func.count()).group_by(simulations_t.c.status)
    if n_target is not None:
        q = q.where(simulations_t.c.id < n_target)
    with engine.connect() as conn:
        return {s: int(c) for s, c in conn.execute(q).all()}
