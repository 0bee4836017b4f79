"""How the command line reads: usage lines name arguments as users type them, and a wrong
option (missing, unknown, bad value) ends in one line on stderr with exit code 2, like every
other input error."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperArgument, TyperGroup

try:  # typer >= 0.20 carries its own copy of click
    from typer._click import Command
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # older typer builds on click itself
    from click import Command
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError

__all__ = ["OneLineErrorsGroup", "USAGE_ERROR"]

USAGE_ERROR = 2
"""Exit code of a command line that does not parse (the same as for bad input)."""


class _PlainArgument(TyperArgument):
    """An argument shown in usage lines as ``PATIENT_DIR`` (required) or ``[PATIENT_DIR]``."""

    def _usage_display_name(self) -> str:
        name = self.metavar or (self.name or "").upper()
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")


def _plain_arguments(command: Command) -> None:
    """Name every argument of ``command`` and its subcommands in upper case (``DB``, ``PATIENT_DIR``)."""
    for param in command.params:
        if isinstance(param, TyperArgument) and not isinstance(param, _PlainArgument):
            param.__class__ = _PlainArgument
            param.metavar = param.metavar or (param.name or "").upper()
    for sub in getattr(command, "commands", {}).values():
        _plain_arguments(sub)


def _one_line(error: ClickException) -> str:
    ctx = getattr(error, "ctx", None)
    where = ctx.command_path if ctx is not None else "gliofit"
    message = " ".join(error.format_message().split())
    if isinstance(error, UsageError):
        return f"gliofit: error: {message[:1].lower()}{message[1:].rstrip('.')} (see '{where} --help')"
    return f"gliofit: error: {message}"


class OneLineErrorsGroup(TyperGroup):
    """The root command group: plain argument names, one-line usage errors (exit :data:`USAGE_ERROR`)."""

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        _plain_arguments(self)
        try:
            rv = super().main(args, prog_name or "gliofit", complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
        except NoArgsIsHelpError as e:
            e.show()
            code = e.exit_code
        except ClickException as e:
            typer.echo(_one_line(e), err=True)
            code = USAGE_ERROR if isinstance(e, UsageError) else e.exit_code
        except typer.Abort:
            typer.echo("gliofit: error: aborted", err=True)
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code
