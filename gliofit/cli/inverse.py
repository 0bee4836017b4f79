"""``gliofit infer``: a segmentation in, personalised parameters with uncertainty out."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gliofit.cli.errors import cli_errors

__all__ = ["infer"]


@cli_errors
def infer(
    db: Path = typer.Option(..., "--db", help="Simulation database directory."),
    seg: Path = typer.Option(
        ..., "--seg", help="Tumour segmentation NIfTI (or the whole-tumour mask with --labels masks)."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder (result.json, densities, report.png)."),
    labels: str = typer.Option("auto", "--labels", help="Label convention: auto, brats2021, brats2023 or masks."),
    core: Path = typer.Option(None, "--core", help="Tumour-core mask NIfTI (with --labels masks)."),
    t1: Path = typer.Option(None, "--t1", help="Patient T1 on the segmentation's grid: register it to the atlas."),
    in_atlas_space: bool = typer.Option(False, "--in-atlas-space", help="The segmentation's affine is atlas world mm."),
    top_k: int = typer.Option(200, "--top-k", help="Candidates taken from the index."),
    refine: bool = typer.Option(
        True, "--refine/--no-refine", help="Refine the best (shift-aligned) match with the forward solver (default on)."
    ),
    refine_budget: int = typer.Option(None, "--refine-budget", help="Forward runs of the refinement (default 48)."),
    calibration: Path = typer.Option(
        None,
        "--calibration",
        help="Calibration file (default: DB/gliofit-calibration.json; two scans: DB/gliofit-calibration-two-scan.json).",
    ),
    method: str = typer.Option(
        "index", "--method", help="index (FAISS + exact Dice) or exhaustive (published baseline)."
    ),
    density: str = typer.Option("upsample", "--density", help="Best-match density at 1 mm: upsample or resimulate."),
    weights: tuple[float, float] = typer.Option(
        (0.5, 0.5), "--weights", metavar="WT CORE", help="Whole-tumour and core weights of the mean Dice."
    ),
    no_threshold_search: bool = typer.Option(
        False, "--no-threshold-search", help="Use the database's thresholds only (always so with --seg-later)."
    ),
    seg_later: Path = typer.Option(
        None,
        "--seg-later",
        help="A later segmentation of the same patient on the same grid (two-scan fit: D, rho and T separately).",
    ),
    core_later: Path = typer.Option(None, "--core-later", help="The later tumour-core mask (with --labels masks)."),
    days_between: float = typer.Option(
        None, "--days-between", help="Days from the --seg scan to the --seg-later scan (> 0)."
    ),
    project_days: float = typer.Option(
        None, "--project-days", help="With --seg-later: also write the density this many days after the later scan."
    ),
) -> None:
    """Find the growth-model parameters whose simulated tumour best matches the segmentation."""
    from gliofit.common.errors import InputError
    from gliofit.inverse.api import check_refine
    from gliofit.inverse.api import infer as run_infer

    if output.exists() and not output.is_dir():
        raise InputError(f"{output}: output path is a file, not a folder")
    if t1 is not None and in_atlas_space:
        raise InputError("give either --t1 or --in-atlas-space, not both")
    check_refine(refine, refine_budget)
    if seg_later is not None or days_between is not None or project_days is not None or core_later is not None:
        from gliofit.cli.two_scan import infer_two_scans_cli

        infer_two_scans_cli(
            db,
            seg,
            seg_later,
            days_between,
            output,
            labels=labels,
            core=core,
            core_later=core_later,
            t1=t1,
            in_atlas_space=in_atlas_space,
            top_k=top_k,
            density=density,
            weights=weights,
            project_days=project_days,
            method=method,
            refine=refine,
            calibration=calibration,
        )
        return
    res = run_infer(
        db,
        seg,
        labels=labels,
        core=core,
        t1=t1,
        in_atlas_space=in_atlas_space,
        top_k=top_k,
        refine=refine,
        refine_budget=refine_budget,
        method=method,
        density=density,
        weights=weights,
        thresholds_search=not no_threshold_search,
        calibration=calibration,
        progress=method == "exhaustive",
    )
    files = res.save(output)
    for w in res.to_dict()["warnings"]:
        typer.echo(f"gliofit: warning: {output}: {w}", err=True)
    p, u = res.parameters, res.uncertainty
    summary = {
        "output": str(output),
        "space": res.space,
        "space_note": res.observation.space_note,
        "parameters": {k: p[k] for k in ("mu_D_mm", "mu_rho", "infiltration_length_mm", "origin_mm")},
        "ci95": {k: u[k]["ci95"] for k in ("mu_D_mm", "mu_rho", "infiltration_length_mm")},
        "calibration": res.calibration["method"],
        "fit": res.fit,
        "timings_s": {k: round(v, 3) for k, v in res.timings.items()},
        "files": sorted(str(f.name) for f in files.values()),
    }
    typer.echo(json.dumps(summary))
