"""Voxel grids: world <-> voxel coordinates and resampling between grids.

A grid is a shape (X, Y, Z) and a (4, 4) affine mapping voxel indices to world
millimetres (RAS). Two resamplers cover every use in gliofit:

- :func:`resample_area` averages by exact overlap (area fraction) when the two
  grids are axis-aligned with each other (the usual case: a coarse simulation
  grid cut from the 1 mm atlas); the right way to coarsen probability maps and
  masks.
- :func:`resample_linear` interpolates (trilinear, or nearest with ``order=0``)
  at the target voxel centres; the way back from a coarse grid to a fine one.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage
from scipy.sparse import csr_matrix

from gliofit.common.errors import InputError

__all__ = [
    "GRID_TOLERANCE_MM",
    "check_same_grid",
    "lps_geometry",
    "RAS_TO_LPS",
    "spacing_mm",
    "voxel_to_world",
    "world_to_voxel",
    "resample_area",
    "resample_linear",
]


GRID_TOLERANCE_MM = 1e-3
"""Largest difference between two affines' entries (mm) for which they describe the same grid."""


def check_same_grid(
    path: object,
    shape: tuple[int, ...],
    affine: np.ndarray,
    ref_shape: tuple[int, ...],
    ref_affine: np.ndarray,
    *,
    what: str = "image",
    ref: str = "the reference",
) -> None:
    """Raise :class:`InputError` naming ``path`` unless (shape, affine) equals (ref_shape, ref_affine).

    Affines agree when every entry differs by at most :data:`GRID_TOLERANCE_MM`.

    >>> check_same_grid("b.nii.gz", (2, 2, 2), np.eye(4), (2, 2, 2), np.eye(4) + 1e-4)
    >>> check_same_grid("b.nii.gz", (2, 2, 3), np.eye(4), (2, 2, 2), np.eye(4), what="mask", ref="a.nii.gz")
    Traceback (most recent call last):
    gliofit.common.errors.InputError: b.nii.gz: mask grid differs from that of a.nii.gz (shape (2, 2, 3) vs (2, 2, 2); affines differ by up to 0 mm)
    """
    a = np.asarray(affine, dtype=np.float64)
    r = np.asarray(ref_affine, dtype=np.float64)
    shape, ref_shape = tuple(int(v) for v in shape), tuple(int(v) for v in ref_shape)
    diff = float(np.abs(a - r).max()) if a.shape == r.shape else float("inf")
    if shape != ref_shape or not diff <= GRID_TOLERANCE_MM:
        raise InputError(
            f"{path}: {what} grid differs from that of {ref} (shape {shape} vs {ref_shape}; "
            f"affines differ by up to {diff:.3g} mm)"
        )


def spacing_mm(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing (3,) in mm: the column norms of the affine's 3x3 part."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))


RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""World RAS mm -> world LPS mm (and back: it is its own inverse), as a (4, 4) matrix."""


def lps_geometry(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ITK geometry of a grid given by a RAS ``affine``: origin (3,) mm, spacing (3,) mm, direction (3, 3).

    nibabel affines map voxels to RAS world mm, ITK (SimpleITK, ANTs) images to
    LPS: the first two world axes change sign. This is the one place that converts.

    >>> origin, spacing, direction = lps_geometry(np.diag([2.0, 2.0, 2.0, 1.0]))
    >>> spacing.tolist(), direction.diagonal().tolist()
    ([2.0, 2.0, 2.0], [-1.0, -1.0, 1.0])
    """
    a = np.asarray(affine, dtype=np.float64)
    sp = spacing_mm(a)
    flip = RAS_TO_LPS[:3, :3]
    return flip @ a[:3, 3], sp, (flip @ a[:3, :3]) / sp


def voxel_to_world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """Map voxel coordinates (..., 3) to world mm (..., 3)."""
    a = np.asarray(affine, dtype=np.float64)
    return np.asarray(ijk, dtype=np.float64) @ a[:3, :3].T + a[:3, 3]


def world_to_voxel(affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Map world mm (..., 3) to (fractional) voxel coordinates (..., 3)."""
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    return np.asarray(xyz, dtype=np.float64) @ inv[:3, :3].T + inv[:3, 3]


def _axis_scaling(src_affine: np.ndarray, dst_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """If dst voxel i maps to src voxel ``scale*i + offset`` per axis, return (scale, offset)."""
    m = np.linalg.inv(src_affine) @ dst_affine
    lin = m[:3, :3]
    if np.abs(lin - np.diag(np.diag(lin))).max() > 1e-6 or np.any(np.diag(lin) <= 0):
        return None
    return np.diag(lin).copy(), m[:3, 3].copy()


def _overlap_matrix(n_src: int, n_dst: int, scale: float, offset: float) -> csr_matrix:
    """(n_dst, n_src) weights: the fraction of dst voxel j covered by src voxel i.

    Voxel i of a grid spans [i - 0.5, i + 0.5) in its own index units; dst
    voxel j spans [offset + scale*(j - 0.5), offset + scale*(j + 0.5)) in src units.
    Rows are normalised by the dst voxel's length, so parts outside the source
    count as zero (outside is empty).
    """
    lo = offset + scale * (np.arange(n_dst) - 0.5)
    hi = lo + scale
    rows, cols, vals = [], [], []
    for j in range(n_dst):
        i0 = max(int(np.floor(lo[j] + 0.5)), 0)
        i1 = min(int(np.ceil(hi[j] + 0.5)), n_src)
        for i in range(i0, i1):
            w = min(hi[j], i + 0.5) - max(lo[j], i - 0.5)
            if w > 1e-12:
                rows.append(j)
                cols.append(i)
                vals.append(w / scale)
    return csr_matrix((vals, (rows, cols)), shape=(n_dst, n_src))


def resample_area(
    data: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, dst_shape: tuple[int, int, int]
) -> np.ndarray:
    """Average ``data`` onto the dst grid by exact voxel overlap (float64 out).

    Falls back to :func:`resample_linear` when the grids are not axis-aligned
    with each other. Voxels outside the source count as 0.
    """
    src_affine = np.asarray(src_affine, dtype=np.float64)
    dst_affine = np.asarray(dst_affine, dtype=np.float64)
    scaled = _axis_scaling(src_affine, dst_affine)
    if scaled is None:
        return resample_linear(data, src_affine, dst_affine, dst_shape)
    scale, offset = scaled
    data = np.asarray(data)
    if data.flags.f_contiguous and not data.flags.c_contiguous:  # NIfTI order: work on the C-ordered transpose
        return np.ascontiguousarray(_area_axes(data.T, scale[::-1], offset[::-1], tuple(dst_shape)[::-1]).T)
    return np.ascontiguousarray(_area_axes(data, scale, offset, tuple(dst_shape)))


def _area_axes(data: np.ndarray, scale, offset, dst_shape: tuple[int, ...]) -> np.ndarray:
    """Overlap-average ``data`` one axis after the other (float64)."""
    out = np.asarray(data, dtype=np.float64)
    for axis in range(3):
        if out.shape[axis] == dst_shape[axis] and abs(scale[axis] - 1.0) < 1e-9 and abs(offset[axis]) < 1e-9:
            continue  # the same voxels along this axis: the overlap matrix is the identity
        w = _overlap_matrix(out.shape[axis], dst_shape[axis], scale[axis], offset[axis])
        moved = np.moveaxis(out, axis, 0)
        flat = w @ moved.reshape(moved.shape[0], -1)
        out = np.moveaxis(flat.reshape((dst_shape[axis],) + moved.shape[1:]), 0, axis)
    return out


def resample_linear(
    data: np.ndarray,
    src_affine: np.ndarray,
    dst_affine: np.ndarray,
    dst_shape: tuple[int, int, int],
    *,
    order: int = 1,
    cval: float = 0.0,
) -> np.ndarray:
    """Sample ``data`` at the dst voxel centres (trilinear by default; ``order=0`` nearest).

    Points outside the source take ``cval``. Output dtype: float32 for order 1,
    the input dtype for order 0.
    """
    m = np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ np.asarray(dst_affine, dtype=np.float64)
    src = np.asarray(data)
    if order == 1:
        src = src.astype(np.float32, copy=False)
    lin = m[:3, :3]
    diagonal = np.diag(lin)
    with warnings.catch_warnings():
        # A diagonal matrix given as its diagonal takes scipy's per-axis path: the same samples, faster.
        warnings.filterwarnings("ignore", "The behavio(u)?r of affine_transform with a 1-D array", UserWarning)
        return ndimage.affine_transform(
            src,
            diagonal if np.array_equal(lin, np.diag(diagonal)) else lin,
            offset=m[:3, 3],
            output_shape=tuple(int(s) for s in dst_shape),
            order=order,
            mode="constant",
            cval=cval,
            prefilter=False,
        )
