"""The one error type for bad user input, and small validators that raise it.

Messages name files and Python parameters (``top_k must be >= 1``), never
command-line flags: the command line maps a parameter to its flag
(:mod:`gliofit.cli.errors`) and turns an :class:`InputError` into one line on
stderr and exit code 2.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "InputError",
    "check_positive",
    "check_in_range",
    "check_file",
    "check_vector",
    "StorageError",
    "storage_error",
]


class InputError(ValueError):
    """Bad input from the user: a message naming the file or argument and the problem.

    ``parameter`` is the Python parameter (or a tuple of them) the message is
    about, named in the message as in Python, so the command line can name its
    flag instead.

    >>> str(InputError("top_k must be >= 1, got 0", parameter="top_k"))
    'top_k must be >= 1, got 0'
    """

    def __init__(self, message: str, *, parameter: str | tuple[str, ...] | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter

    def __reduce__(self):  # keep ``parameter`` across process pools
        return _rebuild_input_error, (str(self), self.parameter)


def _rebuild_input_error(message: str, parameter: str | tuple[str, ...] | None) -> InputError:
    return InputError(message, parameter=parameter)


def _parameter(name: str) -> str | None:
    """``name`` when it is a Python parameter name (``top_k``), else None (a description)."""
    return name if name.isidentifier() else None


class StorageError(InputError):
    """The place a command writes to cannot take the data (full, over quota or read-only)."""


_STORAGE_REASONS = {
    errno.ENOSPC: "no space left on",
    errno.EDQUOT: "disk quota exceeded on",
    errno.EROFS: "read-only file system:",
}
_SQLITE_FULL = "database or disk is full"


def storage_error(exc: BaseException, path: str | Path | None) -> StorageError | None:
    """A :class:`StorageError` naming the written path when ``exc`` says the disk is full, over quota
    or read-only (an ``OSError`` or SQLite's "database or disk is full"); None for any other error.

    ``path`` is named when the error carries no file name of its own.
    """
    for e in (exc, exc.__cause__, getattr(exc, "orig", None)):
        if isinstance(e, OSError) and e.errno in _STORAGE_REASONS:
            return StorageError(f"{_STORAGE_REASONS[e.errno]} {e.filename or path}")
        text = str(e) if e is not None else ""
        if _SQLITE_FULL in text:
            return StorageError(f"no space left on {path}")
        for code, reason in _STORAGE_REASONS.items():
            if os.strerror(code) in text:  # native libraries (FAISS, SQLite) report the C library's words
                return StorageError(f"{reason} {path}")
    return None


def check_positive(value: float, name: str) -> float:
    """Return ``float(value)`` or raise :class:`InputError` unless it is finite and > 0."""
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"{name} must be a positive number, got {value!r}", parameter=_parameter(name))
    return v


def check_in_range(value: float, name: str, low: float, high: float) -> float:
    """Return ``float(value)`` or raise unless ``low <= value <= high``."""
    v = float(value)
    if not (math.isfinite(v) and low <= v <= high):
        raise InputError(f"{name} must lie in [{low}, {high}], got {value!r}", parameter=_parameter(name))
    return v


def check_file(path: str | Path, what: str = "file") -> Path:
    """Return ``Path(path)`` or raise unless it names an existing regular file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: {what} does not exist")
    if not p.is_file():
        raise InputError(f"{p}: {what} is not a regular file")
    return p


def check_vector(values: Sequence[float], name: str, length: int) -> tuple[float, ...]:
    """Return a tuple of ``length`` finite floats or raise naming ``name``."""
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be {length} numbers, got {values!r}", parameter=_parameter(name)) from None
    if len(out) != length or not all(math.isfinite(v) for v in out):
        raise InputError(f"{name} must be {length} finite numbers, got {values!r}", parameter=_parameter(name))
    return out
