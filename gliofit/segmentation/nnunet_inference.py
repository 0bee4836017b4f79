"""nnU-Net v2's own predictor around our network (the reference our sliding window is checked against).

``nnUNetPredictor.manual_initialization`` accepts a network built outside
nnU-Net; it also needs a plans manager, a configuration manager and a
dataset.json. This module writes the minimal ones for an STU-Net predicting
the three BraTS regions (whole tumour, tumour core, enhancing) from four
modalities, so the stock ``predict_logits_from_preprocessed_data`` can run on
an already normalised (C, Z, Y, X) array.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["brats_region_dataset_json", "minimal_plans", "stock_predictor"]


def brats_region_dataset_json(modalities: Sequence[str] = ("t1", "t1c", "t2", "flair")) -> dict:
    """dataset.json of region-based BraTS (nnU-Net labels: 1 edema, 2 necrosis, 3 enhancing)."""
    return {
        "channel_names": {str(i): m for i, m in enumerate(modalities)},
        "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]},
        "regions_class_order": [1, 2, 3],
        "numTraining": 0,
        "file_ending": ".nii.gz",
    }


def minimal_plans(patch_size: Sequence[int], n_channels: int = 4) -> dict:
    """A plans dict with one ``3d_fullres`` configuration: the patch, z-score with mask, 1 mm spacing."""
    patch = [int(p) for p in patch_size]
    config = {
        "data_identifier": "gliofit",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": patch,
        "median_image_size_in_voxels": patch,
        "spacing": [1.0, 1.0, 1.0],
        "normalization_schemes": ["ZScoreNormalization"] * n_channels,
        "use_mask_for_norm": [True] * n_channels,
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {},
        "resampling_fn_seg_kwargs": {},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {},
        "architecture": {
            "network_class_name": "gliofit.segmentation.stunet.STUNet",
            "arch_kwargs": {},
            "_kw_requires_import": [],
        },
        "batch_dice": True,
    }
    return {
        "dataset_name": "gliofit",
        "plans_name": "gliofitPlans",
        "image_reader_writer": "NibabelIO",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
        "original_median_shape_after_transp": patch,
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": config},
        "experiment_planner_used": "gliofit",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
    }


def stock_predictor(
    net: torch.nn.Module,
    patch_size: Sequence[int],
    *,
    step: float = 0.5,
    mirror_axes: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
):
    """An ``nnUNetPredictor`` (Gaussian weighting) set up by ``manual_initialization`` with ``net``.

    Call ``.predict_logits_from_preprocessed_data(x)`` with ``x`` a (C, Z, Y, X)
    normalised tensor; it returns float16 logits of the region channels.
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dev = torch.device(device)
    plans = PlansManager(minimal_plans(patch_size, int(getattr(net, "in_channels", 4))))
    pred = nnUNetPredictor(
        tile_step_size=step,
        use_gaussian=True,
        use_mirroring=mirror_axes is not None,
        perform_everything_on_device=dev.type == "cuda",
        device=dev,
        allow_tqdm=False,
    )
    pred.manual_initialization(
        net,
        plans,
        plans.get_configuration("3d_fullres"),
        [net.state_dict()],
        brats_region_dataset_json(),
        "gliofit-stunet",
        tuple(mirror_axes) if mirror_axes is not None else None,
    )
    return pred
