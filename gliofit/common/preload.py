"""Importing a module in the background while the command does other work.

``gliofit infer`` draws its report last; matplotlib and the figure code take a few tenths of a second to
import. Imported on a second thread at the start, they load while the main thread reads files, searches
the index and runs the (GIL-free) numba kernels, so on two cores the report no longer waits for them.
An import the main thread reaches first simply waits for the thread's (Python's import lock).
"""

from __future__ import annotations

import importlib
import threading

__all__ = ["preload"]


def preload(*modules: str) -> threading.Thread:
    """Start importing ``modules`` on a daemon thread; returns the thread. An import error is left for the
    main thread's own import to raise."""

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001, S112 - the main thread's import reports it
                continue

    thread = threading.Thread(target=run, name="gliofit-preload", daemon=True)
    thread.start()
    return thread
