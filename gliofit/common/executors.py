"""Where parallel work runs: this process, a local process pool, or an existing Dask cluster.

One place for the choice both the database build and the cohort runner make
(``--workers K`` or ``--scheduler tcp://HOST:PORT``):

>>> ex = make_executor(workers=2)                       # doctest: +SKIP
>>> fut = ex.submit(fn, task)                            # doctest: +SKIP
>>> done = ex.wait_first([fut])                          # doctest: +SKIP
>>> ex.close()                                           # doctest: +SKIP

A submitted function must be importable by name (a module-level function) and
its arguments picklable; with Dask, the workers need gliofit installed.

Local workers die with the process that made the pool: each watches its owner
(:func:`die_with`) and exits the moment the owner ends, even by SIGKILL, so a
killed build or cohort leaves no idle workers behind (the forkserver exits once
its last worker has).
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as cf_wait
from dataclasses import dataclass
from typing import Any

from gliofit.common.errors import InputError

__all__ = ["Executor", "InlineExecutor", "cpu_threads", "die_with", "make_executor"]

_OWNER_POLL_S = 1.0
"""How often a worker checks its owner where the kernel has no process file descriptors (seconds)."""


def cpu_threads() -> int:
    """CPU threads this process computes with: torch's count where torch is loaded (pool workers set it to
    their share), else ``OMP_NUM_THREADS``, else the cores it may run on. Used by the numba kernels that
    split their work over threads (the solver's batch, the resampler's slabs)."""
    torch_mod = sys.modules.get("torch")
    if torch_mod is not None:
        return max(1, int(torch_mod.get_num_threads()))
    env = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, int(env)) if env.isdigit() else max(1, len(os.sched_getaffinity(0)))


def _watch_owner(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd: poll
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            time.sleep(_OWNER_POLL_S)
    select.select([fd], [], [])  # readable when the process has ended
    os._exit(1)


def die_with(pid: int) -> None:
    """Pool-worker initializer: end this process at once when process ``pid`` ends (a daemon thread waits
    on it). The build's commit protocol and the cohort's temporary folders make such an exit safe."""
    threading.Thread(target=_watch_owner, args=(int(pid),), daemon=True, name=f"die-with-{pid}").start()


class InlineExecutor:
    """Runs each task in this process when it is submitted (one worker, no pool)."""

    def submit(self, fn: Callable, *args: Any) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            fut.set_exception(exc)
        return fut

    def shutdown(self, **_: Any) -> None:
        pass


@dataclass
class Executor:
    """A pool with its size.

    Attributes
    ----------
    pool : an :class:`InlineExecutor`, a :class:`~concurrent.futures.ProcessPoolExecutor` or a Dask ``Client``.
    slots : how many tasks run at once.
    description : for progress lines (``inline``, ``local processes x2``, ``dask tcp://...``).
    threads : torch/BLAS threads each task should use (None: leave the process's default).
    is_dask : the pool is a Dask client.
    """

    pool: Any
    slots: int
    description: str
    threads: int | None
    is_dask: bool

    def submit(self, fn: Callable, *args: Any):
        """A future of ``fn(*args)`` (Dask: never cached as pure, each call runs)."""
        return self.pool.submit(fn, *args, pure=False) if self.is_dask else self.pool.submit(fn, *args)

    def wait_first(self, futures: Sequence) -> list:
        """The futures of ``futures`` that are done, waiting until at least one is."""
        if self.is_dask:
            from distributed import wait as dask_wait

            return list(dask_wait(list(futures), return_when="FIRST_COMPLETED").done)
        return list(cf_wait(list(futures), return_when=FIRST_COMPLETED).done)

    def close(self) -> None:
        """Stop the pool (a Dask client disconnects; the cluster keeps running)."""
        if self.is_dask:
            self.pool.close()
        else:
            self.pool.shutdown(cancel_futures=True)


def make_executor(
    workers: int | None = None,
    scheduler: str | None = None,
    *,
    preload: Sequence[str] = (),
    threads_per_task: int | None = 1,
) -> Executor:
    """Choose the pool: Dask at ``scheduler``, else ``workers`` local processes (default: all cores).

    Parameters
    ----------
    workers : local processes; 1 runs every task inline in this process.
    scheduler : a Dask scheduler address; InputError when it does not answer within 10 s.
    preload : modules the local pool's forkserver imports once (faster worker start).
    threads_per_task : threads a pooled task should use (reported in :attr:`Executor.threads`);
        None: all cores shared evenly between the local workers.
    """
    if scheduler:
        try:
            from distributed import Client

            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(f"Dask scheduler {scheduler} does not answer: {exc}") from None
        slots = max(1, sum(client.nthreads().values()))
        return Executor(client, slots, f"dask {scheduler}", threads_per_task or 1, True)
    k = int(workers) if workers else (os.cpu_count() or 1)
    if k < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    if k == 1:
        return Executor(InlineExecutor(), 1, "inline", None, False)
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    if preload:
        ctx.set_forkserver_preload(list(preload))
    threads = threads_per_task if threads_per_task else max(1, (os.cpu_count() or 1) // k)
    pool = ProcessPoolExecutor(max_workers=k, mp_context=ctx, initializer=die_with, initargs=(os.getpid(),))
    return Executor(pool, k, f"local processes x{k}", threads, False)
