"""Clinical input and output: ``gliofit import-dicom``, ``gliofit preprocess`` and ``gliofit predict-gbm``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gliofit.cli.errors import cli_errors

__all__ = ["import_dicom"]


@cli_errors
def import_dicom(
    study_dir: Path = typer.Argument(..., help="Folder of DICOM files of one patient's study (any depth, any names)."),
    output: Path = typer.Option(..., "-o", "--output", help="Patient folder to write; its name is the case name "
                                "(use your own ID or a hash: nothing is taken from the headers)."),
    series: Path = typer.Option(None, "--series", help="JSON map of modalities to series, e.g. {\"flair\": 7} "
                                "(series number, SeriesInstanceUID or exact description)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Convert a DICOM MR study into a BraTS 2023 patient folder (T1, T1c, T2, FLAIR) with import.json.

    Modalities are named from the headers by the rule table of docs/clinical.md; localisers, derived,
    duplicate and unrecognised series and unreadable files are skipped and listed (on stderr and in
    import.json). A missing or ambiguous modality ends with exit 2 naming the candidates.
    Prints one JSON line: the series chosen per modality and what was skipped.
    """
    from gliofit.pipelines.dicom_import import import_dicom as run_import

    rec = run_import(study_dir, output, series_map=series, progress=not no_progress)
    for item in rec["skipped_files"]:
        typer.echo(f"gliofit: warning: skipped file {item['file']}: {item['reason']}", err=True)
    for item in rec["skipped_series"]:
        typer.echo(f"gliofit: note: skipped {item['what']}: {item['reason']}", err=True)
    typer.echo(json.dumps({"output": str(output),
                           "series": {m: {"series_number": r["series_number"], "description": r["description"],
                                          "rule": r["rule"], "shape": r["shape"]} for m, r in rec["series"].items()},
                           "skipped_series": len(rec["skipped_series"]), "skipped_files": len(rec["skipped_files"])}))
