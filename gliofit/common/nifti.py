"""NIfTI reading and atomic writing.

Every output keeps the grid and affine it was computed on; nothing is ever
reoriented silently. Files are written to a temporary name beside the target
and renamed when complete, so a crash never leaves a half-written image.

Reading checks the header before any voxel is decompressed: at most
:data:`MAX_IMAGE_VOXELS` voxels (512³), three dimensions (a trailing singleton
fourth allowed) and a finite, invertible affine. A crafted file (a gzip bomb,
a header declaring a huge image) is refused in O(header) memory.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from gliofit.common.errors import InputError, check_file
from gliofit.common.io import atomic_write

__all__ = ["MAX_IMAGE_VOXELS", "load_volume", "save_volume", "nib"]


def _import_nibabel():
    """nibabel, imported without pydicom when pydicom is not loaded yet.

    nibabel imports pydicom whenever it is installed (and pydicom imports requests), only to parse DICOM
    extensions inside NIfTI headers, which gliofit never reads, at a cost to every command's start-up. Hidden
    during nibabel's own import, pydicom stays importable for the DICOM commands; such an extension is
    then kept as raw bytes. Every gliofit module takes nibabel from here (``from gliofit.common.nifti
    import nib``) so that this is the first import.
    """
    if "pydicom" in sys.modules or "nibabel" in sys.modules:
        import nibabel

        return nibabel
    sys.modules["pydicom"] = None  # type: ignore[assignment]  # ``import pydicom`` raises ImportError
    try:
        import nibabel
    finally:
        del sys.modules["pydicom"]
    return nibabel


nib = _import_nibabel()

MAX_IMAGE_VOXELS = 512**3
"""Largest image :func:`load_volume` reads: 134 217 728 voxels (512 x 512 x 512; a BraTS volume has
8.9 M, a 1 mm ICBM152 one 8.5 M). One float64 copy of such an image is 1 GiB."""


def _checked_header(img, p: Path, what: str) -> tuple[int, int, int]:
    """The 3-D shape ``img``'s header declares, after the size, dimension and affine checks."""
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(f"{p}: {what} must be a 3-D image, got shape {shape}")
    n = math.prod(shape)
    if n > MAX_IMAGE_VOXELS:
        raise InputError(
            f"{p}: {what} declares {' x '.join(map(str, shape))} = {n} voxels, more than the "
            f"maximum of {MAX_IMAGE_VOXELS} (512^3)"
        )
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{p}: {what} has an invalid affine (not finite or not invertible)")
    return shape  # type: ignore[return-value]


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
        Missing, unreadable, not 3-D (a trailing singleton 4th axis is dropped), larger than
        :data:`MAX_IMAGE_VOXELS` or with a non-finite or singular affine.
    """
    p = check_file(path, what)
    try:
        img = nib.load(str(p))
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(f"{p}: cannot read {what} as NIfTI ({type(exc).__name__}: {exc})") from None
    shape = _checked_header(img, p, what)
    try:
        data = np.asanyarray(img.dataobj).reshape(shape)
    except Exception as exc:  # noqa: BLE001 - a truncated or corrupt voxel stream
        raise InputError(f"{p}: cannot read {what} as NIfTI ({type(exc).__name__}: {exc})") from None
    return np.asarray(data), np.asarray(img.affine, dtype=np.float64)


def save_volume(data: np.ndarray, affine: np.ndarray, path: str | Path, dtype: type | None = np.float32) -> Path:
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
