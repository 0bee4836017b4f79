"""Commands for segmentation data and training: ``phantom``, ``seg train``, ``seg evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gliofit.cli.errors import cli_errors
from gliofit.common.errors import InputError

__all__ = ["seg_app", "phantom", "evaluate", "train"]

seg_app = typer.Typer(help="Train and evaluate STU-Net segmentation models.", no_args_is_help=True)


@cli_errors
def phantom(
    out_dir: Path = typer.Argument(..., help="Output folder; one BraTS-style folder per case."),
    cases: int = typer.Option(..., "--cases", help="Number of cases."),
    seed: int = typer.Option(0, "--seed", help="Random seed (case i uses seed [S, i])."),
    layout: str = typer.Option("brats2023", "--layout", help="brats2023 (-t1n/-t1c/-t2w/-t2f/-seg) or brats2021."),
    resolution: float = typer.Option(
        None, "--resolution", help="Image grid spacing in mm (default: the 1 mm atlas grid)."
    ),
    atlas: str = typer.Option("icbm152", "--atlas", help="Atlas name or path (see `gliofit atlas info`)."),
) -> None:
    """Write synthetic T1/T1c/T2/FLAIR phantoms with tumours grown by the solver, labels included."""
    from gliofit.common.progress import progress_bar
    from gliofit.segmentation.brats_convert import LAYOUTS
    from gliofit.segmentation.phantoms import make_phantoms
    from gliofit.growth.atlas import load_atlas

    if layout not in LAYOUTS:
        raise InputError(f"--layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    if cases < 1:
        raise InputError(f"--cases must be at least 1, got {cases}")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: output path exists and is not a directory")
    a = load_atlas(atlas)
    with progress_bar() as bar:
        task = bar.add_task("phantoms", total=cases)
        paths = make_phantoms(
            out_dir,
            cases,
            seed=seed,
            layout=layout,
            resolution_mm=resolution,
            atlas=a,
            on_case=lambda p: bar.advance(task),
        )
    typer.echo(json.dumps({"output": str(out_dir), "cases": [p.name for p in paths], "layout": layout}))


@seg_app.command("evaluate")
@cli_errors
def evaluate(
    pred_dir: Path = typer.Argument(..., help="Predicted label maps (CASE.nii.gz or CASE/CASE-seg.nii.gz)."),
    gt_dir: Path = typer.Argument(..., help="Ground-truth label maps, matched to predictions by case name."),
    output: Path = typer.Option(None, "-o", "--output", help="Write the metrics as CSV (with a mean row)."),
) -> None:
    """Dice and HD95 (mm) per region (WT, TC, ET) for every case present in both folders."""
    from rich.console import Console
    from rich.table import Table

    from gliofit.common.progress import progress_bar
    from gliofit.segmentation.metrics import REGIONS, evaluate_folders, write_metrics_csv

    with progress_bar() as bar:
        task = bar.add_task("evaluating", total=None)
        rows, missing = evaluate_folders(pred_dir, gt_dir, on_case=lambda c: bar.advance(task))
    table = Table(title=f"{len(rows)} cases")
    table.add_column("case")
    for r in REGIONS:
        table.add_column(f"{r} Dice", justify="right")
        table.add_column(f"{r} HD95 mm", justify="right")
    for row in rows:
        table.add_row(row["case"], *[f"{row[f'{r}_{m}']:.3f}" for r in REGIONS for m in ("dice", "hd95")])
    means = [f"{sum(row[f'{r}_{m}'] for row in rows) / len(rows):.3f}" for r in REGIONS for m in ("dice", "hd95")]
    table.add_row("[bold]mean", *means)
    Console().print(table)
    if missing:
        typer.echo(
            f"gliofit: warning: {len(missing)} ground-truth case(s) without prediction: {', '.join(missing[:10])}",
            err=True,
        )
    if output is not None:
        write_metrics_csv(rows, output)


def _patch(value: str | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    try:
        parts = tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        raise InputError(f"--patch-size must be like 32,32,32, got {value!r}") from None
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3 or min(parts) < 1:
        raise InputError(f"--patch-size must be one or three positive integers, got {value!r}")
    return parts  # type: ignore[return-value]


@seg_app.command("train")
@cli_errors
def train(
    dataset_dir: Path = typer.Argument(
        ..., help="BraTS case folders (2021/2023 names) or an nnU-Net raw DatasetXXX_Name."
    ),
    variant: str = typer.Option(..., "--variant", help="STU-Net size: small, base, large or huge."),
    output: Path = typer.Option(..., "-o", "--output", help="Output model checkpoint (.pth)."),
    pretrained: str = typer.Option(
        None,
        "--pretrained",
        help="Fine-tune from this checkpoint: a file, a name from "
        "`gliofit models` (official STU-Net weights, downloaded once) or an https:// URL.",
    ),
    epochs: int = typer.Option(1000, "--epochs", help="nnU-Net epochs."),
    iterations: int = typer.Option(250, "--iterations", help="Training batches per epoch."),
    val_iterations: int = typer.Option(50, "--val-iterations", help="Validation batches per epoch."),
    lr: float = typer.Option(1e-2, "--lr", help="Initial SGD learning rate (poly decay)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    fold: str = typer.Option(None, "--fold", help="0..4 or 'all' (default: 0, or 'all' below five cases)."),
    patch_size: str = typer.Option(None, "--patch-size", help="Override the plan's patch, e.g. 32,32,32 (CPU runs)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Override the plan's batch size."),
    threads: int = typer.Option(None, "--threads", help="torch CPU threads."),
    work_dir: Path = typer.Option(None, "--work-dir", help="Keep nnU-Net's raw/preprocessed/results folders here."),
) -> None:
    """Plan, preprocess and train STU-Net with nnU-Net v2; write a gliofit model checkpoint."""
    from gliofit.common.progress import progress_bar
    from gliofit.segmentation.training import check_training_inputs
    from gliofit.segmentation.training import train as run_training

    if pretrained is not None:
        from gliofit.segmentation.registry import resolve_model

        pretrained = resolve_model(pretrained, purpose="pretrained")
    check_training_inputs(dataset_dir, variant, pretrained)
    fold_value = None if fold is None else ("all" if fold == "all" else _int_fold(fold))
    with progress_bar() as bar:
        task = bar.add_task("training (epochs)", total=epochs)
        summary = run_training(
            dataset_dir,
            variant,
            out=output,
            pretrained=pretrained,
            epochs=epochs,
            iterations_per_epoch=iterations,
            val_iterations_per_epoch=val_iterations,
            initial_lr=lr,
            device=device,
            fold=fold_value,
            patch_size=_patch(patch_size),
            batch_size=batch_size,
            num_threads=threads,
            work_dir=work_dir,
            on_epoch=lambda done, total, loss: bar.update(task, completed=done),
        )
    typer.echo(
        json.dumps(
            {k: summary[k] for k in ("output", "dataset", "cases", "fold", "epochs", "patch_size")}
            | {"final_train_loss": summary["train_losses"][-1]}
        )
    )


def _int_fold(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InputError(f"--fold must be 0..4 or 'all', got {value!r}") from None
