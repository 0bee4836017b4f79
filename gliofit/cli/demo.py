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
    cache: Path = typer.Option(
        None,
        "--cache",
        help="Where the demo database and patient are kept (default $GLIOFIT_CACHE or ~/.cache/gliofit).",
    ),
    simulations: int = typer.Option(None, "--simulations", hidden=True, help="Demo database size (tests)."),
    resolution: float = typer.Option(None, "--resolution", hidden=True, help="Demo database grid, mm (tests)."),
    patient_resolution: float = typer.Option(
        1.0, "--patient-resolution", hidden=True, help="Patient growth grid, mm (tests)."
    ),
    registration: str = typer.Option(
        "syn", "--registration", help="syn, affine or none (the phantom lies on the atlas grid)."
    ),
    no_progress: bool = typer.Option(False, "--no-progress", hidden=True, help="No progress bars."),
) -> None:
    """Build (once, cached) a small database and a phantom patient with known parameters, run the pipeline.

    The first run builds the database (minutes); later runs reuse it.
    Prints true against recovered parameters and the Dice on stderr, a JSON summary on stdout, and writes
    OUT/ as `gliofit run` does (result.json, report.png/html, densities, target volumes), plus truth.json.
    """
    from gliofit.pipelines.demo import DEMO_RESOLUTION_MM, demo_simulations, run_demo

    summary = run_demo(
        output,
        cache=cache,
        simulations=simulations or demo_simulations(),
        resolution_mm=resolution or DEMO_RESOLUTION_MM,
        patient_resolution_mm=patient_resolution,
        registration=registration,
        progress=not no_progress,
        echo=lambda line: typer.echo(line, err=True),
    )
    typer.echo(json.dumps(summary, indent=2))
