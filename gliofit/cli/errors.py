"""How every command reports failure: one line, exit 2 for bad input, 1 otherwise."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

import typer

from gliofit.common.errors import InputError, storage_error

__all__ = ["cli_errors", "set_debug", "fail"]

_STATE = {"debug": False}
_WRITTEN = ("output", "out_dir", "db")
"""Command parameters naming the place a command writes, in order of preference."""
F = TypeVar("F", bound=Callable)


def set_debug(on: bool) -> None:
    _STATE["debug"] = on


def fail(message: str, code: int = 2) -> None:
    """Print ``gliofit: error: message`` on stderr and exit with ``code``."""
    typer.echo(f"gliofit: error: {message}", err=True)
    raise typer.Exit(code)


def cli_errors(func: F) -> F:
    """Decorate a command: InputError/ValueError/TypeError/OSError and a full, over-quota or read-only disk
    -> exit 2; others -> exit 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except (InputError, ValueError, TypeError, FileNotFoundError, IsADirectoryError,
                NotADirectoryError, PermissionError) as exc:
            if _STATE["debug"]:
                raise
            fail(" ".join(str(exc).split()) or type(exc).__name__, 2)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as exc:  # noqa: BLE001 - the one place that turns crashes into exit 1
            if _STATE["debug"]:
                raise
            full = storage_error(exc, next((kwargs[k] for k in _WRITTEN if kwargs.get(k) is not None), None))
            if full is not None:
                fail(str(full), 2)
            print(f"gliofit: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                  file=sys.stderr)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
