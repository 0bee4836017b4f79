"""One stopwatch for the seconds each stage of a job takes (``timings_s`` in result.json).

>>> watch = Stopwatch(("load", "query"))
>>> with watch.stage("load"):
...     pass
>>> sorted(watch.timings())
['load', 'query', 'total']
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

__all__ = ["Stopwatch"]


class Stopwatch:
    """Seconds per named stage and in total, all read from one monotonic clock.

    The total runs from construction to the call of :meth:`timings`; stages
    not entered read 0.
    """

    def __init__(self, stages: Iterable[str] = (), on_stage: Callable[[str], None] | None = None) -> None:
        self._start = time.perf_counter()
        self.seconds: dict[str, float] = dict.fromkeys(stages, 0.0)
        self.on_stage = on_stage
        """Called with a stage's name as work on it begins (e.g. a line on stderr); None: silent."""

    def announce(self, name: str) -> None:
        """Tell :attr:`on_stage` that work on stage ``name`` begins (done by :meth:`stage` itself)."""
        if self.on_stage is not None:
            self.on_stage(name)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the seconds the ``with`` block takes (also when it raises) to stage ``name``."""
        self.announce(name)
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t)

    def add(self, name: str, seconds: float) -> None:
        """Add seconds measured elsewhere (by a called library function) to stage ``name``."""
        self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)

    def elapsed(self) -> float:
        """Seconds since the stopwatch started."""
        return time.perf_counter() - self._start

    def timings(self, ndigits: int | None = None) -> dict[str, float]:
        """``{stage: seconds, ..., "total": seconds so far}``, rounded to ``ndigits`` when given."""
        out = dict(self.seconds, total=self.elapsed())
        return out if ndigits is None else {k: round(v, ndigits) for k, v in out.items()}
