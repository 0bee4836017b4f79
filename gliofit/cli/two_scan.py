"""The two-scan branch of ``gliofit infer`` (``--seg-later``, ``--days-between``, ``--project-days``)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import typer

__all__ = ["infer_two_scans_cli"]


def infer_two_scans_cli(
    db: Path,
    seg: Path,
    seg_later: Path | None,
    days_between: float | None,
    output: Path,
    *,
    method: str = "index",
    project_days: float | None = None,
    **kwargs,
) -> None:
    """Check the two-scan flags, run :func:`gliofit.inverse.longitudinal.infer_two_scans`, write OUT, print a summary."""
    from gliofit.common.errors import InputError
    from gliofit.inverse.longitudinal import check_interval, infer_two_scans

    if seg_later is None:
        raise InputError("--days-between, --core-later and --project-days need --seg-later LATE.nii.gz")
    if days_between is None:
        raise InputError(f"{seg_later}: give --days-between N (days from --seg to --seg-later)")
    check_interval(days_between)
    if method != "index":
        raise InputError(f"--seg-later works with --method index only, got {method!r}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = infer_two_scans(db, seg, seg_later, days_between, project_days=project_days, **kwargs)
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)
    files = res.save(output)
    p, u = res.parameters, res.uncertainty
    keys = ("D_mm2_per_day", "rho_per_day", "T_days", "infiltration_length_mm", "velocity_mm_per_day")
    typer.echo(
        json.dumps(
            {
                "output": str(output),
                "space": res.space,
                "days_between": res.days_between,
                "parameters": {k: p[k] for k in keys + ("origin_mm",)},
                "ci95": {k: u[k]["ci95"] for k in keys},
                "fit": {t["scan"]: t["fit"] for t in res.timepoints},
                "timings_s": {k: round(v, 3) for k, v in res.timings.items()},
                "files": sorted(str(f.name) for f in files.values()),
            }
        )
    )
