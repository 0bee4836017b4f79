"""Commands of the simulations part: ``atlas info``, ``simulate`` (and later ``db``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gliofit.cli.errors import cli_errors
from gliofit.common.errors import InputError
from gliofit.common.units import DEFAULT_DIFFUSIVITY_RATIO, DEFAULT_THRESHOLD_CORE, DEFAULT_THRESHOLD_EDEMA

__all__ = ["atlas_app", "simulate"]

atlas_app = typer.Typer(help="Inspect brain atlases.", no_args_is_help=True)

ATLAS_HELP = "Atlas: 'icbm152' (default, shipped by nilearn), a folder with gm/wm/csf NIfTI files, or a label map."


@atlas_app.command("info")
@cli_errors
def atlas_info(
    atlas: str = typer.Option("icbm152", "--atlas", help=ATLAS_HELP),
    resolution: float = typer.Option(
        None, "--resolution", help="Also describe the simulation grid at this spacing (mm)."
    ),
) -> None:
    """Print the atlas's shape, spacing and tissue volumes (cm³) as JSON."""
    from gliofit.growth.atlas import load_atlas, resample_atlas

    a = load_atlas(atlas)
    info = a.info()
    if resolution is not None:
        info["grid"] = resample_atlas(a, resolution).info()
    typer.echo(json.dumps(info, indent=2))


@cli_errors
def simulate(
    D: float = typer.Option(..., "--D", help="White-matter diffusivity, mm²/day."),
    rho: float = typer.Option(..., "--rho", help="Proliferation rate, 1/day."),
    T: float = typer.Option(..., "--T", help="Time since onset, days."),
    origin: tuple[float, float, float] = typer.Option(
        ..., "--origin", metavar="X Y Z", help="Seed point, world mm (RAS)."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Output density NIfTI (on the atlas grid)."),
    resolution: float = typer.Option(1.0, "--resolution", help="Simulation grid spacing, mm."),
    atlas: str = typer.Option("icbm152", "--atlas", help=ATLAS_HELP),
    ratio: float = typer.Option(
        DEFAULT_DIFFUSIVITY_RATIO, "--diffusivity-ratio", help="White over grey matter diffusivity."
    ),
    png: bool = typer.Option(False, "--png", help="Also write orthogonal slices as PNG beside the NIfTI."),
    native_grid: bool = typer.Option(
        False, "--native-grid", help="Write on the simulation grid instead of the atlas grid."
    ),
    device: str = typer.Option("cpu", "--device", help="torch device: cpu or cuda."),
) -> None:
    """Grow one tumour with the Fisher–Kolmogorov model and write its cell density."""
    from gliofit.common.figures import density_figure, save_figure
    from gliofit.common.nifti import save_volume
    from gliofit.common.progress import progress_bar, time_reporter
    from gliofit.growth.atlas import load_atlas
    from gliofit.growth.single_run import grow_tumour

    if output.is_dir():
        raise InputError(f"{output}: output path is a directory")
    a = load_atlas(atlas)
    with progress_bar() as bar:
        res = grow_tumour(
            a,
            D,
            rho,
            T,
            origin,
            resolution_mm=resolution,
            diffusivity_ratio=ratio,
            device=device,
            on_step=time_reporter(bar, "simulating"),
        )
    data, img_grid = (res.density_grid, res.grid) if native_grid else (res.density_atlas, res.atlas)
    save_volume(data, img_grid.affine, output)
    if png:
        from gliofit.common.wording import parameters_title

        params = {
            "D_mm2_per_day": D,
            "rho_per_day": rho,
            "T_days": T,
            "mu_D_mm": (D * T) ** 0.5,
            "mu_rho": (rho * T) ** 0.5,
            "infiltration_length_mm": (D / rho) ** 0.5,
            "velocity_mm_per_day": 2 * (D * rho) ** 0.5,
        }
        fig = density_figure(img_grid.t1, data, img_grid.affine, title="simulated: " + parameters_title(params))
        save_figure(fig, _png_path(output))
    typer.echo(
        json.dumps(
            {
                "output": str(output),
                "shape": list(data.shape),
                "whole_tumor_cm3": _volume_cm3(res.density_grid, res.grid, DEFAULT_THRESHOLD_EDEMA),
                "core_cm3": _volume_cm3(res.density_grid, res.grid, DEFAULT_THRESHOLD_CORE),
            }
        )
    )


def _png_path(nifti: Path) -> Path:
    name = nifti.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return nifti.with_name(name + ".png")


def _volume_cm3(density, grid, threshold: float) -> float:
    return round(float((density >= threshold).sum()) * grid.voxel_volume_mm3 / 1000.0, 3)
