"""Radiotherapy target volumes: the standard plan and a model-based plan of the same volume.

The evaluation of PREDICT-GBM (FACTS.md): a growth model is as good as the
recurrence covered by a plan built from its tumour-cell map, at the volume of
the standard plan.

- **Standard target**: the tumour core (necrosis + enhancing) expanded by
  ``margin_mm`` (default 15 mm), measured in millimetres with the voxel spacing
  of the affine (a Euclidean distance transform with ``sampling=spacing``, so
  anisotropic voxels are handled), limited to the brain. When the core is
  empty the whole tumour is used instead (``summary["basis"] ==
  "whole_tumor"`` and a warning).
- **Model target**: exactly as many voxels as the standard target (the same
  volume): the core, then the voxels of highest tumour-cell density within the
  brain; ties (typically density exactly 0 far from the tumour) go to the
  voxels closest to the core (then to the lowest voxel index), so the volumes
  are equal to the voxel. ``threshold`` is the lowest density inside it
  (fraction of carrying capacity). When the density is positive on fewer
  voxels than the target needs (a cropped density, or one that ends at the
  brain's edge), the rest are voxels of density 0 chosen by distance alone:
  ``summary["zero_density_voxels"]`` counts them and a warning says so.
- **Brain**: the ``brain`` mask when given, always joined with the tumour (core
  and whole tumour), so a slightly misregistered brain mask never cuts the
  tumour out of a target. :func:`plan_files` takes ``brain_path``, else a
  ``brain_mask.nii.gz`` lying beside the density file (what ``gliofit run``
  writes), else no brain limit at all: ``plan.json`` then records
  ``"brain": "none"`` and a warning (the CLI prints it on stderr). No brain is
  guessed from the density: a density map has no reliable brain boundary.
- **Recurrence coverage**: the share (0..1) of the recurrence voxels inside each
  target, and of its enhancing part when the recurrence is a BraTS label map
  with enhancing voxels.

Outputs of :func:`plan_files` (on the density's grid and affine):
``target_standard.nii.gz``, ``target_model.nii.gz`` (uint8 0/1) and
``plan.json`` (the summary, with ``coverage`` when a recurrence is given).

>>> plan = make_plan(density, masks["core"], affine, brain=brain, margin_mm=15.0)   # doctest: +SKIP
>>> plan.summary["volumes_cm3"]["standard"] == plan.summary["volumes_cm3"]["model"]  # doctest: +SKIP
True
>>> recurrence_coverage(plan, recurrence_mask)          # doctest: +SKIP
{'standard': 0.71, 'model': 0.78}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from gliofit.common.errors import InputError, check_positive
from gliofit.common.grids import check_same_grid, spacing_mm
from gliofit.common.labels import CONVENTIONS, detect_convention, tumour_masks
from gliofit.common.nifti import load_volume, save_volume

__all__ = ["Plan", "make_plan", "recurrence_coverage", "plan_files", "LABEL_CHOICES", "OUTPUT_FILES"]

LABEL_CHOICES = ("auto", "brats2021", "brats2023")
OUTPUT_FILES = {"target_standard": "target_standard.nii.gz", "target_model": "target_model.nii.gz", "plan": "plan.json"}
_DENSITY_TOL = 1e-6  # interpolation round-off accepted outside [0, 1] (then clipped)


@dataclass
class Plan:
    """Two target volumes on one grid.

    Attributes
    ----------
    standard : (X, Y, Z) bool, tumour core + margin, within the brain.
    model : (X, Y, Z) bool, the model-based target of the same voxel count (highest density).
    threshold : the lowest density inside ``model`` (fraction of carrying capacity).
    affine : (4, 4) voxel-to-world mm matrix of the grid.
    summary : ``volumes_cm3`` (core, whole_tumor, standard, model), ``margin_mm``, ``threshold``,
        ``basis``, ``brain``, ``voxels``, ``dice_standard_model``, ``core_voxels_forced``,
        ``zero_density_voxels`` (voxels of the model target outside the core where the density is 0),
        ``coverage`` (None until a recurrence is scored), ``warnings``.
    """

    standard: np.ndarray
    model: np.ndarray
    threshold: float
    affine: np.ndarray
    summary: dict = field(default_factory=dict)


def _check_density(density: np.ndarray, source: str) -> np.ndarray:
    """float64 copy of a density in [0, 1] (round-off clipped) or InputError naming ``source``."""
    d = np.asarray(density, dtype=np.float64)
    if d.ndim != 3:
        raise InputError(f"{source}: density must be a 3-D array, got shape {tuple(d.shape)}")
    if not np.all(np.isfinite(d)):
        raise InputError(f"{source}: density holds NaN or infinite values")
    lo, hi = float(d.min()), float(d.max())
    if lo < -_DENSITY_TOL or hi > 1 + _DENSITY_TOL:
        raise InputError(
            f"{source}: density must lie in [0, 1] (fraction of carrying capacity), got values in [{lo:.4g}, {hi:.4g}]"
        )
    return np.clip(d, 0.0, 1.0)


def _mask(arr: np.ndarray | None, shape: tuple, name: str) -> np.ndarray | None:
    if arr is None:
        return None
    m = np.asarray(arr)
    if m.shape != tuple(shape):
        raise InputError(f"{name}: shape {tuple(m.shape)} differs from the density's {tuple(shape)}")
    return m > 0 if m.dtype != bool else m


def _distance_within(core: np.ndarray, spacing: np.ndarray, reach_mm: float) -> np.ndarray:
    """Distance (mm) to the nearest core voxel, computed on the core's bounding box padded by ``reach_mm``
    and +inf outside it: every core voxel lies in the box, so inside it the distance is exact, and every
    voxel outside is farther than ``reach_mm`` (so ``dist <= reach_mm`` is exact everywhere)."""
    pad = np.ceil(reach_mm / spacing).astype(int) + 1
    box = []
    for axis in range(3):
        hit = np.flatnonzero(core.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(int(hit[0]) - pad[axis], 0), min(int(hit[-1]) + pad[axis] + 1, core.shape[axis])))
    dist = np.full(core.shape, np.inf)
    dist[tuple(box)] = ndimage.distance_transform_edt(~core[tuple(box)], sampling=spacing)
    return dist


def _closest(
    tied: np.ndarray, m: int, core: np.ndarray, dist: np.ndarray, reach_mm: float, spacing: np.ndarray
) -> np.ndarray:
    """The ``m`` voxels of ``tied`` (flat indices, ascending) closest to the core, equal distances by index.

    ``dist`` is exact up to ``reach_mm`` (:func:`_distance_within`); when fewer than ``m`` lie that close,
    the distance is computed on the whole grid."""
    dt = dist.reshape(-1)[tied]
    near = dt <= reach_mm
    if int(near.sum()) >= m:  # the m closest are all within reach; the rest lie farther
        tied, dt = tied[near], dt[near]
    else:
        dt = ndimage.distance_transform_edt(~core, sampling=spacing).reshape(-1)[tied]
    return tied[np.argsort(dt, kind="stable")[:m]]


def _model_target(
    density: np.ndarray,
    core: np.ndarray,
    allowed: np.ndarray,
    n: int,
    dist: np.ndarray,
    reach_mm: float,
    spacing: np.ndarray,
) -> np.ndarray:
    """The core plus the ``n - |core|`` highest-density voxels of ``allowed``; ties closest to the core
    (:func:`_closest`, with the distance ``dist`` exact up to ``reach_mm``)."""
    model = np.ascontiguousarray(core, dtype=bool).copy()
    k = n - int(model.sum())
    if k <= 0:
        return model
    free = allowed & ~model
    positive = free & (density > 0)
    if int(positive.sum()) >= k:  # the k-th largest density is positive: voxels of density 0 play no part
        free = positive
    idx = np.flatnonzero(free)
    d = density.reshape(-1)[idx]
    if k < idx.size:
        kth = np.partition(d, idx.size - k)[idx.size - k]  # the k-th largest density
        above = idx[d > kth]
        idx = np.concatenate([above, _closest(idx[d == kth], k - above.size, core, dist, reach_mm, spacing)])
    model.reshape(-1)[idx] = True
    return model


def make_plan(
    density: np.ndarray,
    core: np.ndarray,
    affine: np.ndarray,
    *,
    brain: np.ndarray | None = None,
    margin_mm: float = 15.0,
    whole_tumor: np.ndarray | None = None,
) -> Plan:
    """Standard (core + margin) and model-based (same volume, highest density) target volumes.

    Parameters
    ----------
    density : (X, Y, Z) tumour-cell density in [0, 1] (fraction of carrying capacity).
    core : (X, Y, Z) bool tumour core (necrosis + enhancing) on the same grid.
    affine : (4, 4) voxel-to-world mm matrix; its column norms are the voxel spacing.
    brain : (X, Y, Z) bool brain mask, joined with the tumour; None: no brain limit.
    margin_mm : margin around the core, mm (> 0).
    whole_tumor : (X, Y, Z) bool whole tumour; the basis of the standard target when the core is empty.

    Returns
    -------
    :class:`Plan`; both targets hold the same number of voxels.

    Raises
    ------
    InputError
        Shapes differ, margin <= 0, density outside [0, 1] or not finite, no core and no whole tumour.
    """
    margin = check_positive(margin_mm, "margin_mm")
    d = _check_density(density, "density")
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise InputError(f"affine must be a finite 4x4 matrix, got shape {aff.shape}")
    core_m = _mask(core, d.shape, "core")
    wt = _mask(whole_tumor, d.shape, "whole_tumor")
    brain_m = _mask(brain, d.shape, "brain")
    warnings: list[str] = []
    basis = "core"
    if not core_m.any():
        if wt is None or not wt.any():
            raise InputError("the segmentation holds no tumour core and no whole tumour: nothing to plan around")
        core_m, basis = wt, "whole_tumor"
        warnings.append("the tumour core is empty: the standard target is built on the whole tumour")
    tumour = core_m if wt is None else core_m | wt
    if brain_m is None:
        allowed = np.ones(d.shape, dtype=bool)
        warnings.append("no brain mask: the targets are not limited to the brain")
    else:
        allowed = brain_m | tumour
    spacing = spacing_mm(aff)
    reach = margin + 1e-9
    dist = _distance_within(core_m, spacing, reach)
    standard = (dist <= reach) & allowed
    n = int(standard.sum())
    model = _model_target(d, core_m, allowed, n, dist, reach, spacing)
    summary = _summary(d, core_m, wt, standard, model, spacing, aff, margin, basis, brain_m is not None)
    zero = summary["zero_density_voxels"]
    if zero:
        warnings.append(
            f"the model target needs {zero} of its {n} voxels where the density is 0 (chosen by "
            "distance to the core, not by the model): the density does not reach the standard "
            "target's volume"
        )
    summary["warnings"] = warnings
    return Plan(standard=standard, model=model, threshold=summary["threshold"], affine=aff, summary=summary)


def _summary(
    d: np.ndarray,
    core: np.ndarray,
    wt: np.ndarray | None,
    standard: np.ndarray,
    model: np.ndarray,
    spacing: np.ndarray,
    aff: np.ndarray,
    margin: float,
    basis: str,
    has_brain: bool,
) -> dict:
    voxel_cm3 = abs(float(np.linalg.det(aff[:3, :3]))) / 1000.0
    inside = d[model]
    threshold = float(inside.min())
    rest = model & ~core
    forced = int((core & (d < float(d[rest].min()))).sum()) if rest.any() else 0
    n_std, n_mod = int(standard.sum()), int(model.sum())
    overlap = int((standard & model).sum())
    basis_core = basis == "core"
    return {
        "margin_mm": margin,
        "basis": basis,
        "brain": "given" if has_brain else "none",
        "threshold": threshold,
        "volumes_cm3": {
            "core": round(int(core.sum()) * voxel_cm3, 4) if basis_core else 0.0,
            "whole_tumor": None if wt is None else round(int(wt.sum()) * voxel_cm3, 4),
            "standard": round(n_std * voxel_cm3, 4),
            "model": round(n_mod * voxel_cm3, 4),
        },
        "voxels": {"standard": n_std, "model": n_mod},
        "spacing_mm": [round(float(s), 6) for s in spacing],
        "dice_standard_model": round(2.0 * overlap / (n_std + n_mod), 4) if n_std + n_mod else 0.0,
        "core_voxels_forced": forced,
        "zero_density_voxels": int((rest & (d <= 0.0)).sum()),
        "coverage": None,
    }


def recurrence_coverage(plan: Plan, recurrence: np.ndarray, enhancing: np.ndarray | None = None) -> dict:
    """Share (0..1) of the recurrence voxels inside each target.

    Parameters
    ----------
    plan : the targets.
    recurrence : (X, Y, Z) recurrence mask (any value > 0) on the plan's grid.
    enhancing : (X, Y, Z) mask of the enhancing recurrence, optional.

    Returns
    -------
    ``{"standard", "model"}`` and, with ``enhancing``, ``{"standard_enhancing", "model_enhancing"}``
    (None when the enhancing mask is empty).

    Raises
    ------
    InputError
        Shapes differ from the plan's, or the recurrence is empty.
    """
    rec = _mask(recurrence, plan.standard.shape, "recurrence")
    n = int(rec.sum())
    if n == 0:
        raise InputError("recurrence: the mask holds no voxels > 0")
    out = {"standard": float((rec & plan.standard).sum()) / n, "model": float((rec & plan.model).sum()) / n}
    if enhancing is not None:
        enh = _mask(enhancing, plan.standard.shape, "enhancing recurrence")
        ne = int(enh.sum())
        out["standard_enhancing"] = float((enh & plan.standard).sum()) / ne if ne else None
        out["model_enhancing"] = float((enh & plan.model).sum()) / ne if ne else None
    return out


def _as_labels(data: np.ndarray, source: str, what: str) -> np.ndarray:
    """Integer labels, or InputError naming ``source`` for non-finite or fractional values."""
    a = np.asarray(data)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise InputError(f"{source}: {what} must hold integer labels (a label map or a 0/1 mask)")
    return a.astype(np.int64)


def _same_grid(
    path: str | Path, shape: tuple, aff: np.ndarray, ref_shape: tuple, ref_aff: np.ndarray, what: str
) -> None:
    check_same_grid(path, shape, aff, ref_shape, ref_aff, what=what, ref="the density")


def _recurrence_masks(
    path: str | Path, shape: tuple, affine: np.ndarray, labels: str
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(recurrence, enhancing or None, kind): a 0/1 mask, or a BraTS label map with its convention."""
    data, aff = load_volume(path, "recurrence")
    _same_grid(path, data.shape, aff, shape, affine, "recurrence")
    lab = _as_labels(data, str(path), "recurrence")
    rec = lab > 0
    if not rec.any():
        raise InputError(f"{path}: the recurrence holds no voxels > 0")
    present = {int(v) for v in np.unique(lab[rec])}
    if present <= {1}:
        return rec, None, "mask"
    conv = detect_convention(lab, str(path)) if labels == "auto" else CONVENTIONS[labels]
    unknown = present - set(conv.values)
    if unknown:
        raise InputError(f"{path}: recurrence label values {sorted(unknown)} are not in {conv.name}")
    enh = lab == conv.enhancing
    return rec, (enh if enh.any() else None), conv.name


def _brain(
    brain_path: str | Path | None, density_path: Path, shape: tuple, affine: np.ndarray
) -> tuple[np.ndarray | None, str]:
    """The brain mask and where it came from: --brain, brain_mask.nii.gz beside the density, or none."""
    path = Path(brain_path) if brain_path is not None else density_path.parent / "brain_mask.nii.gz"
    if brain_path is None and not path.is_file():
        return None, "none"
    data, aff = load_volume(path, "brain mask")
    _same_grid(path, data.shape, aff, shape, affine, "brain mask")
    brain = np.asarray(data) > 0
    if not brain.any():
        raise InputError(f"{path}: the brain mask is empty")
    return brain, str(path)


def plan_files(
    density_path: str | Path,
    seg_path: str | Path,
    out_dir: str | Path,
    *,
    margin_mm: float = 15.0,
    recurrence_path: str | Path | None = None,
    brain_path: str | Path | None = None,
    labels: str = "auto",
) -> dict[str, Path]:
    """Read the files, plan, write ``OUT/target_standard.nii.gz``, ``OUT/target_model.nii.gz``, ``OUT/plan.json``.

    Parameters
    ----------
    density_path : tumour-cell density NIfTI in [0, 1].
    seg_path : BraTS label map on the density's grid (same shape and affine).
    out_dir : output folder (created; must not be a file).
    margin_mm : the standard target's margin around the core, mm.
    recurrence_path : recurrence label map or 0/1 mask on the same grid: coverage in ``plan.json``.
    brain_path : brain mask on the same grid; default ``brain_mask.nii.gz`` beside the density, else none.
    labels : ``auto``, ``brats2021`` or ``brats2023`` (segmentation and recurrence label maps).

    Returns
    -------
    ``{"target_standard", "target_model", "plan"}`` -> written paths. The targets are uint8 0/1 on the
    density's grid and affine; ``plan.json`` holds :attr:`Plan.summary` (``coverage`` and ``recurrence``
    filled when a recurrence is given).
    """
    margin = check_positive(margin_mm, "margin_mm")
    if labels not in LABEL_CHOICES:
        raise InputError(f"labels must be one of {', '.join(LABEL_CHOICES)}, got {labels!r}", parameter="labels")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output path is a file, not a folder")
    dpath = Path(density_path)
    density, affine = load_volume(dpath, "tumour density")
    density = _check_density(density, str(dpath))
    seg, seg_aff = load_volume(seg_path, "segmentation")
    _same_grid(seg_path, seg.shape, seg_aff, density.shape, affine, "segmentation")
    masks = tumour_masks(
        _as_labels(seg, str(seg_path), "segmentation"), None if labels == "auto" else labels, str(seg_path)
    )
    if not masks["whole_tumor"].any():
        raise InputError(f"{seg_path}: the segmentation holds no tumour voxels (no core and no whole tumour)")
    brain, brain_source = _brain(brain_path, dpath, density.shape, affine)
    rec = _recurrence_masks(recurrence_path, density.shape, affine, labels) if recurrence_path else None

    plan = make_plan(density, masks["core"], affine, brain=brain, margin_mm=margin, whole_tumor=masks["whole_tumor"])
    summary = plan.summary
    summary["brain"] = brain_source
    summary["inputs"] = {"density": str(dpath), "segmentation": str(seg_path)}
    if rec is not None:
        recurrence, enhancing, kind = rec
        cov = recurrence_coverage(plan, recurrence, enhancing)
        summary["coverage"] = {k: (None if v is None else round(v, 4)) for k, v in cov.items()}
        voxel_cm3 = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
        summary["recurrence"] = {
            "file": str(recurrence_path),
            "kind": kind,
            "volume_cm3": round(int(recurrence.sum()) * voxel_cm3, 4),
            "enhancing_cm3": None if enhancing is None else round(int(enhancing.sum()) * voxel_cm3, 4),
        }
    from gliofit.common.io import write_json

    paths = {
        "target_standard": save_volume(plan.standard, affine, out / OUTPUT_FILES["target_standard"], dtype=np.uint8),
        "target_model": save_volume(plan.model, affine, out / OUTPUT_FILES["target_model"], dtype=np.uint8),
    }
    paths["plan"] = write_json(summary, out / OUTPUT_FILES["plan"])
    return paths
