"""Clinical input and output: ``gliofit import-dicom``, ``gliofit preprocess`` and ``gliofit predict-gbm``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gliofit.cli.errors import cli_errors

__all__ = ["import_dicom", "preprocess", "predict_gbm"]


@cli_errors
def import_dicom(
    study_dir: Path = typer.Argument(..., help="Folder of DICOM files of one patient's study (any depth, any names)."),
    output: Path = typer.Option(
        ...,
        "-o",
        "--output",
        help="Patient folder to write; its name is the case name "
        "(use your own ID or a hash: nothing is taken from the headers).",
    ),
    series: Path = typer.Option(
        None,
        "--series",
        help='JSON map of modalities to series, e.g. {"flair": 7} '
        "(series number, SeriesInstanceUID or exact description).",
    ),
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
    typer.echo(
        json.dumps(
            {
                "output": str(output),
                "series": {
                    m: {
                        "series_number": r["series_number"],
                        "description": r["description"],
                        "rule": r["rule"],
                        "shape": r["shape"],
                    }
                    for m, r in rec["series"].items()
                },
                "skipped_series": len(rec["skipped_series"]),
                "skipped_files": len(rec["skipped_files"]),
            }
        )
    )


@cli_errors
def preprocess(
    patient_dir: Path = typer.Argument(..., help="Patient folder (BraTS layout, e.g. from import-dicom)."),
    output: Path = typer.Option(
        ...,
        "-o",
        "--output",
        help="Output patient folder (BraTS 2023 layout; its name is the case name; replaced when complete).",
    ),
    spacing_mm: float = typer.Option(1.0, "--spacing-mm", help="Isotropic output spacing, mm."),
    no_n4: bool = typer.Option(False, "--no-n4", help="Skip the N4 bias-field correction."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """RAS, N4, rigid co-registration of T1/T2/FLAIR to T1c, resampling, atlas-based brain mask.

    Writes OUT/<name>-t1n/-t1c/-t2w/-t2f.nii.gz (zero outside the brain), brain_mask.nii.gz,
    transforms/ and preprocess.json (every step, setting and transform). Prints one JSON line.
    """
    from gliofit.common.progress import progress_bar
    from gliofit.pipelines.preprocess import PREPROCESS_STEPS, preprocess as run_preprocess

    with progress_bar(disable=no_progress) as bar:
        task = bar.add_task("preprocess", total=len(PREPROCESS_STEPS))
        rec = run_preprocess(
            patient_dir,
            output,
            spacing_mm=spacing_mm,
            bias_correction=not no_n4,
            on_step=lambda s: bar.update(task, advance=1, description=s),
        )
        bar.update(task, completed=len(PREPROCESS_STEPS), description="preprocess")
    brain = next(s for s in rec["steps"] if s["step"] == "brain_mask")
    typer.echo(
        json.dumps(
            {
                "output": str(output),
                "shape": rec["output_grid"]["shape"],
                "spacing_mm": rec["output_grid"]["spacing_mm"],
                "brain_cm3": brain["volume_cm3"]["refined"],
                "seconds": rec["seconds"],
            }
        )
    )


@cli_errors
def predict_gbm(
    input_dir: Path = typer.Argument(..., help="Folder of Patient-X folders (or one): X-gm/-wm/-csf/-tumorseg.nii.gz."),
    output_dir: Path = typer.Argument(
        ..., help="Output folder: X.nii.gz (tumour-cell density on the input grid) and X.json (the fit) per patient."
    ),
    resolution_mm: float = typer.Option(2.0, "--resolution-mm", help="Simulation grid spacing, mm."),
    budget: int = typer.Option(40, "--budget", help="Forward simulations of the fit per patient."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """The PREDICT-GBM model contract: fit the growth model in each patient's own tissue maps.

    Labels of X-tumorseg: 1 necrosis, 2 edema, 3 enhancing. Resumable (patients with an output are
    skipped). Prints one JSON line per patient: mu_D_mm, mu_rho, Dice of the fit.
    """
    from gliofit.common.progress import progress_bar
    from gliofit.pipelines.predict_gbm import find_predict_patients, predict_gbm as run_predict

    n = len(find_predict_patients(input_dir))
    with progress_bar(disable=no_progress) as bar:
        task = bar.add_task("predict-gbm", total=n)
        records = run_predict(
            input_dir, output_dir, resolution_mm=resolution_mm, budget=budget, on_patient=lambda _x: bar.advance(task)
        )
    for r in records:
        typer.echo(
            json.dumps(
                {
                    "patient": r["patient"],
                    "mu_D_mm": round(r["mu_D_mm"], 4),
                    "mu_rho": round(r["mu_rho"], 4),
                    "dice_mean": round(r["dice_mean"], 4),
                }
            )
        )
