"""Train or fine-tune STU-Net with nnU-Net v2 and export a gliofit checkpoint (``gliofit seg train``).

:func:`train` runs, in a work folder: BraTS -> nnU-Net raw conversion (when
given BraTS case folders), nnU-Net's fingerprint extraction, planning and
3d_fullres preprocessing, training with our run-time trainer
(:mod:`gliofit.segmentation.nnunet_adapter`), and writes the network with
:func:`~gliofit.segmentation.checkpoints.save_checkpoint` (nnU-Net v2 layout
plus the plan's patch size, strides, spacing and normalisation, and the whole
plan and ``dataset.json`` so nnU-Net's own predictor can be set up from it).

Axis order: nnU-Net hands the network arrays in (Z, Y, X) order (the NIfTI
array reversed), then permuted by the plan's ``transpose_forward``; the
checkpoint's ``patch_size``, ``strides`` and ``extra.spacing_mm`` are in that
order and ``extra.transpose_forward`` records the permutation.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from gliofit.common.errors import InputError, check_file
from gliofit.segmentation.brats_convert import MODALITIES, convert_brats, find_cases
from gliofit.segmentation.nnunet_adapter import (
    CONFIGURATION,
    TrainerSettings,
    adapt_configuration,
    make_trainer_class,
    nnunet_environment,
    plan_dataset,
    preprocess_dataset,
)

__all__ = ["train", "check_training_inputs", "resolve_training_device"]

_DATASET_NAME = re.compile(r"^Dataset(\d{3})_[A-Za-z0-9_\-]+$")
DEFAULT_DATASET_ID = 501


def resolve_training_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` (InputError without a GPU) or ``auto``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"device must be cpu, cuda or auto, got {device!r}", parameter="device")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device cuda requested but no CUDA GPU is available", parameter="device")
    return torch.device(device)


def check_training_inputs(dataset_dir: str | Path, variant: str, pretrained: str | Path | None = None) -> None:
    """Cheap checks before any work: variant name, dataset folder layout, a readable and safe checkpoint."""
    TrainerSettings(variant)
    d = Path(dataset_dir)
    if not d.is_dir():
        raise InputError(f"{d}: dataset folder does not exist")
    if not (d / "dataset.json").is_file():
        find_cases(d)
    if pretrained is not None:
        from gliofit.segmentation.checkpoints import read_checkpoint

        read_checkpoint(check_file(pretrained, "checkpoint"))


def _raw_dataset(dataset_dir: Path, raw_root: Path) -> tuple[int, Path]:
    """Put the training data into nnU-Net's raw folder: link an nnU-Net dataset or convert BraTS cases."""
    if not dataset_dir.is_dir():
        raise InputError(f"{dataset_dir}: dataset folder does not exist")
    if (dataset_dir / "dataset.json").is_file():
        m = _DATASET_NAME.match(dataset_dir.name)
        if m is None:
            raise InputError(f"{dataset_dir}: an nnU-Net raw dataset folder must be named DatasetXXX_Name")
        if not (dataset_dir / "imagesTr").is_dir() or not (dataset_dir / "labelsTr").is_dir():
            raise InputError(f"{dataset_dir}: nnU-Net dataset lacks imagesTr/ or labelsTr/")
        link = raw_root / dataset_dir.name
        link.symlink_to(dataset_dir.resolve(), target_is_directory=True)
        return int(m.group(1)), link
    return DEFAULT_DATASET_ID, convert_brats(dataset_dir, raw_root, dataset_id=DEFAULT_DATASET_ID)


def _export(trainer, out: Path, settings: TrainerSettings, plans: dict, dataset_json: dict, summary: dict) -> Path:
    """Write the trained network as our checkpoint (v2 layout + plan metadata)."""
    from gliofit.segmentation.checkpoints import save_checkpoint

    cfg = plans["configurations"][CONFIGURATION]
    net = trainer.network
    net.deep_supervision = False
    regions = ("whole_tumor", "core", "enhancing")
    if "regions_class_order" not in dataset_json:
        raise InputError(
            "dataset.json has no regions_class_order: gliofit trains BraTS region models only "
            "(whole_tumor, tumor_core, enhancing_tumor); convert BraTS folders with gliofit"
        )
    extra = summary | {
        "spacing_mm": [float(s) for s in cfg["spacing"]],
        "transpose_forward": list(plans.get("transpose_forward", [0, 1, 2])),
        "normalization_schemes": list(cfg["normalization_schemes"]),
        "use_mask_for_norm": [bool(v) for v in cfg["use_mask_for_norm"]],
        "nnunet": {"configuration": CONFIGURATION, "plans": plans, "dataset_json": dataset_json},
    }
    return save_checkpoint(
        net,
        out,
        variant=settings.variant,
        patch_size=cfg["patch_size"],
        output="regions",
        regions=regions,
        label_convention="brats2023",
        modalities=MODALITIES,
        extra=extra,
    )


def train(
    dataset_dir: str | Path,
    variant: str = "small",
    *,
    out: str | Path,
    pretrained: str | Path | None = None,
    epochs: int = 1000,
    iterations_per_epoch: int = 250,
    val_iterations_per_epoch: int = 50,
    initial_lr: float = 1e-2,
    device: str = "cpu",
    fold: int | str | None = None,
    patch_size: Sequence[int] | None = None,
    batch_size: int | None = None,
    num_threads: int | None = None,
    seed: int = 0,
    work_dir: str | Path | None = None,
    on_epoch: Callable[[int, int, float], None] | None = None,
) -> dict:
    """Train STU-Net ``variant`` on a BraTS folder or nnU-Net raw dataset; write the model to ``out``.

    Parameters
    ----------
    dataset_dir : a folder of BraTS case folders (2021 or 2023 naming, converted on
        the fly) or an nnU-Net raw dataset ``DatasetXXX_Name`` with BraTS regions.
    variant : "small" | "base" | "large" | "huge".
    out : output checkpoint path (written atomically).
    pretrained : checkpoint to fine-tune from (all but ``seg_outputs``; stem adapted).
    epochs, iterations_per_epoch, val_iterations_per_epoch, initial_lr : nnU-Net schedule.
    device : "cpu", "cuda" or "auto".
    fold : 0..4, or "all" (train on every case); default 0, or "all" below 5 cases
        (nnU-Net's 5-fold split needs five).
    patch_size : (3,) voxels in nnU-Net axis order, overriding the plan (e.g. small CPU runs).
    batch_size : overrides the plan's batch size.
    num_threads : torch CPU threads during training (restored afterwards).
    seed : seeds torch and numpy.
    work_dir : keep nnU-Net's raw/preprocessed/results folders here (default: a
        temporary folder, removed afterwards).
    on_epoch : called as ``on_epoch(epochs_done, epochs_total, train_loss)``.

    Returns
    -------
    A summary dict (cases, fold, patch size, losses, output path).
    """
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out}: output path is a directory")
    check_training_inputs(dataset_dir, variant, pretrained)  # fail fast, before minutes of preprocessing
    settings = TrainerSettings(
        variant,
        int(epochs),
        int(iterations_per_epoch),
        int(val_iterations_per_epoch),
        float(initial_lr),
        None if pretrained is None else str(pretrained),
    )
    dev = resolve_training_device(device)
    own_work = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="gliofit-train-")) if own_work else Path(work_dir)
    threads = torch.get_num_threads()
    try:
        if num_threads:
            torch.set_num_threads(int(num_threads))
        return _run(Path(dataset_dir), out, settings, dev, fold, patch_size, batch_size, seed, work, on_epoch)
    finally:
        torch.set_num_threads(threads)
        if own_work:
            shutil.rmtree(work, ignore_errors=True)


def _run(
    dataset_dir: Path,
    out: Path,
    settings: TrainerSettings,
    dev: torch.device,
    fold,
    patch_size,
    batch_size,
    seed: int,
    work: Path,
    on_epoch,
) -> dict:
    with nnunet_environment(work) as paths:
        dataset_id, raw = _raw_dataset(dataset_dir, paths["nnUNet_raw"])
        dataset_json = json.loads((raw / "dataset.json").read_text())
        n_cases = len(list((raw / "labelsTr").glob("*" + dataset_json.get("file_ending", ".nii.gz"))))
        fold = ("all" if n_cases < 5 else 0) if fold is None else fold
        if fold != "all" and not (isinstance(fold, int) and 0 <= fold <= 4):
            raise InputError(f"fold must be 0..4 or 'all', got {fold!r}", parameter="fold")
        log = work / "nnunet.log"
        with open(log, "a") as fh, contextlib.redirect_stdout(fh):
            plans = plan_dataset(dataset_id)
            plans = adapt_configuration(plans, settings.variant, patch_size=patch_size, batch_size=batch_size)
            preprocess_dataset(dataset_id, plans)
            torch.manual_seed(seed)
            np.random.seed(seed)
            trainer = make_trainer_class(settings)(
                dict(plans, continue_training=False), CONFIGURATION, fold, dataset_json, dev
            )
            trainer.on_epoch = on_epoch
            trainer.run_training()
        losses = [float(v) for v in trainer.logger.get_value("train_losses", step=None)]
        dice = trainer.logger.get_value("mean_fg_dice", step=None)
        summary = {
            "dataset": raw.name,
            "cases": n_cases,
            "fold": fold,
            "epochs": settings.epochs,
            "iterations_per_epoch": settings.iterations_per_epoch,
            "initial_lr": settings.initial_lr,
            "pretrained": settings.pretrained,
            "train_losses": losses,
            "val_pseudo_dice": [float(v) for v in dice],
            "device": str(dev),
            "patch_size": list(plans["configurations"][CONFIGURATION]["patch_size"]),
            "batch_size": int(plans["configurations"][CONFIGURATION]["batch_size"]),
        }
        _export(trainer, out, settings, plans, dataset_json, summary)
    return summary | {"output": str(out)}
