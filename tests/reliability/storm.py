"""Kill storms: a command started again and again, each start SIGKILLed at a random moment (seeded).

Used by tests/reliability/test_kill_storm.py and benchmarks/faults.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from faulthelpers import done_simulations, kill_session, session_processes, wait_until


@dataclass
class StormReport:
    """What a storm did: kills injected, starts that finished on their own, processes left alive."""

    injected: int = 0
    finished_early: int = 0
    index_kills: int = 0
    worker_kills: int = 0
    leaked_processes: int = 0
    moments: list[str] = field(default_factory=list)


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )


def _kill_and_count_leaks(proc: subprocess.Popen, report: StormReport) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if not wait_until(lambda: session_processes(proc.pid) == [], 15.0):
        report.leaked_processes += len(session_processes(proc.pid))
    kill_session(proc.pid)


def build_storm(
    db: Path, n: int, args: list[str], kills: int, seed: int, index_share: float = 0.25, timeout_s: float = 300.0
) -> StormReport:
    """Start ``args`` (a ``db build`` of ``n`` simulations into ``db``) ``kills`` times; SIGKILL each start
    when a random number of further simulations is committed, or (share ``index_share`` once half are
    committed, and always once all are) when all are and the index is being rebuilt."""
    rng = np.random.default_rng(seed)
    report = StormReport()
    for _ in range(kills):
        before = done_simulations(db)
        at_index = before >= n or (before >= n // 2 and rng.random() < index_share)
        target = n if at_index else min(n, before + int(rng.integers(0, 4)))
        delay_s = float(rng.uniform(0.0, 0.6 if at_index else 0.3))
        proc = _start(args)
        wait_until(lambda: done_simulations(db) >= target or proc.poll() is not None, timeout_s, 0.02)  # noqa: B023 - called here
        time.sleep(delay_s)
        if proc.poll() is not None:
            report.finished_early += 1
            continue
        _kill_and_count_leaks(proc, report)
        report.injected += 1
        report.index_kills += at_index
        report.moments.append(f"{'index' if at_index else 'build'}@{done_simulations(db)}+{delay_s:.2f}s")
    return report


def _workers(sid: int, parent: int) -> list[int]:
    """Pool workers of session ``sid``: processes whose parent is not the session leader."""
    out = []
    for pid in session_processes(sid):
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if pid != parent and ppid != parent:
            out.append(pid)
    return out


def cohort_storm(
    out: Path,
    args: list[str],
    kills: int,
    seed: int,
    worker_share: float = 0.4,
    timeout_s: float = 600.0,
    max_delay_s: float = 6.0,
) -> StormReport:
    """Start ``args`` (a ``cohort`` writing ``out``) ``kills`` times; each start is SIGKILLed (its parent, or
    with share ``worker_share`` one pool worker and then the parent) a random time of up to ``max_delay_s``
    after a patient began (a start that finishes first is counted as ``finished_early``)."""
    rng = np.random.default_rng(seed)
    report = StormReport()
    for _ in range(kills):
        kill_worker = rng.random() < worker_share
        delay_s = float(rng.uniform(0.0, max_delay_s))
        proc = _start(args)
        wait_until(lambda: any(out.glob(".*.part-*")) or proc.poll() is not None, timeout_s, 0.05)  # noqa: B023 - called here
        time.sleep(delay_s)
        if proc.poll() is not None:
            report.finished_early += 1
            continue
        if kill_worker and (victims := _workers(proc.pid, proc.pid)):
            os.kill(int(rng.choice(victims)), signal.SIGKILL)
            report.worker_kills += 1
            report.injected += 1
            time.sleep(float(rng.uniform(1.0, 4.0)))
            if proc.poll() is not None:
                continue
        _kill_and_count_leaks(proc, report)
        report.injected += 1
        report.moments.append(f"{'worker+' if kill_worker else ''}parent@{len(list(out.glob('*/result.json')))}")
    return report
