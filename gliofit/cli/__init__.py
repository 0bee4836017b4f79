"""The ``gliofit`` command: one Typer app, one small module of commands per part.

Each command parses, calls one library function and formats; heavy libraries
(torch, FAISS, nnU-Net) are imported inside commands so ``--help`` is instant.
Bad input ends in one line on stderr and exit code 2; an internal failure in
one line and exit code 1 (the traceback with ``--debug``).
"""

from __future__ import annotations

import typer

from gliofit.cli import database, demo, inverse, pipelines, planning, seg_training, segmentation, simulations
from gliofit.cli.errors import set_debug

__all__ = ["app", "main"]

app = typer.Typer(
    name="gliofit",
    help="Personalise a brain-tumour growth model for a patient in seconds.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    set_debug(debug)


app.add_typer(simulations.atlas_app, name="atlas")
app.command("simulate")(simulations.simulate)
app.command("demo")(demo.demo)
app.add_typer(database.db_app, name="db")
app.add_typer(seg_training.seg_app, name="seg")
app.command("phantom")(seg_training.phantom)
app.command("segment")(segmentation.segment)
app.command("infer")(inverse.infer)
app.command("run")(pipelines.run)
app.command("cohort")(pipelines.cohort)
app.command("plan")(planning.plan)


def main() -> None:
    """Console-script entry point."""
    app()
