"""The embedded default run: offline, on the default atlas, in seconds."""

from __future__ import annotations

import time
from pathlib import Path

from gliofit.common.errors import InputError
from gliofit.common.figures import density_figure, save_figure
from gliofit.common.nifti import save_volume
from gliofit.common.progress import progress_bar, time_reporter
from gliofit.common.units import derived_parameters
from gliofit.simulations_db.atlas import load_atlas
from gliofit.simulations_db.single_run import grow_tumour

__all__ = ["DEMO_PARAMETERS", "run_demo"]

DEMO_PARAMETERS = {"D_mm2_per_day": 0.3, "rho_per_day": 0.04, "T_days": 250.0, "origin_mm": (-28.0, -12.0, 22.0)}
"""A left-frontal white-matter tumour of a few tens of cm³."""


def run_demo(out_dir: str | Path, resolution_mm: float = 2.0) -> dict:
    """Simulate the demo tumour; write density NIfTI (atlas grid) and PNG into ``out_dir``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output path is a file, not a folder")
    t0 = time.perf_counter()
    atlas = load_atlas()
    p = DEMO_PARAMETERS
    with progress_bar() as bar:
        res = grow_tumour(atlas, p["D_mm2_per_day"], p["rho_per_day"], p["T_days"], p["origin_mm"],
                          resolution_mm=resolution_mm, on_step=time_reporter(bar, "simulating"))
    nifti = save_volume(res.density_atlas, atlas.affine, out / "tumor_density_atlas.nii.gz")
    fig = density_figure(atlas.t1, res.density_atlas, title="gliofit demo: simulated tumour-cell density")
    png = save_figure(fig, out / "report.png")
    voxel_cm3 = atlas.voxel_volume_mm3 / 1000.0
    return {
        "parameters": {**p, "origin_mm": list(p["origin_mm"]),
                       **derived_parameters(p["D_mm2_per_day"], p["rho_per_day"], p["T_days"])},
        "resolution_mm": resolution_mm,
        "whole_tumor_cm3": round(float((res.density_atlas >= 0.25).sum()) * voxel_cm3, 2),
        "core_cm3": round(float((res.density_atlas >= 0.675).sum()) * voxel_cm3, 2),
        "outputs": [str(nifti), str(png)],
        "seconds": round(time.perf_counter() - t0, 2),
    }
