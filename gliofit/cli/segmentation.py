"""Command of the segmentation part: ``segment`` (MRI -> BraTS tumour labels)."""

from __future__ import annotations

from pathlib import Path

import typer

from gliofit.cli.errors import cli_errors

__all__ = ["segment"]


@cli_errors
def segment(
    t1: Path = typer.Option(..., "--t1", help="T1 NIfTI."),
    t1c: Path = typer.Option(..., "--t1c", help="T1 contrast-enhanced (T1Gd) NIfTI."),
    t2: Path = typer.Option(..., "--t2", help="T2 NIfTI."),
    flair: Path = typer.Option(..., "--flair", help="FLAIR NIfTI."),
    model: str = typer.Option(
        ...,
        "--model",
        help="STU-Net checkpoint: a file (gliofit seg train), a name from "
        "`gliofit models`, or an https:// URL (downloaded once).",
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Output label map NIfTI (input grid and affine)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, or auto (CUDA when present)."),
    tta: bool = typer.Option(
        None, "--tta/--no-tta", help="Test-time mirroring (8x cost). Default: on for cuda, off for cpu."
    ),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="Network arithmetic: auto (float32 on cpu, float16 on cuda: the stock predictor's labels) or "
        "bfloat16 (faster on CPUs with AMX / AVX-512 BF16; labels differ where a logit is near 0).",
    ),
    labels: str = typer.Option("brats2023", "--labels", help="Output labels: brats2023 (1,2,3) or brats2021 (1,2,4)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Segment a brain tumour from four co-registered MRI modalities with an STU-Net."""
    import numpy as np

    from gliofit.common.nifti import save_volume
    from gliofit.segmentation.predict import segment as run_segment
    from gliofit.segmentation.registry import resolve_model

    checkpoint = resolve_model(model, progress=not quiet)
    seg, affine = run_segment(
        t1, t1c, t2, flair, checkpoint, device=device, tta=tta, labels=labels, progress=not quiet, precision=precision
    )
    save_volume(seg, affine, output, dtype=np.uint8)
    counts = {int(v): int(n) for v, n in zip(*np.unique(seg, return_counts=True))}
    typer.echo(f"wrote {output} (voxels per label: {counts})")
