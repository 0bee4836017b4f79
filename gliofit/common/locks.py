"""One run at a time per output: an exclusive lock file that the kernel releases when its holder dies.

>>> with exclusive_lock("OUT/.gliofit.lock", "cohort OUT"):     # doctest: +SKIP
...     ...                                                      # a second start exits 2 naming this holder

The lock is ``fcntl.flock`` on the file, so a holder killed by SIGKILL leaves no
stale lock: the next start takes it over. The file records the holder (pid,
host, command, start time) for the message the second start prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gliofit.common.errors import InputError

__all__ = ["exclusive_lock", "lock_holder"]


def lock_holder(path: str | Path) -> dict:
    """What the lock file at ``path`` says about its holder (empty when unreadable)."""
    try:
        return json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


@contextmanager
def exclusive_lock(path: str | Path, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` (created) for the ``with`` block.

    Raises
    ------
    InputError
        Another live process holds it: the message names ``what`` and the holder's pid, host and start.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            h = lock_holder(p)
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["started"])) if "started" in h else "?"
            raise InputError(
                f"{what} is in use by another gliofit run (pid {h.get('pid', '?')} on "
                f"{h.get('host', '?')}, started {since}; lock {p})"
            ) from None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": " ".join(sys.argv[:6]),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield p
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a waiting start)
