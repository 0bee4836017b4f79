"""ANTs transform files applied by our own resampler: the result of ``ants.apply_transforms``, on every core.

ANTs (ITK) resamples a 1 mm volume through a SyN warp on one thread; this module reads the same
transform files and pulls the volume in one numba pass over the output grid, split into slabs on
:func:`~gliofit.common.executors.cpu_threads` threads, with ITK's rules:

* points: output voxel -> world (LPS) -> each transform of the list in turn, first to last (an affine
  file ``.mat``, inverted where asked; a displacement field ``.nii.gz``, whose vector is added) ->
  the source voxel;
* a displacement field is trilinear inside its grid and zero outside it;
* a source point is inside when its continuous index lies in [-0.5, n - 0.5) on every axis, else the
  value is 0; trilinear (or nearest, halves rounded up) with the index clamped to [0, n - 1].

An ITK affine file holds a matrix ``M``, a translation ``t`` and a centre ``c``:
``T(x) = M (x - c) + c + t`` in LPS mm. Consecutive affines are multiplied into one 4 x 4 matrix, so a
chain is ``pre`` (output voxel -> LPS, then the affines before the field), at most one field, and
``post`` (the affines after it, then LPS -> source voxel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from gliofit.common.errors import InputError
from gliofit.common.executors import cpu_threads
from gliofit.common.grids import RAS_TO_LPS, spacing_mm

__all__ = ["TransformChain", "read_affine_lps", "read_chain", "pull", "apply_transform_files", "resample_isotropic"]


@dataclass(frozen=True)
class TransformChain:
    """A list of ANTs transforms as matrices and at most one displacement field (LPS mm).

    Attributes
    ----------
    before : (4, 4) the affines applied before the field (world LPS -> world LPS), float64.
    field : (X, Y, Z, 3) float32 displacement in LPS mm, or None.
    field_index : (4, 4) world LPS -> the field's continuous voxel index (identity when no field).
    after : (4, 4) the affines applied after the field, float64.
    """

    before: np.ndarray
    field: np.ndarray | None
    field_index: np.ndarray
    after: np.ndarray


IDENTITY = TransformChain(np.eye(4), None, np.eye(4), np.eye(4))
"""The empty transform list."""


def read_affine_lps(path: str, invert: bool) -> np.ndarray:
    """The (4, 4) LPS mm matrix of an ITK affine file, inverted when ``invert``."""
    import ants

    tr = ants.read_transform(path)
    p, c = np.asarray(tr.parameters, np.float64), np.asarray(tr.fixed_parameters, np.float64)
    if p.size != 12 or c.size != 3:
        raise InputError(f"{path}: not a 3-D affine transform ({p.size} parameters)")
    m = np.eye(4)
    m[:3, :3] = p[:9].reshape(3, 3)
    m[:3, 3] = p[9:] + c - m[:3, :3] @ c
    return np.linalg.inv(m) if invert else m


def _field(path: str) -> tuple[np.ndarray, np.ndarray]:
    """A displacement field (X, Y, Z, 3) float32 in LPS mm and its LPS -> voxel index matrix."""
    import ants

    img = ants.image_read(path)
    if img.components != 3 or img.dimension != 3:
        raise InputError(f"{path}: not a 3-D displacement field ({img.dimension}-D, {img.components} components)")
    to_world = np.eye(4)
    to_world[:3, :3] = np.asarray(img.direction, np.float64) * np.asarray(img.spacing, np.float64)
    to_world[:3, 3] = img.origin
    return np.ascontiguousarray(img.numpy(), dtype=np.float32), np.linalg.inv(to_world)


def read_chain(transforms: list[str], invert: list[bool]) -> TransformChain:
    """The transform files, applied to a point first to last (ANTs's ``transformlist`` order for points).

    Raises
    ------
    InputError
        A file that is not an affine or a 3-D displacement field, a field to invert, more than one field.
    """
    before, after = np.eye(4), np.eye(4)
    field, field_index = None, np.eye(4)
    for path, inv in zip(transforms, invert, strict=True):
        if path.endswith(".mat"):
            if field is None:
                before = read_affine_lps(path, inv) @ before
            else:
                after = read_affine_lps(path, inv) @ after
        elif inv or field is not None:
            raise InputError(f"{path}: a displacement field can be applied once and only forwards here")
        else:
            field, field_index = _field(path)
    return TransformChain(before, field, field_index, after)


def pull(
    data: np.ndarray,
    src_affine: np.ndarray,
    shape: tuple[int, int, int],
    dst_affine: np.ndarray,
    chain: TransformChain,
    *,
    nearest: bool,
) -> np.ndarray:
    """``data`` (X, Y, Z) on ``src_affine`` (RAS) resampled onto the grid ``(shape, dst_affine)`` (RAS)
    through ``chain`` (a destination point maps to a source point); float32, 0 outside the source."""
    pre = chain.before @ RAS_TO_LPS @ np.asarray(dst_affine, np.float64)
    post = np.linalg.inv(np.asarray(src_affine, np.float64)) @ RAS_TO_LPS @ chain.after
    field = np.zeros((1, 1, 1, 3), np.float32) if chain.field is None else chain.field
    src = np.ascontiguousarray(data, dtype=np.float32)
    out = np.empty(tuple(int(s) for s in shape), np.float32)
    args = (src, pre, field, chain.field_index, post, chain.field is not None, nearest, out)
    slabs = min(cpu_threads(), out.shape[0])
    if slabs <= 1:
        _pull(*args, 0, out.shape[0])
        return out
    from concurrent.futures import ThreadPoolExecutor

    edges = np.linspace(0, out.shape[0], slabs + 1).astype(int)
    with ThreadPoolExecutor(slabs, thread_name_prefix="gliofit-warp") as pool:
        for done in [pool.submit(_pull, *args, int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]:
            done.result()
    return out


def apply_transform_files(
    data: np.ndarray,
    src_affine: np.ndarray,
    shape: tuple[int, int, int],
    dst_affine: np.ndarray,
    transforms: list[str],
    *,
    nearest: bool,
) -> np.ndarray:
    """:func:`pull` through ANTs transform files (none inverted); an empty list is the identity."""
    return pull(data, src_affine, shape, dst_affine, read_chain(transforms, [False] * len(transforms)), nearest=nearest)


def resample_isotropic(
    data: np.ndarray, affine: np.ndarray, spacing: float, *, nearest: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``data`` on the grid of ``spacing`` mm with the same first voxel centre and axes, as ANTs's
    ``resample_image(..., use_voxels=False)`` makes it: n' = round(n · old spacing / ``spacing``) voxels
    per axis (halves up). Returns (float32 array, its RAS affine)."""
    aff = np.asarray(affine, np.float64)
    sp = spacing_mm(aff)
    shape = tuple(int(np.floor(n * s / spacing + 0.5)) for n, s in zip(data.shape, sp))
    grid = aff.copy()
    grid[:3, :3] = aff[:3, :3] / sp * spacing
    return pull(data, aff, shape, grid, IDENTITY, nearest=nearest), grid


@njit(inline="always")
def _inside(c0, c1, c2, n0, n1, n2):
    return -0.5 <= c0 < n0 - 0.5 and -0.5 <= c1 < n1 - 0.5 and -0.5 <= c2 < n2 - 0.5


@njit(inline="always")
def _corner(c, n):
    """Lower neighbour, upper neighbour and weight of the upper one of a continuous index clamped to [0, n-1]."""
    c = min(max(c, 0.0), n - 1.0)
    lo = min(int(np.floor(c)), n - 1)
    return lo, min(lo + 1, n - 1), c - lo


@njit(inline="always")
def _trilinear(a, c0, c1, c2, comp):
    """Trilinear value of a[..., comp] (a 4-D array) at a continuous index inside the grid."""
    i0, i1, w0 = _corner(c0, a.shape[0])
    j0, j1, w1 = _corner(c1, a.shape[1])
    k0, k1, w2 = _corner(c2, a.shape[2])
    v00 = a[i0, j0, k0, comp] * (1 - w2) + a[i0, j0, k1, comp] * w2
    v01 = a[i0, j1, k0, comp] * (1 - w2) + a[i0, j1, k1, comp] * w2
    v10 = a[i1, j0, k0, comp] * (1 - w2) + a[i1, j0, k1, comp] * w2
    v11 = a[i1, j1, k0, comp] * (1 - w2) + a[i1, j1, k1, comp] * w2
    return (v00 * (1 - w1) + v01 * w1) * (1 - w0) + (v10 * (1 - w1) + v11 * w1) * w0


@njit(cache=True, nogil=True)
def _pull(src, pre, field, field_index, post, has_field, nearest, out, i_start, i_stop):  # pragma: no cover
    """out[i_start:i_stop] (a slab along the first axis; slabs run on threads, the GIL released)."""
    n0, n1, n2 = src.shape
    f0, f1, f2 = field.shape[0], field.shape[1], field.shape[2]
    src4 = src.reshape(n0, n1, n2, 1)
    for i in range(i_start, i_stop):
        for j in range(out.shape[1]):
            for k in range(out.shape[2]):
                x = pre[0, 0] * i + pre[0, 1] * j + pre[0, 2] * k + pre[0, 3]
                y = pre[1, 0] * i + pre[1, 1] * j + pre[1, 2] * k + pre[1, 3]
                z = pre[2, 0] * i + pre[2, 1] * j + pre[2, 2] * k + pre[2, 3]
                if has_field:
                    c0 = field_index[0, 0] * x + field_index[0, 1] * y + field_index[0, 2] * z + field_index[0, 3]
                    c1 = field_index[1, 0] * x + field_index[1, 1] * y + field_index[1, 2] * z + field_index[1, 3]
                    c2 = field_index[2, 0] * x + field_index[2, 1] * y + field_index[2, 2] * z + field_index[2, 3]
                    if _inside(c0, c1, c2, f0, f1, f2):
                        dx = _trilinear(field, c0, c1, c2, 0)
                        dy = _trilinear(field, c0, c1, c2, 1)
                        dz = _trilinear(field, c0, c1, c2, 2)
                        x, y, z = x + dx, y + dy, z + dz
                s0 = post[0, 0] * x + post[0, 1] * y + post[0, 2] * z + post[0, 3]
                s1 = post[1, 0] * x + post[1, 1] * y + post[1, 2] * z + post[1, 3]
                s2 = post[2, 0] * x + post[2, 1] * y + post[2, 2] * z + post[2, 3]
                if not _inside(s0, s1, s2, n0, n1, n2):
                    out[i, j, k] = 0.0
                elif nearest:
                    out[i, j, k] = src[int(np.floor(s0 + 0.5)), int(np.floor(s1 + 0.5)), int(np.floor(s2 + 0.5))]
                else:
                    out[i, j, k] = _trilinear(src4, s0, s1, s2, 0)
