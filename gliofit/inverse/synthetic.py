"""Synthetic patients: tumours grown by the solver with known parameters and realistic segmentation noise.

A synthetic patient is what the inverse solver is tested and benchmarked on:

1. parameters drawn from the reference ranges of FACTS.md (:func:`sample_parameters`), restricted so the
   visible tumour is realistic (whole tumour about 1-300 cm³, a core present) and seeded in white or grey
   matter;
2. a tumour grown by the forward solver at ``resolution_mm`` (1 mm by default) on the atlas resampled for
   that purpose, independently of any database (other grid, continuous seed point, own time);
3. the density mapped to the 1 mm atlas grid and thresholded (whole tumour ``u >= 0.25``, core
   ``u >= 0.675``), with segmentation noise (:func:`segmentation_noise`): a small rigid misregistration
   (shift <= 2 mm, rotation <= 2 degrees about the brain's centre) and boundary jitter of 1-2 voxels (a
   smooth random field added to each mask's signed distance before re-thresholding at 0);
4. labels in the BraTS 2023 convention on the atlas grid: SNFH (2) where whole tumour and not core, the core
   split into an enhancing rim (ET, 3) and a non-enhancing inside (NETC, 1) when it is thick enough.

Sampling is apart from growing; every random number comes from the caller's generator, and everything
drawn is recorded in ``truth.json``.

>>> rng = np.random.default_rng(0)
>>> params = sample_parameters(rng, resample_atlas(atlas, 4.0))    # doctest: +SKIP
>>> patient = grow_patient(atlas, params, rng=rng)                   # doctest: +SKIP
>>> patient.write("case-000")                                        # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from gliofit.common.errors import InputError
from gliofit.common.grids import voxel_to_world
from gliofit.common.io import write_json
from gliofit.common.nifti import load_volume, save_volume
from gliofit.common.units import DEFAULT_THRESHOLD_CORE, DEFAULT_THRESHOLD_EDEMA, derived_parameters
from gliofit.growth.atlas import Atlas, resample_atlas, to_atlas_grid
from gliofit.simulations_db.design import origin_weights
from gliofit.growth.solver import SolverConfig, simulate

__all__ = [
    "SyntheticPatient",
    "sample_parameters",
    "onset_days",
    "grow_patient",
    "segmentation_noise",
    "masks_to_labels",
    "read_patient",
    "grow_cohort",
    "grid_tissue_ok",
    "segment_patient",
    "truth_record",
    "SEED_DRAWS",
    "REFERENCE_RANGES",
    "RECURRENCE_DAYS",
]

REFERENCE_RANGES = {"D_mm2_per_day": (0.02, 1.5), "rho_per_day": (0.002, 0.2), "T_days": (50.0, 1500.0)}
"""FACTS.md reference ranges of the forward model's parameters."""
VISIBLE_VOLUME_CM3 = (3.0, 250.0)
"""Range of the whole-tumour volume that :func:`sample_parameters` aims at (log-uniform), cm³."""
MIN_CORE_CM3 = 0.5
"""Smallest core volume a sampled tumour must show, cm³."""
RECURRENCE_DAYS = (60.0, 240.0)
"""The recurrence is the true model grown on for ΔT days, ΔT uniform in this range (PREDICT-GBM protocol)."""


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def onset_days(D_mm2_per_day: float, rho_per_day: float, seed_sigma_mm: float = SolverConfig.seed_sigma_mm) -> float:
    """Days until the seed saturates, an upper estimate: the solver's Gaussian seed (mass (2 pi)^1.5 sigma³)
    spreads as a heat kernel and grows as exp(rho t); its peak ``M exp(rho t) / (4 pi D t)^1.5`` reaches 1 at
    the fixed point ``t = ln((4 pi D t)^1.5 / M) / rho`` (plus 1/rho for the logistic bend)."""
    mass = (2 * np.pi) ** 1.5 * seed_sigma_mm**3
    t = 1.0 / rho_per_day
    for _ in range(50):
        t = (max(np.log((4 * np.pi * D_mm2_per_day * t) ** 1.5 / mass), 0.0) + 1.0) / rho_per_day
    return float(t)


def _visible_volumes(
    grid: Atlas, D: float, rho: float, origin_mm: np.ndarray, times: np.ndarray, thresholds: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Whole-tumour and core volumes (cm³) at ``times`` (days) of one simulation on ``grid``."""
    u = simulate(grid, [D], [rho], [origin_mm], times)[0]
    voxel_cm3 = grid.voxel_volume_mm3 / 1000.0
    flat = u.reshape(len(times), -1)
    return ((flat >= thresholds[0]).sum(axis=1) * voxel_cm3, (flat >= thresholds[1]).sum(axis=1) * voxel_cm3)


def sample_parameters(
    rng: np.random.Generator,
    grid: Atlas,
    *,
    thresholds: tuple[float, float] = (DEFAULT_THRESHOLD_EDEMA, DEFAULT_THRESHOLD_CORE),
    volume_cm3: tuple[float, float] = VISIBLE_VOLUME_CM3,
    max_tries: int = 200,
) -> dict:
    """Draw D, rho, T and a seed point from the reference ranges, restricted to realistic visible tumours.

    D (mm²/day) and rho (1/day) are log-uniform over their reference ranges; the seed point is a voxel of
    ``grid`` drawn with weight WM + 0.25 GM (tissue >= 0.5, never CSF), moved uniformly within that voxel
    (so it is no database grid point). A target whole-tumour volume is drawn log-uniformly in
    ``volume_cm3``; one simulation on ``grid`` with snapshots from 50 days to a horizon (<= 1500 days, from
    the front speed and :func:`onset_days`) gives the time T at which the
    visible tumour reaches it (log-linear interpolation between snapshots). A draw is kept when such a T
    exists and the core then holds at least :data:`MIN_CORE_CM3`; otherwise everything is drawn again.

    Parameters
    ----------
    rng : the generator every number is drawn from.
    grid : tissue maps of the check simulation (a coarse grid, e.g. 4 mm, keeps it under a second).
    thresholds : (edema, core) imaging thresholds defining the visible volumes.
    volume_cm3 : range of the target whole-tumour volume, cm³.

    Returns
    -------
    dict: ``D_mm2_per_day``, ``rho_per_day``, ``T_days`` (floats), ``origin_mm`` (list of 3 world mm), and
    ``check_whole_tumor_cm3``, ``check_core_cm3``: the volumes at T on ``grid`` (interpolated).
    """
    (d_lo, d_hi), (r_lo, r_hi), (t_lo, t_hi) = (REFERENCE_RANGES[k] for k in ("D_mm2_per_day", "rho_per_day", "T_days"))
    w = origin_weights(grid).ravel()
    for _ in range(max_tries):
        D, rho = _log_uniform(rng, d_lo, d_hi), _log_uniform(rng, r_lo, r_hi)
        target = _log_uniform(rng, *volume_cm3)
        ijk = np.unravel_index(rng.choice(w.size, p=w / w.sum()), grid.shape)
        origin = voxel_to_world(grid.affine, np.asarray(ijk, dtype=np.float64) + rng.uniform(-0.5, 0.5, size=3))
        if grid.tissue_at(origin) < 0.1:
            continue
        # the solver's fronts are slower than 2 sqrt(D rho) and start earlier than onset_days: a safe horizon
        horizon = min(t_hi, 1.2 * onset_days(D, rho) + 2.0 * np.cbrt(750.0 * target / np.pi) / np.sqrt(D * rho))
        if horizon < 1.5 * t_lo:
            continue
        times = np.geomspace(t_lo, horizon, 24)
        wt, core = _visible_volumes(grid, D, rho, origin, times, thresholds)
        k = int(np.argmax(wt >= target)) if (wt >= target).any() else -1
        if k <= 0:
            continue  # never reaches it, or already larger at 50 days
        f = (np.log(target) - np.log(max(wt[k - 1], 1e-3))) / (np.log(wt[k]) - np.log(max(wt[k - 1], 1e-3)))
        T = float(np.exp(np.log(times[k - 1]) + np.clip(f, 0, 1) * np.log(times[k] / times[k - 1])))
        core_T = float(core[k - 1] + np.clip(f, 0, 1) * (core[k] - core[k - 1]))
        if core_T < MIN_CORE_CM3:
            continue
        return {
            "D_mm2_per_day": D,
            "rho_per_day": rho,
            "T_days": T,
            "origin_mm": [float(v) for v in origin],
            "check_whole_tumor_cm3": round(float(target), 3),
            "check_core_cm3": round(core_T, 3),
        }
    raise InputError(f"no realistic tumour parameters in {max_tries} draws on atlas {grid.name}")


def _random_rotation(rng: np.random.Generator, max_deg: float) -> tuple[np.ndarray, float]:
    """A rotation matrix about a uniformly random axis by an angle uniform in [0, max_deg]; (R, angle_deg)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = float(rng.uniform(0.0, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.deg2rad(angle)
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k, angle


def _box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance in voxels, positive inside ``mask`` and negative outside (boundary at ~0)."""
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    return (inside - outside + np.where(mask, -0.5, 0.5)).astype(np.float32)


def _smooth_field(shape: tuple[int, ...], sigma_vox: float, rng: np.random.Generator) -> np.ndarray:
    """A Gaussian random field of zero mean and unit standard deviation, correlation length ``sigma_vox``."""
    f = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma_vox, mode="wrap")
    return (f - f.mean()) / max(float(f.std()), 1e-12)


def _jitter(mask: np.ndarray, amplitude_vox: float, sigma_vox: float, rng: np.random.Generator) -> np.ndarray:
    """Move the boundary of ``mask`` by a smooth random displacement of RMS ``amplitude_vox`` voxels."""
    return (_signed_distance(mask) + amplitude_vox * _smooth_field(mask.shape, sigma_vox, rng)) > 0


def _rigid_resample(
    density: np.ndarray,
    affine: np.ndarray,
    rotation: np.ndarray,
    shift_mm: np.ndarray,
    centre_mm: np.ndarray,
    box: tuple[slice, ...],
) -> np.ndarray:
    """``density`` seen through a rigid misregistration, computed on ``box`` only (zero elsewhere).

    The observed image at world point x is the true one at ``R (x - c) + c - t``: the tumour appears
    rotated by R^-1 about c and shifted by t.
    """
    world = np.eye(4)
    world[:3, :3] = rotation
    world[:3, 3] = centre_mm - rotation @ centre_mm - shift_mm
    m = np.linalg.inv(affine) @ world @ affine
    off = np.array([s.start for s in box], dtype=np.float64)
    shape = tuple(s.stop - s.start for s in box)
    out = np.zeros(density.shape, dtype=np.float32)
    out[box] = ndimage.affine_transform(
        density.astype(np.float32, copy=False),
        m[:3, :3],
        offset=m[:3, :3] @ off + m[:3, 3],
        output_shape=shape,
        order=1,
        mode="constant",
        cval=0.0,
        prefilter=False,
    )
    return out


def segmentation_noise(
    density: np.ndarray,
    affine: np.ndarray,
    rng: np.random.Generator,
    *,
    thresholds: tuple[float, float] = (DEFAULT_THRESHOLD_EDEMA, DEFAULT_THRESHOLD_CORE),
    jitter_voxels: tuple[float, float] = (1.0, 2.0),
    jitter_sigma_vox: float = 3.0,
    shift_mm: float = 2.0,
    rotation_deg: float = 2.0,
    centre_mm: Sequence[float] | None = None,
    brain: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Observed whole-tumour and core masks of a density, as a segmentation with its errors would give them.

    Parameters
    ----------
    density : (X, Y, Z) float tumour-cell density in [0, 1] on the image grid.
    affine : (4, 4) voxel -> world mm of that grid.
    rng : generator of every random number.
    thresholds : (edema, core) fractions of carrying capacity.
    jitter_voxels : range of the RMS boundary displacement (voxels), drawn uniformly per mask.
    jitter_sigma_vox : correlation length of the displacement field (voxels).
    shift_mm : maximum misregistration shift (mm), uniform in a ball.
    rotation_deg : maximum misregistration rotation (degrees) about ``centre_mm``.
    centre_mm : centre of rotation (default: the grid's centre).
    brain : optional (X, Y, Z) bool mask the observed masks are confined to.

    Returns
    -------
    (wt, core, noise): bool masks (core within wt) and a JSON-ready record of what was drawn.
    """
    lo_thr, hi_thr = thresholds
    if not 0 < lo_thr < hi_thr < 1:
        raise InputError(f"thresholds must satisfy 0 < edema < core < 1, got {thresholds}")
    if not (density >= lo_thr).any():
        raise InputError("the tumour has no voxel above the edema threshold: nothing to segment")
    if centre_mm is None:
        centre_mm = voxel_to_world(affine, (np.asarray(density.shape, dtype=np.float64) - 1) / 2)
    rotation, angle = _random_rotation(rng, rotation_deg)
    direction = rng.normal(size=3)
    shift = direction / np.linalg.norm(direction) * shift_mm * rng.uniform() ** (1 / 3)
    spacing = float(np.min(np.linalg.norm(affine[:3, :3], axis=0)))
    reach_mm = shift_mm + np.deg2rad(rotation_deg) * 150.0  # rotation moves points <= 150 mm from the centre
    margin = int(np.ceil(reach_mm / spacing + 3 * max(jitter_voxels) + 2 * jitter_sigma_vox))
    box = _box(density >= 0.5 * lo_thr, margin)
    moved = _rigid_resample(density, affine, rotation, shift, np.asarray(centre_mm, dtype=np.float64), box)
    amp = rng.uniform(*jitter_voxels, size=2)
    wt = np.zeros(density.shape, dtype=bool)
    core = np.zeros(density.shape, dtype=bool)
    wt[box] = _jitter(moved[box] >= lo_thr, amp[0], jitter_sigma_vox, rng)
    if (moved[box] >= hi_thr).any():
        core[box] = _jitter(moved[box] >= hi_thr, amp[1], jitter_sigma_vox, rng)
    if brain is not None:
        wt &= brain
    core &= wt
    noise = {
        "shift_mm": [round(float(v), 4) for v in shift],
        "rotation_deg": round(angle, 4),
        "rotation_matrix": np.round(rotation, 6).tolist(),
        "jitter_rms_voxels": {"whole_tumor": round(float(amp[0]), 4), "core": round(float(amp[1]), 4)},
        "jitter_sigma_voxels": jitter_sigma_vox,
    }
    return wt, core, noise


def masks_to_labels(wt: np.ndarray, core: np.ndarray, rim_voxels: float) -> np.ndarray:
    """BraTS 2023 labels (uint8): 2 SNFH in wt outside core; core as ET (3) rim and NETC (1) inside.

    Core voxels deeper than ``rim_voxels`` from the core's boundary are NETC; a thin core is all ET.
    """
    lab = np.zeros(wt.shape, dtype=np.uint8)
    lab[wt] = 2
    lab[core] = 3
    if core.any():
        box = _box(core, 1)
        depth = ndimage.distance_transform_edt(core[box])
        sub = lab[box]
        sub[depth > rim_voxels] = 1
    return lab


@dataclass(frozen=True, eq=False)
class SyntheticPatient:
    """A tumour grown with known parameters, and its noisy segmentation, on the 1 mm atlas grid.

    Attributes
    ----------
    truth : JSON-ready record: D_mm2_per_day, rho_per_day, T_days, origin_mm, the derived parameters of
        INTERFACES.md, thresholds, the growth resolution and the noise drawn (``noise``).
    density : (X, Y, Z) float32 true density in [0, 1] on the atlas grid (without misregistration).
    labels : (X, Y, Z) uint8 observed labels, BraTS 2023 convention, on the atlas grid.
    affine : (4, 4) voxel -> world mm of the atlas grid.
    recurrence_density : (X, Y, Z) float32 true density ``truth["recurrence_days"]`` after T, or None.
    """

    truth: dict
    density: np.ndarray
    labels: np.ndarray
    affine: np.ndarray = field(repr=False)
    recurrence_density: np.ndarray | None = field(default=None, repr=False)

    @property
    def whole_tumor(self) -> np.ndarray:
        return self.labels > 0

    @property
    def core(self) -> np.ndarray:
        return (self.labels == 1) | (self.labels == 3)

    def clean_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """(wt, core) of the true density at the true thresholds, without noise."""
        return (self.density >= self.truth["threshold_edema"], self.density >= self.truth["threshold_core"])

    def write(self, out_dir: str | Path, *, density: bool = True) -> Path:
        """Write ``seg.nii.gz`` (uint8), optionally ``density.nii.gz`` (float32) and ``recurrence.nii.gz`` (float32,
        when grown), then ``truth.json``.

        Each file is written atomically (temporary sibling, then rename) and ``truth.json`` last, so a folder
        with ``truth.json`` is complete.
        """
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise InputError(f"{out}: output path is a file, not a folder")
        out.mkdir(parents=True, exist_ok=True)
        save_volume(self.labels, self.affine, out / "seg.nii.gz", dtype=np.uint8)
        if density:
            save_volume(self.density, self.affine, out / "density.nii.gz")
        if self.recurrence_density is not None:
            save_volume(self.recurrence_density, self.affine, out / "recurrence.nii.gz")
        write_json(self.truth, out / "truth.json")
        return out


def read_patient(case_dir: str | Path, *, density: bool = True) -> SyntheticPatient:
    """Read a folder written by :meth:`SyntheticPatient.write` (density zeros when not written or not wanted)."""
    d = Path(case_dir)
    if not (d / "truth.json").is_file():
        raise InputError(f"{d}: not a synthetic patient (no truth.json)")
    truth = json.loads((d / "truth.json").read_text())
    labels, affine = load_volume(d / "seg.nii.gz", "synthetic segmentation")
    dens = (
        load_volume(d / "density.nii.gz", "synthetic density")[0]
        if density and (d / "density.nii.gz").is_file()
        else np.zeros(labels.shape)
    )
    rec = (
        np.asarray(load_volume(d / "recurrence.nii.gz", "synthetic recurrence density")[0], dtype=np.float32)
        if density and (d / "recurrence.nii.gz").is_file()
        else None
    )
    return SyntheticPatient(truth, np.asarray(dens, dtype=np.float32), np.asarray(labels, dtype=np.uint8), affine, rec)


def grow_patient(
    atlas: Atlas,
    params: dict,
    *,
    rng: np.random.Generator,
    resolution_mm: float = 1.0,
    sim_grid: Atlas | None = None,
    jitter_voxels: tuple[float, float] = (1.0, 2.0),
    shift_mm: float = 2.0,
    rotation_deg: float = 2.0,
    thresholds: tuple[float, float] = (DEFAULT_THRESHOLD_EDEMA, DEFAULT_THRESHOLD_CORE),
    rim_mm: tuple[float, float] = (2.0, 5.0),
    config: SolverConfig = SolverConfig(),
    recurrence_days: float | None = None,
    on_step=None,
) -> SyntheticPatient:
    """Grow a tumour with ``params`` and segment it with noise, on the grid of ``atlas``.

    Parameters
    ----------
    atlas : the atlas whose grid the patient lives on (1 mm ICBM152 for real use).
    params : ``D_mm2_per_day``, ``rho_per_day``, ``T_days``, ``origin_mm`` (world mm), as from
        :func:`sample_parameters`.
    rng : generator of the noise (and of the rim thickness).
    resolution_mm : spacing of the solver grid ``resample_atlas(atlas, resolution_mm)``.
    sim_grid : that solver grid, when the caller already has it (saves resampling for many patients).
    jitter_voxels, shift_mm, rotation_deg : segmentation noise (:func:`segmentation_noise`); zeros give
        clean masks.
    thresholds : (edema, core) imaging thresholds.
    rim_mm : range of the enhancing rim thickness (mm), drawn uniformly.
    config : solver settings; ``on_step`` is passed to the solver (progress).
    recurrence_days : grow the same tumour on for this many days after T as well (one solver run, two
        snapshots): :attr:`SyntheticPatient.recurrence_density`, ``truth["recurrence_days"]``.

    Returns
    -------
    :class:`SyntheticPatient`; an :class:`InputError` when the visible tumour is empty.
    """
    grid = sim_grid if sim_grid is not None else resample_atlas(atlas, resolution_mm)
    D, rho, T = (float(params[k]) for k in ("D_mm2_per_day", "rho_per_day", "T_days"))
    origin = np.asarray(params["origin_mm"], dtype=np.float64)
    times = [T] if recurrence_days is None else [T, T + float(recurrence_days)]
    u = simulate(grid, [D], [rho], [origin], times, config=config, on_step=on_step)[0]
    density = np.clip(to_atlas_grid(u[0], grid, atlas), 0.0, 1.0).astype(np.float32)
    later = None if recurrence_days is None else np.clip(to_atlas_grid(u[1], grid, atlas), 0.0, 1.0).astype(np.float32)
    truth = truth_record(D, rho, T, origin, thresholds=thresholds, resolution_mm=min(grid.spacing_mm), atlas=atlas.name)
    if recurrence_days is not None:
        truth["recurrence_days"] = float(recurrence_days)
    return segment_patient(
        atlas,
        density,
        truth,
        rng=rng,
        thresholds=thresholds,
        rim_mm=rim_mm,
        jitter_voxels=jitter_voxels,
        shift_mm=shift_mm,
        rotation_deg=rotation_deg,
        recurrence_density=later,
    )


def truth_record(
    D: float, rho: float, T: float, origin_mm, *, thresholds: tuple[float, float], resolution_mm: float, atlas: str
) -> dict:
    """The parameters of a synthetic patient's ``truth.json``: D (mm²/day), rho (1/day), T (days), the seed
    point (world mm), the derived parameters of INTERFACES.md, the thresholds, the growth grid's spacing (mm)
    and the atlas's name."""
    return {
        "D_mm2_per_day": float(D),
        "rho_per_day": float(rho),
        "T_days": float(T),
        "origin_mm": [float(v) for v in origin_mm],
        **derived_parameters(float(D), float(rho), float(T)),
        "threshold_edema": float(thresholds[0]),
        "threshold_core": float(thresholds[1]),
        "resolution_mm": float(resolution_mm),
        "atlas": atlas,
    }


def segment_patient(
    atlas: Atlas,
    density: np.ndarray,
    truth: dict,
    *,
    rng: np.random.Generator,
    thresholds: tuple[float, float] = (DEFAULT_THRESHOLD_EDEMA, DEFAULT_THRESHOLD_CORE),
    rim_mm: tuple[float, float] = (2.0, 5.0),
    jitter_voxels: tuple[float, float] = (1.0, 2.0),
    shift_mm: float = 2.0,
    rotation_deg: float = 2.0,
    recurrence_density: np.ndarray | None = None,
) -> SyntheticPatient:
    """A true density (1 mm atlas grid) seen as a segmentation: :func:`segmentation_noise` (about the brain's
    centre, confined to the brain; no noise when all three amounts are zero), labels with an enhancing rim
    drawn in ``rim_mm``; ``truth`` is completed with the rim, the noise drawn and the observed and true
    volumes (cm³)."""
    if jitter_voxels[1] <= 0 and shift_mm <= 0 and rotation_deg <= 0:
        if not (density >= thresholds[0]).any():
            raise InputError("the tumour has no voxel above the edema threshold: nothing to segment")
        wt, core, noise = density >= thresholds[0], density >= thresholds[1], {}
    else:
        wt, core, noise = segmentation_noise(
            density,
            atlas.affine,
            rng,
            thresholds=thresholds,
            jitter_voxels=jitter_voxels,
            shift_mm=shift_mm,
            rotation_deg=rotation_deg,
            centre_mm=voxel_to_world(atlas.affine, np.argwhere(atlas.domain).mean(axis=0)),
            brain=atlas.brain,
        )
    rim = float(rng.uniform(*rim_mm))
    labels = masks_to_labels(wt, core, rim / min(atlas.spacing_mm))
    voxel_cm3 = atlas.voxel_volume_mm3 / 1000.0
    rec = {
        **truth,
        "rim_mm": round(rim, 4),
        "noise": noise,
        "whole_tumor_cm3": round(float(wt.sum()) * voxel_cm3, 3),
        "core_cm3": round(float(core.sum()) * voxel_cm3, 3),
        "true_whole_tumor_cm3": round(float((density >= thresholds[0]).sum()) * voxel_cm3, 3),
        "true_core_cm3": round(float((density >= thresholds[1]).sum()) * voxel_cm3, 3),
    }
    return SyntheticPatient(rec, density, labels, np.asarray(atlas.affine, dtype=np.float64), recurrence_density)


SEED_DRAWS = 5
"""Draws per patient of :func:`grow_cohort` until the seed point lies in tissue on the growth grid too."""


def grid_tissue_ok(grid: Atlas, origin_mm) -> bool:
    """True when ``origin_mm`` lies in tissue of ``grid`` (what the solver requires of a seed point)."""
    from gliofit.growth.atlas import TISSUE_THRESHOLD

    return grid.tissue_at(origin_mm) >= TISSUE_THRESHOLD


def grow_cohort(
    root: str | Path,
    n: int,
    seed: int,
    atlas: Atlas,
    *,
    resolution_mm: float = 1.0,
    check_mm: float = 4.0,
    progress: bool = True,
) -> tuple[list[Path], float]:
    """Patient folders ``root/case-XXX`` (XXX = 0 .. n-1), each with its recurrence, grown when missing.

    Patient ``i`` draws its parameters and noise from ``default_rng([seed, i])`` (:func:`sample_parameters`
    on the atlas resampled at ``check_mm``, :func:`grow_patient` at ``resolution_mm``; drawn again from
    ``default_rng([seed, i, 100 + k])`` while the seed point is not in tissue on the growth grid) and its ΔT
    (:data:`RECURRENCE_DAYS`) from ``default_rng([seed, i, 1])``. Returns (folders, seconds spent growing).
    """
    import time

    from gliofit.common.progress import progress_bar

    root = Path(root)
    cases = [root / f"case-{i:03d}" for i in range(int(n))]
    missing = [c for c in cases if not ((c / "truth.json").is_file() and (c / "recurrence.nii.gz").is_file())]
    if not missing:
        return cases, 0.0
    t0 = time.perf_counter()
    sim_grid = resample_atlas(atlas, resolution_mm)
    check_grid = resample_atlas(atlas, check_mm)
    with progress_bar(disable=not progress) as bar:
        task = bar.add_task("growing patients", total=len(missing))
        for case in missing:
            i = int(case.name.split("-")[1])
            dt = float(np.random.default_rng([seed, i, 1]).uniform(*RECURRENCE_DAYS))
            for attempt in range(SEED_DRAWS):
                key = [seed, i] if attempt == 0 else [seed, i, 100 + attempt]
                rng = np.random.default_rng(key)
                params = sample_parameters(rng, check_grid)
                if grid_tissue_ok(sim_grid, params["origin_mm"]):
                    break
            patient = grow_patient(
                atlas, params, rng=rng, resolution_mm=resolution_mm, sim_grid=sim_grid, recurrence_days=dt
            )
            patient.truth["case"] = case.name
            patient.truth["sample"] = {
                "seed": key,
                "check_grid_mm": check_mm,
                **{k: v for k, v in params.items() if k.startswith("check_")},
            }
            patient.write(case)
            bar.update(task, advance=1)
    return cases, time.perf_counter() - t0
