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
    as_json: bool = typer.Option(
        False, "--json", help="Print the JSON summary on stdout (the table then goes to stderr)."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars or stage lines on stderr."),
    simulations: int = typer.Option(None, "--simulations", hidden=True, help="Demo database size (tests)."),
    resolution: float = typer.Option(None, "--resolution", hidden=True, help="Demo database grid, mm (tests)."),
    patient_resolution: float = typer.Option(
        1.0, "--patient-resolution", hidden=True, help="Patient growth grid, mm (tests)."
    ),
    registration: str = typer.Option(
        "syn", "--registration", help="syn, affine or none (the phantom lies on the atlas grid)."
    ),
    no_progress: bool = typer.Option(False, "--no-progress", hidden=True, help="Same as --quiet."),
) -> None:
    """Build (once, cached) a small database and a phantom patient with known parameters, run the pipeline.

    The first run builds the database (minutes); later runs reuse it. Writes OUT/ as `gliofit run` does
    (result.json, report.png/html, densities, target volumes) plus truth.json, then prints a table of true
    against recovered parameters (unit, 95% interval, whether it holds the truth), the Dice, a one-line
    verdict and where the report is.
    """
    from gliofit.common.progress import StageLines
    from gliofit.pipelines.demo import DEMO_RESOLUTION_MM, demo_simulations, run_demo, table_lines
    from gliofit.pipelines.run import STAGES

    quiet = quiet or no_progress
    summary = run_demo(
        output,
        cache=cache,
        simulations=simulations or demo_simulations(),
        resolution_mm=resolution or DEMO_RESOLUTION_MM,
        patient_resolution_mm=patient_resolution,
        registration=registration,
        progress=not quiet,
        on_stage=None if quiet else StageLines(STAGES[:-1], job="demo"),
    )
    for w in summary["warnings"]:
        typer.echo(f"gliofit: warning: {output}: {w}", err=True)
    truth = json.loads((output / "truth.json").read_text())
    result = json.loads((output / "result.json").read_text())
    lines = table_lines(truth, result) + [
        f"report: {(output / 'report.html').resolve()} (open it in a browser)",
        f"result: {(output / 'result.json').resolve()}",
    ]
    for line in lines:
        typer.echo(line, err=as_json)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
