"""The one module that touches nnU-Net v2 internals: paths, planning, preprocessing, our trainer.

Pitfalls avoided (the ones STU-Net's own trainers hit on current nnU-Net):

- **Trainer location.** nnU-Net finds trainers by class name inside its own
  package folder. We never ask it to: :func:`make_trainer_class` creates the
  trainer at run time and we instantiate it ourselves, so nothing is copied
  into ``site-packages``.
- **``build_network_architecture`` signature.** nnunetv2 2.8 calls it as a
  staticmethod ``(plans_manager, configuration_manager, num_input_channels,
  num_output_channels, enable_deep_supervision)`` (the older
  ``(architecture_class_name, arch_init_kwargs, arch_init_kwargs_req_import,
  ...)`` form is only kept behind a deprecation warning); ours has the
  current form and builds :class:`~gliofit.segmentation.stunet.STUNet` from
  the plan's strides.
- **Configuration as data.** Variant, epochs, iterations, learning rate and
  pretrained checkpoint live in a frozen :class:`TrainerSettings`, not in one
  subclass per number.
- **Deep supervision.** STU-Net always has five decoder outputs; the plan's
  ``strides`` are rewritten to STU-Net's five (padded with ``[1, 1, 1]``) so
  nnU-Net's target pyramid has exactly one level per output.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gliofit.common.errors import InputError
from gliofit.segmentation.stunet import N_POOL, N_STAGES, VARIANTS, STUNet, normalise_strides

__all__ = [
    "TrainerSettings",
    "nnunet_environment",
    "plan_dataset",
    "preprocess_dataset",
    "adapt_configuration",
    "strides_for_patch",
    "make_trainer_class",
    "CONFIGURATION",
]

CONFIGURATION = "3d_fullres"
MIN_FEATURE_MAP = 4
"""Smallest edge (voxels) of the deepest feature map when strides are derived from a patch size."""


@dataclass(frozen=True)
class TrainerSettings:
    """Everything our nnU-Net trainer needs beyond the plan.

    Attributes
    ----------
    variant : STU-Net size, "small" | "base" | "large" | "huge".
    epochs : nnU-Net epochs (nnU-Net's default is 1000).
    iterations_per_epoch, val_iterations_per_epoch : batches per epoch (nnU-Net: 250, 50).
    initial_lr : SGD learning rate at epoch 0 (poly decay to 0, as nnU-Net).
    pretrained : checkpoint whose weights (all but ``seg_outputs``) initialise the network;
        a one-channel stem is repeated over the input channels.
    deep_supervision : train with nnU-Net's deep-supervision loss on the five decoder outputs.
    """

    variant: str = "small"
    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    initial_lr: float = 1e-2
    pretrained: str | None = None
    deep_supervision: bool = True

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise InputError(f"variant must be one of {sorted(VARIANTS)}, got {self.variant!r}", parameter="variant")
        for name in ("epochs", "iterations_per_epoch", "val_iterations_per_epoch"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.initial_lr > 0:
            raise InputError(f"learning rate must be positive, got {self.initial_lr}")


@contextlib.contextmanager
def nnunet_environment(work_dir: str | Path, *, n_proc_da: int = 0) -> Iterator[dict[str, Path]]:
    """Point nnU-Net's raw/preprocessed/results folders into ``work_dir`` (restored on exit).

    Also disables ``torch.compile`` (``nnUNet_compile=f``) and sets the number
    of augmentation worker processes (``nnUNet_n_proc_DA``; 0 = in-process).
    nnunetv2 2.8 reads these variables lazily, so setting them here suffices.
    """
    root = Path(work_dir)
    paths = {k: root / k for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for p in paths.values():
        p.mkdir(parents=True, exist_ok=True)
    values = {k: str(v) for k, v in paths.items()} | {"nnUNet_compile": "f", "nnUNet_n_proc_DA": str(int(n_proc_da))}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield paths
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def plan_dataset(dataset_id: int, *, num_processes: int = 1) -> dict:
    """nnU-Net's fingerprint extraction (with its integrity check) and experiment planning.

    Call inside :func:`nnunet_environment`. Returns the plans dict (``nnUNetPlans``).
    The planner calls ``torch.set_num_threads(nnUNet_n_proc_DA)``, so that
    variable is at least 1 while planning (the caller restores torch's threads).
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
    )

    extract_fingerprint_dataset(
        dataset_id,
        num_processes=num_processes,
        check_dataset_integrity=True,
        clean=True,
        verbose=False,
        show_progress_bar=False,
    )
    da = os.environ.get("nnUNet_n_proc_DA", "0")
    os.environ["nnUNet_n_proc_DA"] = str(max(1, int(da), int(num_processes)))
    try:
        plans, _ = plan_experiment_dataset(dataset_id)
    finally:
        os.environ["nnUNet_n_proc_DA"] = da
    return plans


def preprocess_dataset(dataset_id: int, plans: dict, *, num_processes: int = 1) -> None:
    """Save ``plans`` as the dataset's plans file and run nnU-Net's 3d_fullres preprocessing with it."""
    import json

    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess_dataset as nn_preprocess
    from nnunetv2.paths import nnUNet_preprocessed

    plans_file = Path(os.fspath(nnUNet_preprocessed)) / plans["dataset_name"] / f"{plans['plans_name']}.json"
    plans_file.write_text(json.dumps(plans, indent=2))
    nn_preprocess(
        dataset_id,
        plans["plans_name"],
        configurations=(CONFIGURATION,),
        num_processes=[num_processes],
        verbose=False,
        show_progress_bar=False,
    )


def strides_for_patch(patch_size: Sequence[int]) -> list[list[int]]:
    """STU-Net's five pooling strides for a patch: stride 2 per axis while the edge stays >= 4 and even.

    Examples
    --------
    >>> strides_for_patch((32, 32, 16))
    [[2, 2, 2], [2, 2, 2], [2, 2, 1], [1, 1, 1], [1, 1, 1]]
    """
    sizes = [int(p) for p in patch_size]
    out = []
    for _ in range(N_POOL):
        step = [2 if (s % 2 == 0 and s // 2 >= MIN_FEATURE_MAP) else 1 for s in sizes]
        sizes = [s // k for s, k in zip(sizes, step)]
        out.append(step)
    return out


def adapt_configuration(
    plans: dict, variant: str, *, patch_size: Sequence[int] | None = None, batch_size: int | None = None
) -> dict:
    """A copy of ``plans`` whose 3d_fullres configuration describes our STU-Net.

    The plan's strides are normalised to STU-Net's five (more are truncated,
    fewer padded with ``[1, 1, 1]``); a ``patch_size`` override gets strides
    from :func:`strides_for_patch`. Intensities are z-scored inside the brain
    (``use_mask_for_norm``: BraTS images are skull-stripped, zero outside), as
    :func:`gliofit.segmentation.predict.segment` does. Raises :class:`InputError` when a patch
    edge is not divisible by the product of its strides.
    """
    out = copy.deepcopy(plans)
    cfg = out["configurations"][CONFIGURATION]
    arch = cfg["architecture"]["arch_kwargs"]
    if patch_size is not None:
        patch = [int(p) for p in patch_size]
        if len(patch) != 3 or min(patch) < 1:
            raise InputError(f"patch size must be three positive integers, got {patch_size!r}")
        strides = strides_for_patch(patch)
        kernels = [[3, 3, 3]] * N_STAGES
    else:
        patch = [int(p) for p in cfg["patch_size"]]
        strides = [list(s) for s in normalise_strides(arch["strides"])]
        kernels = [list(k) for k in arch["kernel_sizes"][:N_STAGES]]
        kernels += [[3, 3, 3]] * (N_STAGES - len(kernels))
    divisor = np.prod(np.asarray(strides), axis=0)
    if np.any(np.asarray(patch) % divisor):
        raise InputError(f"patch size {patch} is not divisible by the STU-Net strides' product {divisor.tolist()}")
    cfg["patch_size"] = patch
    cfg["use_mask_for_norm"] = [True] * len(cfg["normalization_schemes"])
    if batch_size is not None:
        cfg["batch_size"] = int(batch_size)
    cfg["architecture"] = {
        "network_class_name": "gliofit.segmentation.stunet.STUNet",
        "arch_kwargs": {
            "variant": variant,
            "n_stages": N_STAGES,
            "strides": [[1, 1, 1]] + strides,
            "kernel_sizes": kernels,
        },
        "_kw_requires_import": [],
    }
    return out


def make_trainer_class(settings: TrainerSettings) -> type:
    """An ``nnUNetTrainer`` subclass that builds and trains STU-Net with ``settings``.

    The class is made at run time (nothing is registered with nnU-Net); use it
    as nnU-Net's ``run_training`` does::

        trainer = make_trainer_class(s)(plans, "3d_fullres", fold, dataset_json, torch.device("cpu"))
        trainer.run_training()
    """
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    def build_network_architecture(
        plans_manager,
        configuration_manager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> STUNet:
        return STUNet.from_plan(
            settings.variant,
            configuration_manager,
            num_input_channels,
            num_output_channels,
            deep_supervision=enable_deep_supervision,
        )

    class STUNetTrainer(nnUNetTrainer):
        """nnU-Net's trainer with STU-Net, epochs/iterations/learning rate from ``settings``."""

        def __init__(
            self, plans: dict, configuration: str, fold, dataset_json: dict, device: torch.device = torch.device("cpu")
        ):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = int(settings.epochs)
            self.num_iterations_per_epoch = int(settings.iterations_per_epoch)
            self.num_val_iterations_per_epoch = int(settings.val_iterations_per_epoch)
            self.initial_lr = float(settings.initial_lr)
            self.enable_deep_supervision = bool(settings.deep_supervision)
            self.on_epoch: Callable[[int, int, float], None] | None = None

        def initialize(self) -> None:
            super().initialize()
            if settings.pretrained is not None:
                from gliofit.segmentation.checkpoints import load_checkpoint

                load_checkpoint(self.network, settings.pretrained, adapt_stem=True, drop_heads=True)

        def on_epoch_end(self) -> None:
            loss = self.logger.get_value("train_losses", step=-1) if self.on_epoch else 0.0
            super().on_epoch_end()
            if self.on_epoch is not None:
                self.on_epoch(self.current_epoch, self.num_epochs, float(loss))

    STUNetTrainer.settings = settings
    STUNetTrainer.build_network_architecture = staticmethod(build_network_architecture)
    STUNetTrainer.__name__ = STUNetTrainer.__qualname__ = f"STUNetTrainer_{settings.variant}"
    return STUNetTrainer
