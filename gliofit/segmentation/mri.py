"""The four MRI modalities as one checked (4, X, Y, Z) array, and nnU-Net's intensity normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gliofit.common.errors import InputError
from gliofit.common.grids import check_same_grid
from gliofit.common.nifti import load_volume

__all__ = ["MODALITIES", "load_modalities", "normalise_nonzero", "nonzero_bbox"]

MODALITIES = ("t1", "t1c", "t2", "flair")
ImageLike = str | Path | np.ndarray


def load_modalities(
    images: Sequence[ImageLike | None], affine: np.ndarray | None = None, names: Sequence[str] = MODALITIES
) -> tuple[np.ndarray, np.ndarray]:
    """Read and check the input images.

    Parameters
    ----------
    images : one NIfTI path or (X, Y, Z) array per modality, in ``names`` order.
    affine : (4, 4) voxel-to-world matrix (mm) for array inputs; identity if None.
    names : modality names for messages.

    Returns
    -------
    data : (C, X, Y, Z) float32 in the files' voxel order.
    affine : (4, 4) float64 of the first image.

    Raises
    ------
    InputError
        A missing modality, a file that is not 3-D, or images whose shapes or
        affines differ (naming the file).
    """
    vols, ref_affine, ref_src = [], None, ""
    for name, img in zip(names, images, strict=True):
        if img is None:
            raise InputError(f"missing modality: {name} (need {', '.join(names)})")
        if isinstance(img, np.ndarray):
            if img.ndim != 3:
                raise InputError(f"{name}: array must be 3-D, got shape {img.shape}")
            data, aff, src = img, np.eye(4) if affine is None else np.asarray(affine, float), f"{name} array"
        else:
            data, aff = load_volume(img, f"{name} image")
            src = str(img)
        if vols:
            check_same_grid(
                src, data.shape, aff, vols[0].shape, ref_affine, what=f"{name} image (co-register first)", ref=ref_src
            )
        if ref_affine is None:
            ref_affine, ref_src = aff, src
        vols.append(np.asarray(data, dtype=np.float32))
    out = np.stack(vols)
    if not np.all(np.isfinite(out)):
        raise InputError(f"{ref_src} ...: images contain NaN or infinite values")
    return out, ref_affine


def nonzero_bbox(data: np.ndarray) -> tuple[slice, slice, slice]:
    """Bounding box of voxels nonzero in any channel of (C, X, Y, Z) ``data`` (whole volume if none)."""
    mask = np.any(data != 0, axis=0)
    if not mask.any():
        return tuple(slice(0, s) for s in mask.shape)  # type: ignore[return-value]
    out = []
    for ax in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)  # type: ignore[return-value]


def normalise_nonzero(data: np.ndarray) -> np.ndarray:
    """nnU-Net's z-score with the nonzero mask (its BraTS setting).

    Parameters
    ----------
    data : (C, X, Y, Z) float32; voxels zero in every channel are background.

    Returns
    -------
    (C, X, Y, Z) float32: per channel (x - mean) / max(std, 1e-8) over the
    brain mask (nonzero in any channel, holes filled), 0 outside it.
    """
    from scipy.ndimage import binary_fill_holes

    mask = binary_fill_holes(np.any(data != 0, axis=0))
    out = np.zeros_like(data, dtype=np.float32)
    if not mask.any():
        return out
    for c in range(data.shape[0]):
        vals = data[c][mask].astype(np.float64)
        mean, std = vals.mean(), vals.std()
        out[c][mask] = ((vals - mean) / max(std, 1e-8)).astype(np.float32)
    return out
