"""``gliofit plan``: standard (core + margin) and model-based (same volume) radiotherapy target volumes."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gliofit.cli.errors import cli_errors

__all__ = ["plan"]


@cli_errors
def plan(
    density: Path = typer.Option(
        ..., "--density", help="Tumour-cell density NIfTI in [0, 1] (fraction of carrying capacity)."
    ),
    seg: Path = typer.Option(..., "--seg", help="Tumour label map (BraTS) on the density's grid."),
    output: Path = typer.Option(
        ..., "-o", "--output", help="Output folder (target_standard/target_model.nii.gz, plan.json)."
    ),
    margin_mm: float = typer.Option(15.0, "--margin-mm", help="Standard target: margin around the tumour core, mm."),
    recurrence: Path = typer.Option(
        None, "--recurrence", help="Recurrence label map or 0/1 mask on the same grid: coverage of each target."
    ),
    brain: Path = typer.Option(
        None,
        "--brain",
        help="Brain mask on the same grid (default: brain_mask.nii.gz beside the density, else no limit).",
    ),
    labels: str = typer.Option("auto", "--labels", help="Label convention: auto, brats2021 or brats2023."),
    dicom_ref: Path = typer.Option(
        None,
        "--dicom-ref",
        help="The T1c DICOM series folder: also write "
        "rtstruct.dcm (targets, tumour regions, iso-density 1/10/30 %) and seg.dcm.",
    ),
) -> None:
    """Standard target (tumour core + margin, within the brain) and the model-based target of the same volume.

    The model-based target holds the voxels of highest tumour-cell density (the core always included);
    with --recurrence, plan.json reports the share of the recurrence inside each target.
    Prints one JSON line: volumes (cm3), density threshold, coverage, files.
    """
    from gliofit.pipelines.planning import plan_files

    paths = plan_files(
        density, seg, output, margin_mm=margin_mm, recurrence_path=recurrence, brain_path=brain, labels=labels
    )
    if dicom_ref is not None:
        from gliofit.pipelines.dicom_rt import export_plan

        paths |= export_plan(
            output,
            dicom_ref,
            density=density,
            seg=seg,
            standard=paths["target_standard"],
            model=paths["target_model"],
            labels=labels,
        )
    summary = json.loads(paths["plan"].read_text())
    for warning in summary.get("warnings", []):
        typer.echo(f"gliofit: warning: {warning}", err=True)
    line = {
        "output": str(output),
        "margin_mm": summary["margin_mm"],
        "basis": summary["basis"],
        "brain": summary["brain"],
        "volumes_cm3": summary["volumes_cm3"],
        "threshold": round(summary["threshold"], 6),
        "coverage": summary["coverage"],
        "zero_density_voxels": summary["zero_density_voxels"],
        "warnings": summary["warnings"],
        "files": sorted(p.name for p in paths.values()),
    }
    typer.echo(json.dumps(line))
