"""``gliofit db build | info | verify | index | migrate``: the simulation database from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gliofit.cli.errors import cli_errors

__all__ = ["db_app"]

db_app = typer.Typer(help="Build, inspect, check and index a simulation database.", no_args_is_help=True)

URL_HELP = "SQLAlchemy database URL (default: DB/gliofit.sqlite; remembered in the database's manifest)."


@db_app.command("build")
@cli_errors
def build(
    db: Path = typer.Argument(..., help="Database directory (created when missing)."),
    simulations: int = typer.Option(..., "--simulations", help="N: the database holds design indices 0 .. N-1."),
    resolution: float = typer.Option(None, "--resolution", help="Grid spacing, mm (new database: default 2)."),
    seed: int = typer.Option(None, "--seed", help="Design seed (new database: default 0)."),
    atlas: str = typer.Option(None, "--atlas", help="Atlas: 'icbm152' (default), a gm/wm/csf folder or a label map."),
    workers: int = typer.Option(None, "--workers", help="Local worker processes (default: all cores)."),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler address tcp://HOST:PORT."),
    database_url: str = typer.Option(None, "--database-url", help=URL_HELP),
    batch_size: int = typer.Option(
        None, "--batch-size", help="Simulations per task (default: up to 8; CUDA: what fits the GPU)."
    ),
    snapshots: int = typer.Option(None, "--snapshots", help="Snapshots per simulation, K (new database: default 10)."),
    max_days: float = typer.Option(None, "--max-days", help="Latest snapshot time, days (new database: default 1500)."),
    index_kind: str = typer.Option("auto", "--index-kind", help="FAISS index kind rebuilt after the build."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    device: str = typer.Option("cpu", "--device", help="Where simulations run: cpu or cuda (one process per GPU)."),
) -> None:
    """Build, extend or resume a database (running it again continues; it never duplicates)."""
    from gliofit.common.errors import InputError
    from gliofit.simulations_db.build import build_database
    from gliofit.simulations_db.design import SnapshotRule

    if simulations <= 0:
        raise InputError(f"--simulations must be a positive integer, got {simulations}")
    rule = None
    if snapshots is not None or max_days is not None:
        rule = SnapshotRule(
            count=snapshots or SnapshotRule.count,
            t_max_days=max_days if max_days is not None else SnapshotRule.t_max_days,
        )
    report = build_database(
        db,
        simulations,
        resolution_mm=resolution,
        seed=seed,
        atlas=atlas,
        workers=workers,
        scheduler=scheduler,
        database_url=database_url,
        batch_size=batch_size,
        progress=not no_progress,
        snapshots=rule,
        index_kind=index_kind,
        device=device,
    )
    typer.echo(json.dumps(report))


@db_app.command("info")
@cli_errors
def info(
    db: Path = typer.Argument(..., help="Database directory."),
    database_url: str = typer.Option(None, "--database-url", help=URL_HELP),
) -> None:
    """Print a JSON summary: format, atlas, resolution, simulations, entries, thresholds, index."""
    from gliofit.simulations_db.database import open_database

    d = open_database(db, database_url)
    try:
        typer.echo(json.dumps(d.info(), indent=2))
    finally:
        d.close()


@db_app.command("verify")
@cli_errors
def verify(
    db: Path = typer.Argument(..., help="Database directory."),
    database_url: str = typer.Option(None, "--database-url", help=URL_HELP),
) -> None:
    """Check SQL rows, arrays, checksums and the index agree; exit 1 listing every problem."""
    from gliofit.simulations_db.verify import verify_database

    problems = verify_database(db, database_url)
    for p in problems:
        typer.echo(p)
    if problems:
        typer.echo(f"gliofit: {db}: {len(problems)} problem(s)", err=True)
        raise typer.Exit(1)
    typer.echo(f"{db}: ok")


@db_app.command("index")
@cli_errors
def index(
    db: Path = typer.Argument(..., help="Database directory."),
    kind: str = typer.Option("auto", "--kind", help="auto | flat | ivf | hnsw (auto: flat below ~50k entries)."),
    database_url: str = typer.Option(None, "--database-url", help=URL_HELP),
) -> None:
    """(Re)build the FAISS index over every entry and record its version.

    Features of an older version are recomputed from the stored arrays first (the database then uses
    the current feature version).
    """
    from gliofit.simulations_db.manifest import read_manifest
    from gliofit.simulations_db.reindex import rebuild_index

    read_manifest(db)
    from gliofit.simulations_db.upgrade import upgrade_features

    new = upgrade_features(db, database_url=database_url, progress=True)
    typer.echo(
        json.dumps(rebuild_index(db, kind, database_url=database_url, features=None if new is None else new.to_dict()))
    )


@db_app.command("migrate")
@cli_errors
def migrate(
    db: Path = typer.Argument(..., help="Database directory."),
    database_url: str = typer.Option(None, "--database-url", help=URL_HELP),
) -> None:
    """Bring the database's SQL schema to this gliofit's version (opening a database never does)."""
    from gliofit.simulations_db.database import migrate_database

    typer.echo(json.dumps(migrate_database(db, database_url)))


@db_app.command("calibrate")
@cli_errors
def calibrate(
    db: Path = typer.Argument(..., help="Database directory."),
    patients: int = typer.Option(40, "--patients", help="Synthetic calibration patients (grown once, cached)."),
    seed: int = typer.Option(90001, "--seed", help="Seed of the calibration patients (not the test patients')."),
    patient_resolution: float = typer.Option(1.5, "--patient-resolution", help="Growth grid of the patients, mm."),
    patients_dir: Path = typer.Option(
        None, "--patients-dir", help="Cache of the patients (default: DB/calibration-patients/...)."
    ),
    refine_budget: int = typer.Option(None, "--refine-budget", help="Forward runs of each refinement (default 48)."),
    output: Path = typer.Option(
        None, "-o", "--output", help="Calibration file (default: DB/gliofit-calibration.json)."
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bars."),
) -> None:
    """Calibrate the intervals of `infer` on synthetic patients with known truth (split conformal)."""
    from gliofit.inverse.calibrate import calibrate as run_calibrate

    report = run_calibrate(
        db,
        patients=patients,
        seed=seed,
        patient_resolution_mm=patient_resolution,
        patients_dir=patients_dir,
        refine_budget=refine_budget,
        out=output,
        progress=not no_progress,
    )
    typer.echo(json.dumps(report))
