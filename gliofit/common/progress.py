"""One progress bar style for every long job (rate and ETA), on stderr."""

from __future__ import annotations

import sys

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

__all__ = ["progress_bar", "time_reporter"]


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
