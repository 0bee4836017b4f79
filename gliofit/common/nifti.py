"""NIfTI reading and atomic writing.

Every output keeps the grid and affine it was computed on; nothing is ever
reoriented silently. Files are written to a temporary name beside the target
and renamed when complete, so a crash never leaves a half-written image.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from gliofit.common.errors import InputError, check_file
from gliofit.common.io import atomic_write

__all__ = ["load_volume", "save_volume"]


def load_volume(path: str | Path, what: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Read a 3-D NIfTI file.

    Parameters
    ----------
    path : path to a ``.nii`` or ``.nii.gz`` file.
    what : a word for the error message ("GM map", "segmentation" ...).

    Returns
    -------
    data : (X, Y, Z) array in the file's voxel order (float64 for scaled data,
        otherwise the stored dtype).
    affine : (4, 4) float64 voxel-to-world (mm, RAS) matrix.

    Raises
    ------
    InputError
        Missing, unreadable or not 3-D (a trailing singleton 4th axis is dropped).
    """
    p = check_file(path, what)
    try:
        img = nib.load(str(p))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(f"{p}: cannot read {what} as NIfTI ({type(exc).__name__}: {exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{p}: {what} must be a 3-D image, got shape {tuple(data.shape)}")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{p}: {what} has an invalid affine")
    return np.asarray(data), affine


def save_volume(
    data: np.ndarray, affine: np.ndarray, path: str | Path, dtype: type | None = np.float32
) -> Path:
    """Write ``data`` with ``affine`` to ``path`` atomically; returns the path.

    Parent folders are created. ``dtype`` (default float32) is the stored type;
    ``None`` keeps the array's own.
    """
    p = Path(path)
    arr = np.asarray(data if dtype is None else np.asarray(data, dtype=dtype))
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm", "sec")
    with atomic_write(p) as tmp:
        nib.save(img, str(tmp))
    return p
