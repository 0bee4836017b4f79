"""``gliofit demo``: the embedded default, end to end and offline."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gliofit.cli.errors import cli_errors

__all__ = ["demo"]


@cli_errors
def demo(
    output: Path = typer.Option(Path("gliofit-demo"), "-o", "--output", help="Output folder."),
) -> None:
    """Grow a tumour on the default atlas and write its density (NIfTI) and a figure (PNG)."""
    from gliofit.pipelines.demo import run_demo

    summary = run_demo(output)
    typer.echo(json.dumps(summary, indent=2))
