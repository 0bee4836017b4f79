"""``gliofit run`` (one patient folder end to end) and ``gliofit cohort`` (every folder, resumable)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gliofit.cli.errors import cli_errors

__all__ = ["run", "cohort", "SOME_PATIENTS_FAILED"]

SOME_PATIENTS_FAILED = 3
"""Exit code of ``cohort`` when it finished but at least one patient failed (results.csv says why)."""

# Options both commands take (Typer accepts one OptionInfo as the default of several commands).
_DB = typer.Option(..., "--db", help="Simulation database directory.")
_MODEL = typer.Option(
    None,
    "--model",
    help="STU-Net checkpoint used when a folder holds no segmentation: a file "
    "(gliofit seg train), a name from `gliofit models`, or an https:// URL (downloaded once).",
)
_DEVICE = typer.Option("cpu", "--device", help="Segmentation device: cpu or cuda.")
_PRECISION = typer.Option(
    "auto",
    "--precision",
    help="Segmentation arithmetic: auto (the stock predictor's) or bfloat16 (faster on CPUs with AMX / AVX-512 BF16).",
)
_REGISTRATION = typer.Option(
    "syn", "--registration", help="syn (affine then SyN, default), affine, or none (the MRI is already in atlas space)."
)
_MARGIN = typer.Option(15.0, "--margin-mm", help="Standard plan: margin around the tumour core, mm.")
_TOP_K = typer.Option(200, "--top-k", help="Candidates taken from the index.")


def _model_file(model: str | None) -> Path | None:
    """The checkpoint file a ``--model`` value names (downloaded into the user cache when needed)."""
    from gliofit.segmentation.registry import resolve_model

    return None if model is None else resolve_model(model)


@cli_errors
def run(
    patient_dir: Path = typer.Argument(..., help="Patient folder (BraTS 2021 or 2023 layout)."),
    db: Path = _DB,
    output: Path = typer.Option(..., "-o", "--output", help="Output folder (replaced when complete)."),
    model: str = _MODEL,
    device: str = _DEVICE,
    precision: str = _PRECISION,
    registration: str = _REGISTRATION,
    margin_mm: float = _MARGIN,
    top_k: int = _TOP_K,
    refine: bool = typer.Option(
        True, "--refine/--no-refine", help="Refine the best match with the forward solver (default on)."
    ),
    refine_budget: int = typer.Option(None, "--refine-budget", help="Forward runs of the refinement (default 48)."),
    quiet: bool = typer.Option(
        False,
        "--quiet",
        help="No stage lines or progress bars on stderr (warnings and "
        "errors only); the JSON summary still goes to stdout.",
    ),
    dicom_out: bool = typer.Option(
        False,
        "--dicom-out",
        help="Also write rtstruct.dcm and seg.dcm on the T1c "
        "series the folder was imported from (import-dicom / preprocess records).",
    ),
) -> None:
    """Segment (unless a segmentation is given), register, infer, plan and report one patient.

    Writes OUT/: result.json (timings of every stage), segmentation.nii.gz, tumor_density.nii.gz (patient
    grid), tumor_density_atlas.nii.gz, target_standard/target_model.nii.gz, plan.json, brain_mask.nii.gz,
    transforms/, report.png and report.html (with --dicom-out also rtstruct.dcm and seg.dcm). A folder from
    import-dicom that was not preprocessed is preprocessed first (OUT/preprocessed/). Prints a one-line JSON
    summary.
    """
    from gliofit.common.errors import check_positive
    from gliofit.common.progress import StageLines
    from gliofit.inverse.api import check_refine
    from gliofit.pipelines.run import STAGES, output_folder_ready, run_patient

    check_refine(refine, refine_budget)
    output_folder_ready(output)
    check_positive(margin_mm, "--margin-mm")
    t1c_series = None
    if dicom_out:
        from gliofit.pipelines.dicom_import import source_series

        t1c_series = source_series(patient_dir, "t1c")  # before the run: a missing record fails fast
    res = run_patient(
        patient_dir,
        db,
        output,
        model=_model_file(model),
        device=device,
        precision=precision,
        registration=registration,
        top_k=top_k,
        refine=refine,
        refine_budget=refine_budget,
        margin_mm=margin_mm,
        on_stage=None if quiet else StageLines(STAGES[:-1], job=patient_dir.name),
    )
    if t1c_series is not None:
        from gliofit.pipelines.dicom_rt import export_plan

        export_plan(
            output,
            t1c_series,
            density=output / "tumor_density.nii.gz",
            seg=output / "segmentation.nii.gz",
            standard=output / "target_standard.nii.gz",
            model=output / "target_model.nii.gz",
        )
    for w in res.get("warnings", []):
        typer.echo(f"gliofit: warning: {output}: {w}", err=True)
    p = res["parameters"]
    typer.echo(
        json.dumps(
            {
                "output": str(output),
                "space": res["space"],
                "parameters": {k: p[k] for k in ("mu_D_mm", "mu_rho", "infiltration_length_mm", "origin_mm")},
                "fit": res["fit"],
                "timings_s": res["timings_s"],
            }
        )
    )


@cli_errors
def cohort(
    cohort_dir: Path = typer.Argument(..., help="A directory of patient folders."),
    db: Path = _DB,
    output: Path = typer.Option(..., "-o", "--output", help="Cohort output folder."),
    model: str = _MODEL,
    workers: int = typer.Option(None, "--workers", help="Local processes (default: all cores)."),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler address (tcp://HOST:PORT)."),
    device: str = _DEVICE,
    precision: str = _PRECISION,
    registration: str = _REGISTRATION,
    margin_mm: float = _MARGIN,
    top_k: int = _TOP_K,
    quiet: bool = typer.Option(False, "--quiet", "--no-progress", help="No progress bar (warnings and errors only)."),
) -> None:
    """Run every patient folder (resumable: finished patients are skipped, failures recorded and retried).

    Writes OUT/<patient>/ per patient, OUT/results.csv (one row per patient: parameters, intervals, fit,
    timings, warnings, status, error), OUT/cohort.png and OUT/index.html; prints a one-line JSON summary.
    Every patient is attempted; exit 3 when any failed (results.csv gives the reasons), 0 when all succeeded.
    """
    from gliofit.common.errors import check_positive
    from gliofit.pipelines.cohort import run_cohort
    from gliofit.segmentation import check_precision

    check_positive(margin_mm, "--margin-mm")
    check_precision(precision)
    model_file = _model_file(model)
    summary = run_cohort(
        cohort_dir,
        db,
        output,
        workers=workers,
        scheduler=scheduler,
        progress=not quiet,
        model=str(model_file) if model_file else None,
        device=device,
        precision=precision,
        registration=registration,
        margin_mm=margin_mm,
        top_k=top_k,
    )
    typer.echo(json.dumps(summary))
    if summary["failed"]:
        typer.echo(
            f"gliofit: {summary['failed']} of {summary['patients']} patients failed (reasons in "
            f"{summary.get('results_csv', output / 'results.csv')})",
            err=True,
        )
        raise typer.Exit(SOME_PATIENTS_FAILED)
