"""The observation model: a tumour segmentation -> whole-tumour and core masks on the database grid.

Input is a label map (BraTS 2021 or 2023+, :mod:`gliofit.common.labels`) or
two binary masks (whole tumour, core). Whole tumour = every tumour label,
core = necrosis + enhancing; a core voxel outside the whole tumour is added
to it.

Spaces
------
*Atlas space*: the segmentation's affine maps into the atlas's world mm. The caller says so
(``in_atlas_space=True``), or it is detected, only when the segmentation's shape and affine equal
those of the 1 mm atlas grid or of the database grid (:attr:`Observation.space_note` says which). It
is put on the database grid directly. A grid that merely lies along the atlas's axes is not taken for
atlas space: a segmentation whose affine was shifted would otherwise be read in the wrong place.

*Patient space*: anything else. A patient T1 (``t1=``) is registered to the
atlas T1 (:mod:`gliofit.inverse.registration`) and the masks follow the found
transform; without a T1 (or ``in_atlas_space=True``) such input is an InputError.

Resampling (documented, exact by construction for axis-aligned grids)
-------------------------------------------------------------------
Each mask is averaged onto the target grid by exact voxel overlap (area
fraction, :func:`gliofit.common.grids.resample_area`) and a target voxel is in
the mask when at least half of it is covered (fraction >= 0.5). Patient-space
masks are first interpolated trilinearly through the registration onto the
1 mm atlas grid (fraction >= 0.5 there), then coarsened the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gliofit.common.errors import InputError, check_file
from gliofit.common.grids import check_same_grid, resample_area, resample_linear, voxel_to_world
from gliofit.common.labels import CONVENTIONS, detect_convention, label_values, tumour_masks
from gliofit.common.nifti import load_volume
from gliofit.common.timing import Stopwatch
from gliofit.growth.atlas import Atlas
from gliofit.inverse.registration import AtlasRegistration

__all__ = [
    "Observation",
    "LABEL_MODES",
    "MASK_FRACTION",
    "observe",
    "masks_from_file",
    "is_atlas_space",
    "same_grid",
    "to_grid_masks",
]

LABEL_MODES = ("auto", "brats2021", "brats2023", "masks")
MASK_FRACTION = 0.5
"""A target voxel belongs to a mask when at least this fraction of it is covered (to rounding, 1e-6)."""
_EPS = 1e-6


@dataclass(eq=False)
class Observation:
    """A patient's tumour masks on the database grid and on the atlas grid.

    Attributes
    ----------
    wt, core : (X, Y, Z) bool whole tumour and core on the database grid.
    wt_atlas, core_atlas : the same on the (1 mm) atlas grid.
    source : the segmentation file.
    convention : ``brats2021``, ``brats2023`` or ``masks``.
    space : ``"atlas"`` (input affine in atlas mm) or ``"patient"`` (registered).
    input_shape, input_affine : the input's grid (outputs go back onto it).
    registration : the :class:`~gliofit.inverse.registration.Registration` of a patient-space input.
    timings_s : ``load`` and ``registration`` seconds.
    space_note : how the space was decided (declared, detected from the grid, registered).
    """

    wt: np.ndarray
    core: np.ndarray
    wt_atlas: np.ndarray
    core_atlas: np.ndarray
    source: Path
    convention: str
    space: str
    input_shape: tuple[int, int, int]
    input_affine: np.ndarray
    registration: AtlasRegistration | None = None
    timings_s: dict = field(default_factory=dict)
    space_note: str = ""

    def on_atlas_grid(self, atlas: Atlas) -> bool:
        """True when the input lies on the atlas grid itself (same shape and affine, no registration)."""
        return (
            self.registration is None
            and tuple(self.input_shape) == atlas.shape
            and np.array_equal(self.input_affine, atlas.affine)
        )

    def to_input_grid(self, atlas_volume: np.ndarray, atlas: Atlas) -> np.ndarray:
        """Map a float volume on the atlas grid onto the input's grid (trilinear; float32)."""
        if self.registration is not None:
            return self.registration.to_patient(atlas_volume, atlas, self.input_shape, self.input_affine)
        if self.on_atlas_grid(atlas):
            return np.array(atlas_volume, dtype=np.float32)
        return resample_linear(atlas_volume, atlas.affine, self.input_affine, self.input_shape)


def _binary(data: np.ndarray, path: Path, what: str) -> np.ndarray:
    values = label_values(data)
    if not np.all(np.isin(values, (0, 1))):
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (" ..." if len(values) > 6 else "")
        raise InputError(f"{path}: {what} must be a binary mask (0/1), got values {shown}")
    return data == 1


def _integer_labels(data: np.ndarray, path: Path) -> np.ndarray:
    if np.issubdtype(data.dtype, np.integer):
        return data
    if not np.all(np.isfinite(data)) or not np.allclose(data, np.rint(data)):
        raise InputError(f"{path}: a label map must hold integer labels, got non-integer values")
    return np.rint(data).astype(np.int64)


def masks_from_file(
    seg: str | Path, *, labels: str = "auto", core: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Read whole-tumour and core masks from a label map or two mask files.

    Parameters
    ----------
    seg : label-map NIfTI (or the whole-tumour mask when ``labels="masks"``).
    labels : ``auto`` (detect; ``masks`` when ``core`` is given), ``brats2021``, ``brats2023`` or ``masks``.
    core : the core mask NIfTI (``labels="masks"`` only), on the same grid as ``seg``.

    Returns
    -------
    wt, core : (X, Y, Z) bool on the input's grid; affine : (4, 4) float64; the convention used.
    """
    if labels not in LABEL_MODES:
        raise InputError(f"labels must be one of {', '.join(LABEL_MODES)}, got {labels!r}", parameter="labels")
    seg = check_file(seg, "segmentation")
    if labels == "auto" and core is not None:
        labels = "masks"
    if labels == "masks":
        if core is None:
            raise InputError(f"{seg}: labels masks needs the core mask too (core)", parameter=("labels", "core"))
        data, affine = load_volume(seg, "whole-tumour mask")
        cdata, caffine = load_volume(core, "core mask")
        check_same_grid(core, cdata.shape, caffine, data.shape, affine, what="core mask", ref=str(seg))
        wt = _binary(data, seg, "whole-tumour mask")
        co = _binary(cdata, Path(core), "core mask")
        wt = wt | co
        convention = "masks"
    else:
        if core is not None:
            raise InputError(f"{core}: --core is only used with --labels masks")
        data, affine = load_volume(seg, "segmentation")
        lab = _integer_labels(data, seg)
        if labels == "auto":
            conv = detect_convention(lab, str(seg))
        else:
            conv = CONVENTIONS[labels]
            unknown = sorted(set(label_values(lab).tolist()) - {0, *conv.values})
            if unknown:
                raise InputError(
                    f"{seg}: label values {unknown} are not part of {labels} ({', '.join(map(str, conv.values))})"
                )
        m = tumour_masks(lab, conv, str(seg))
        wt, co, convention = m["whole_tumor"], m["core"], conv.name
    if not wt.any():
        raise InputError(f"{seg}: the segmentation holds no tumour voxels")
    return wt, co, affine, convention


def is_atlas_space(affine: np.ndarray, shape: tuple[int, ...], atlas: Atlas) -> bool:
    """True when a grid lies in the atlas's world mm: axes along the atlas's axes (no rotation,
    no flip) and its centre on the atlas grid."""
    m = np.linalg.inv(atlas.affine) @ np.asarray(affine, dtype=np.float64)
    lin = m[:3, :3]
    if np.abs(lin - np.diag(np.diag(lin))).max() > 1e-3 or np.any(np.diag(lin) <= 0):
        return False
    centre = voxel_to_world(affine, (np.asarray(shape, dtype=np.float64) - 1) / 2.0)
    ijk = np.linalg.solve(atlas.affine[:3, :3], centre - atlas.affine[:3, 3])
    return bool(np.all(ijk >= -0.5) and np.all(ijk <= np.asarray(atlas.shape) - 0.5))


def same_grid(affine: np.ndarray, shape: tuple[int, ...], grid: Atlas, tol_mm: float = 1e-3) -> bool:
    """True when a volume's shape equals ``grid.shape`` and its affine equals ``grid.affine`` (to ``tol_mm``)."""
    return tuple(int(s) for s in shape) == tuple(grid.shape) and bool(
        np.allclose(np.asarray(affine, dtype=np.float64), grid.affine, atol=tol_mm)
    )


def to_grid_masks(fraction: np.ndarray, src_affine: np.ndarray, grid: Atlas) -> np.ndarray:
    """A mask (or a coverage fraction in [0, 1]) on ``grid``: area fraction, then >= :data:`MASK_FRACTION`."""
    if same_grid(src_affine, np.shape(fraction), grid):
        return np.asarray(fraction) >= MASK_FRACTION - _EPS
    frac = resample_area(np.asarray(fraction, dtype=np.float64), src_affine, grid.affine, grid.shape)
    return frac >= MASK_FRACTION - _EPS


def observe(
    seg: str | Path,
    *,
    grid: Atlas,
    atlas: Atlas,
    labels: str = "auto",
    core: str | Path | None = None,
    t1: str | Path | None = None,
    in_atlas_space: bool = False,
    registration: AtlasRegistration | None = None,
) -> Observation:
    """Read a segmentation and put its whole-tumour and core masks on the database grid.

    Parameters
    ----------
    seg : label map or whole-tumour mask (NIfTI), see :func:`masks_from_file`.
    grid : the database grid (``db.grid``).
    atlas : the atlas the database was built on (1 mm ICBM152 by default); must carry a T1 for ``t1=``.
    labels, core : label convention, core mask file (:func:`masks_from_file`).
    t1 : the patient's T1 on the segmentation's grid: register it to the atlas (patient-space input).
    in_atlas_space : trust the segmentation's affine as atlas world mm.
    registration : a registration already found for this patient (an :class:`AtlasRegistration`, e.g.
        :class:`gliofit.pipelines.registration.AntsRegistration`); the masks follow it (patient space).

    Raises
    ------
    InputError
        Unreadable or non-3-D file, unknown labels, an empty tumour, a patient-space
        segmentation without ``t1`` or ``in_atlas_space``.
    """
    watch = Stopwatch(("load", "registration"))
    with watch.stage("load"):
        wt, co, affine, convention = masks_from_file(seg, labels=labels, core=core)
        seg = Path(seg)
        if registration is not None and (t1 is not None or in_atlas_space):
            raise InputError(
                f"{seg}: give one of registration, t1 and in_atlas_space, not several",
                parameter=("registration", "t1", "in_atlas_space"),
            )
        if registration is None and t1 is not None:
            t1_data, t1_affine = load_volume(t1, "T1")
            check_same_grid(t1, t1_data.shape, t1_affine, wt.shape, affine, what="T1", ref="the segmentation")
    if registration is not None or t1 is not None:
        with watch.stage("registration"):
            if registration is None:
                from gliofit.inverse.registration import register_to_atlas

                registration = register_to_atlas(t1_data, t1_affine, atlas, exclude=wt, source=str(t1))
            wt_atlas = np.asarray(registration.to_atlas(wt, affine, atlas)) >= MASK_FRACTION - _EPS
            core_atlas = np.asarray(registration.to_atlas(co, affine, atlas)) >= MASK_FRACTION - _EPS
            space = "patient"
            note = "patient space: registered to the atlas"
    else:
        with watch.stage("load"):
            if in_atlas_space:
                note = "atlas space: declared (in_atlas_space)"
            elif same_grid(affine, wt.shape, atlas):
                note = f"atlas space: detected (shape and affine equal the {atlas.name} atlas grid)"
            elif same_grid(affine, wt.shape, grid):
                note = "atlas space: detected (shape and affine equal the database grid)"
            else:
                raise InputError(
                    f"{seg}: is not in atlas space (its shape and affine are not those of the "
                    f"{atlas.name} atlas grid); give t1 to register it, or in_atlas_space if its "
                    "affine is atlas world mm",
                    parameter=("t1", "in_atlas_space"),
                )
            wt_atlas = to_grid_masks(wt, affine, atlas)
            core_atlas = to_grid_masks(co, affine, atlas)
            space = "atlas"
    with watch.stage("load"):
        src, src_affine = ((wt_atlas, core_atlas), atlas.affine) if registration is not None else ((wt, co), affine)
        wt_grid = to_grid_masks(src[0], src_affine, grid)
        core_grid = to_grid_masks(src[1], src_affine, grid) & wt_grid
        if not wt_grid.any():
            raise InputError(
                f"{seg}: the tumour covers no database voxel ({grid.spacing_mm[0]:g} mm) after "
                "resampling; is it inside the atlas's brain, and larger than half a voxel?"
            )
    return Observation(
        wt_grid,
        core_grid,
        wt_atlas,
        core_atlas & wt_atlas,
        seg,
        convention,
        space,
        tuple(int(s) for s in wt.shape),
        affine,
        registration,
        dict(watch.seconds),
        note,
    )
