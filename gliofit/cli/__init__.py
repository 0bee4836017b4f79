"""The ``gliofit`` command: one Typer app, one small module of commands per part.

Each command parses, calls one library function and formats; heavy libraries
(torch, FAISS, nnU-Net) are imported inside commands so ``--help`` is instant.
Bad input (a wrong option included) ends in one line on stderr and exit code 2;
an internal failure in one line and exit code 1 (the traceback with ``--debug``).
"""

from __future__ import annotations

import logging
import os

import typer

from gliofit.cli import (
    clinical,
    database,
    demo,
    inverse,
    models,
    pipelines,
    planning,
    seg_training,
    segmentation,
    simulations,
)
from gliofit.cli.errors import set_debug
from gliofit.cli.usage import OneLineErrorsGroup

__all__ = ["app", "main"]

# torch logs "No CUDA runtime is found" when it looks for a CUDA toolkit on a machine without a GPU.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
# Figures are written to files: no display backend (a notebook, not the CLI, keeps its own).
os.environ.setdefault("MPLBACKEND", "Agg")

app = typer.Typer(
    name="gliofit",
    cls=OneLineErrorsGroup,
    help="Personalise a brain-tumour growth model for a patient in seconds.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from gliofit import __version__

        typer.echo(f"gliofit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    set_debug(debug)


app.add_typer(simulations.atlas_app, name="atlas")
app.command("simulate")(simulations.simulate)
app.command("demo")(demo.demo)
app.add_typer(database.db_app, name="db")
app.add_typer(seg_training.seg_app, name="seg")
app.command("phantom")(seg_training.phantom)
app.command("segment")(segmentation.segment)
app.add_typer(models.models_app, name="models")
app.command("infer")(inverse.infer)
app.command("run")(pipelines.run)
app.command("cohort")(pipelines.cohort)
app.command("plan")(planning.plan)
app.command("import-dicom")(clinical.import_dicom)
app.command("preprocess")(clinical.preprocess)
app.command("predict-gbm")(clinical.predict_gbm)


def main() -> None:
    """Console-script entry point."""
    app()
