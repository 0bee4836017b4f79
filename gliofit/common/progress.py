"""One progress bar style for every long job (rate and ETA), and stage lines for multi-stage jobs; on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["progress_bar", "time_reporter", "StageLines"]


class _Progress(Progress):
    """A Progress that leaves no blank line behind when no task was ever added (work that failed early)."""

    def stop(self) -> None:
        if self.tasks or self.disable:
            super().stop()
            return
        self.live.transient = True
        self.live.stop()


def progress_bar(*, disable: bool = False) -> Progress:
    """A rich :class:`Progress` showing count, percent, elapsed and ETA; use as a context manager."""
    return _Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        disable=disable,
        transient=False,
    )


def time_reporter(bar: Progress, description: str):
    """An ``on_step(t_days, t_end_days)`` callback that adds its task on the first step.

    Adding the task lazily keeps the bar invisible when the work fails
    validation before it starts.
    """
    state: dict = {}

    def on_step(t_days: float, t_end_days: float) -> None:
        if "task" not in state:
            state["task"] = bar.add_task(description, total=round(t_end_days, 3))
        bar.update(state["task"], completed=round(t_days, 3))

    return on_step


class StageLines:
    """Say on a stream (stderr) which stage of a job starts, as it starts: ``gliofit: 0:12 [3/7] registration``.

    Call the object with a stage name whenever work on that stage begins; a repeated name (a stage entered
    again) prints nothing, nor does the first stage (:attr:`unannounced`). The time is the job's elapsed
    m:ss, so consecutive lines give each stage's duration. Stages with a progress bar of their own
    (segmentation, an exhaustive query) show it below their line.

    >>> say = StageLines(("load", "query"), job="P001", stream=sys.stdout)
    >>> say("load")
    >>> say("query")
    gliofit: P001 0:00 [2/2] query
    """

    def __init__(
        self, stages: Sequence[str], *, job: str = "", stream: TextIO | None = None, enabled: bool = True
    ) -> None:
        self.stages = list(stages)
        self.job = job
        self.stream = stream
        self.enabled = enabled
        self._start = time.perf_counter()
        self._current: str | None = None
        self.unannounced = {self.stages[0]} if self.stages else set()
        """Stages shown without a line: the first (reading and checking the input) ends in one error line
        when the input is bad, with no stage line before it."""

    def __call__(self, stage: str) -> None:
        if stage == self._current or not self.enabled:
            return
        self._current = stage
        if stage in self.unannounced:
            return
        m, s = divmod(int(time.perf_counter() - self._start), 60)
        n = f"[{self.stages.index(stage) + 1}/{len(self.stages)}] " if stage in self.stages else ""
        job = f"{self.job} " if self.job else ""
        print(f"gliofit: {job}{m}:{s:02d} {n}{stage}", file=self.stream or sys.stderr, flush=True)
