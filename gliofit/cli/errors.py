"""How every command reports failure: one line on stderr; exit 2 for bad input, 1 otherwise.

Bad input is an :class:`~gliofit.common.errors.InputError` (or a file the user named that cannot be
read or written); its message names Python parameters, which appear here as the command's flags.
Anything else is an internal error: exit 1, with the traceback under ``--debug``. A missing optional
dependency names the extra that installs it.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from typing import TypeVar

import typer

from gliofit.common.errors import InputError, storage_error

__all__ = ["cli_errors", "set_debug", "fail", "flag_of", "install_hint"]

_STATE = {"debug": False}
_WRITTEN = ("output", "out_dir", "db")
"""Command parameters naming the place a command writes, in order of preference."""
F = TypeVar("F", bound=Callable)

FLAGS = {
    "n_simulations": "--simulations",
    "thresholds_search": "--no-threshold-search",
    "D_mm2_per_day": "--D",
    "rho_per_day": "--rho",
    "T_days": "--T",
    "origin_mm": "--origin",
    "resolution_mm": "--resolution",
    "core": "--core",
}
"""Library parameters whose flag is not ``--`` + the name with dashes."""

EXTRAS = {
    "sqlalchemy": "database",
    "faiss": "database",
    "dask": "database",
    "distributed": "database",
    "psycopg": "postgres",
    "nnunetv2": "segmentation",
    "monai": "segmentation",
    "ants": "pipelines",
    "pydicom": "clinical",
    "highdicom": "clinical",
}
"""Top-level module -> the extra of pyproject.toml that installs it."""


def set_debug(on: bool) -> None:
    _STATE["debug"] = on


def fail(message: str, code: int = 2) -> None:
    """Print ``gliofit: error: message`` on stderr and exit with ``code``."""
    typer.echo(f"gliofit: error: {message}", err=True)
    raise typer.Exit(code)


def flag_of(parameter: str) -> str:
    """The command-line flag of a library parameter (``top_k`` -> ``--top-k``)."""
    return FLAGS.get(parameter, "--" + parameter.replace("_", "-"))


def _message(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    parameters = getattr(exc, "parameter", None) or ()
    for p in (parameters,) if isinstance(parameters, str) else parameters:
        text = re.sub(rf"(?<![\w-]){re.escape(p)}\b", flag_of(p), text)
    return text


def install_hint(exc: ModuleNotFoundError) -> str | None:
    """``pip install 'gliofit[EXTRA]'`` for a module an extra provides, else None."""
    extra = EXTRAS.get((exc.name or "").split(".")[0])
    return None if extra is None else f"{exc.name} is not installed: pip install 'gliofit[{extra}]'"


def _database_unreachable(exc: BaseException) -> str | None:
    """One line for a lost or refused SQL connection (a server restarted or down); None for other errors."""
    sa = sys.modules.get("sqlalchemy.exc")
    if sa is None or not isinstance(exc, (sa.OperationalError, sa.InterfaceError)):
        return None
    reason = " ".join(str(getattr(exc, "orig", None) or exc).split("(Background on")[0].split())
    return f"database connection failed: {reason}; run the same command again to resume"


def cli_errors(func: F) -> F:
    """Decorate a command: InputError, unusable user paths and a full, over-quota or read-only disk -> exit 2;
    anything else -> exit 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except (InputError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
            if _STATE["debug"]:
                raise
            fail(_message(exc), 2)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as exc:  # noqa: BLE001 - the one place that turns crashes into exit 1
            if _STATE["debug"]:
                raise
            full = storage_error(exc, next((kwargs[k] for k in _WRITTEN if kwargs.get(k) is not None), None))
            if full is not None:
                fail(str(full), 2)
            hint = install_hint(exc) if isinstance(exc, ModuleNotFoundError) else None
            if hint is not None:
                fail(hint, 1)
            lost = _database_unreachable(exc)
            if lost is not None:
                fail(lost, 1)
            print(
                f"gliofit: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                file=sys.stderr,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
