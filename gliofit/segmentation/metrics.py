"""Dice and HD95 per BraTS region (WT, TC, ET) with MONAI's metric functions.

Regions: whole tumour (WT) = every tumour label, tumour core (TC) = necrosis +
enhancing, enhancing tumour (ET); label conventions are detected per file
(:mod:`gliofit.common.labels`).

Conventions for empty regions (those of the BraTS challenge):

- both empty: Dice 1, HD95 0 mm;
- one empty, the other not: Dice 0, HD95 = the image diagonal in mm
  (373.13 mm for a 240×240×155 1 mm BraTS volume — the challenge's value).

Dice comes from ``monai.metrics.compute_dice`` (``ignore_empty=False``), HD95
from ``monai.metrics.compute_hausdorff_distance(percentile=95, spacing=...)``
in millimetres (symmetric, Euclidean).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from gliofit.common.errors import InputError
from gliofit.common.grids import check_same_grid
from gliofit.common.io import atomic_write
from gliofit.common.labels import tumour_masks
from gliofit.common.nifti import load_volume

__all__ = ["REGIONS", "region_stack", "region_metrics", "find_segmentations", "evaluate_folders", "write_metrics_csv"]

REGIONS = {"WT": "whole_tumor", "TC": "core", "ET": "enhancing"}
"""Region short names and the :func:`gliofit.common.labels.tumour_masks` key of each."""


def region_stack(labels: np.ndarray, convention: str | None = None, source: str = "segmentation") -> np.ndarray:
    """(3, X, Y, Z) bool masks in ``REGIONS`` order (WT, TC, ET) from a label map."""
    masks = tumour_masks(labels, convention, source)
    return np.stack([masks[k] for k in REGIONS.values()])


def region_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_mm,
    *,
    pred_convention: str | None = None,
    truth_convention: str | None = None,
) -> dict[str, float]:
    """Dice and HD95 (mm) of WT, TC and ET between two label maps on one grid.

    Parameters
    ----------
    pred, truth : (X, Y, Z) integer label maps (BraTS 2021 or 2023, detected unless given).
    spacing_mm : (3,) voxel spacing in mm.

    Returns
    -------
    ``{"WT_dice", "WT_hd95", "TC_dice", ...}``; empty regions follow the module's conventions.

    Examples
    --------
    >>> a = np.zeros((8, 8, 8), np.uint8); a[2:6, 2:6, 2:6] = 2
    >>> region_metrics(a, a, (1, 1, 1))["WT_dice"]
    1.0
    """
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    if np.shape(pred) != np.shape(truth):
        raise InputError(f"prediction shape {np.shape(pred)} differs from ground truth {np.shape(truth)}")
    p = torch.from_numpy(region_stack(pred, pred_convention, "prediction")[None].astype(np.float32))
    t = torch.from_numpy(region_stack(truth, truth_convention, "ground truth")[None].astype(np.float32))
    spacing = [float(s) for s in spacing_mm]
    dice = compute_dice(p, t, include_background=True, ignore_empty=False)[0]
    diagonal = float(np.sqrt(np.sum((np.asarray(np.shape(pred)) * np.asarray(spacing)) ** 2)))
    out: dict[str, float] = {}
    for i, name in enumerate(REGIONS):
        p_any, t_any = bool(p[0, i].any()), bool(t[0, i].any())
        out[f"{name}_dice"] = float(dice[i]) if (p_any or t_any) else 1.0
        if p_any and t_any:
            hd = compute_hausdorff_distance(
                p[:, i : i + 1], t[:, i : i + 1], include_background=True, percentile=95, spacing=spacing
            )
            out[f"{name}_hd95"] = float(hd[0, 0])
        else:
            out[f"{name}_hd95"] = 0.0 if not (p_any or t_any) else diagonal
    return out


def _case_name(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    for suffix in ("-seg", "_seg"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def find_segmentations(folder: str | Path, what: str = "folder") -> dict[str, Path]:
    """Map case name -> label file in ``folder``.

    Accepts flat files (``CASE.nii.gz``, ``CASE-seg.nii.gz``, ``CASE_seg.nii.gz``;
    nnU-Net style) and BraTS case folders (``CASE/CASE-seg.nii.gz``,
    ``CASE/CASE_seg.nii.gz`` or ``CASE/segmentation.nii.gz``).
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: {what} is not a directory")
    found: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.name.endswith((".nii.gz", ".nii")):
            found[_case_name(entry)] = entry
        elif entry.is_dir():
            for cand in (f"{entry.name}-seg", f"{entry.name}_seg", "segmentation"):
                hits = [entry / f"{cand}{ext}" for ext in (".nii.gz", ".nii") if (entry / f"{cand}{ext}").is_file()]
                if hits:
                    found[entry.name] = hits[0]
                    break
    if not found:
        raise InputError(f"{root}: {what} holds no segmentation files (CASE.nii.gz or CASE/CASE-seg.nii.gz)")
    return found


def evaluate_folders(pred_dir: str | Path, gt_dir: str | Path, on_case=None) -> tuple[list[dict], list[str]]:
    """Metrics for every case present in both folders.

    Returns
    -------
    rows : one dict per matched case (``case`` plus the :func:`region_metrics` keys), sorted by case.
    missing : ground-truth cases without a prediction (not scored).
    """
    preds = find_segmentations(pred_dir, "prediction folder")
    truths = find_segmentations(gt_dir, "ground-truth folder")
    common = sorted(set(preds) & set(truths))
    if not common:
        raise InputError(
            f"{pred_dir}: no case name matches a case of {gt_dir} (e.g. {sorted(preds)[:3]} vs {sorted(truths)[:3]})"
        )
    rows = []
    for case in common:
        p, p_aff = load_volume(preds[case], "prediction")
        t, t_aff = load_volume(truths[case], "ground truth")
        check_same_grid(
            preds[case], p.shape, p_aff, t.shape, t_aff, what="prediction", ref=f"ground truth {truths[case]}"
        )
        spacing = np.sqrt((t_aff[:3, :3] ** 2).sum(axis=0))
        rows.append({"case": case} | region_metrics(np.rint(p).astype(np.int16), np.rint(t).astype(np.int16), spacing))
        if on_case is not None:
            on_case(case)
    return rows, sorted(set(truths) - set(preds))


def write_metrics_csv(rows: list[dict], path: str | Path) -> Path:
    """Write rows (plus a ``mean`` row) as CSV atomically; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    keys = list(rows[0].keys())
    mean = {"case": "mean"} | {k: float(np.mean([r[k] for r in rows])) for k in keys if k != "case"}
    with atomic_write(p) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows + [mean]:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return p
