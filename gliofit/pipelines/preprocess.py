"""``gliofit preprocess``: a raw patient folder -> BraTS-ready volumes (RAS, N4, co-registered, 1 mm, brain only).

Steps, each recorded in ``preprocess.json`` with its settings, files and seconds:

1. ``reorient``: every image to the closest RAS voxel order (nibabel; the affine keeps the scanner's
   exact, possibly oblique, orientation, so no voxel is moved);
2. ``n4``: N4 bias-field correction (ANTsPy) of each image in its own grid, inside a head mask
   (intensity above :data:`HEAD_FRACTION` of the median, holes filled);
3. ``register``: T1, T2 and FLAIR rigidly onto the T1c (ANTs, Mattes mutual information, on copies
   at :data:`REGISTRATION_SPACING_MM`), starting from the identity: series of one session share the
   scanner's frame, so the motion to find is small (a centre-of-mass start is misled by the skull); the ANTs files lie in ``transforms/`` and the matrices
   (T1c world -> modality world, RAS mm) in the record;
4. ``resample``: all four onto one axis-aligned RAS grid of ``spacing_mm`` (default 1 mm) covering
   the T1c's head (linear; a given segmentation, nearest neighbour, on the T1c's grid);
5. ``brain_mask``: the atlas brain (ICBM152 GM + WM + CSF >= 0.5) carried onto the patient by an
   affine registration of the atlas T1 to the T1c, then refined on the images: within
   :data:`REFINE_BAND_MM` of its border a voxel is brain when its T1c and T2 intensities lie in the
   range of the atlas brain's core (not background, not a bright skull), then the largest connected
   part, holes filled. No weights are downloaded.

Output (BraTS 2023 layout, images zero outside the brain): ``<name>-t1n/-t1c/-t2w/-t2f.nii.gz``
(``-seg`` when given), ``brain_mask.nii.gz``, ``transforms/`` and ``preprocess.json``, which names the
``import.json`` of the folder's DICOM import (``import_record``), so the source series stay findable.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from gliofit._version import __version__
from gliofit.common.errors import InputError, check_positive
from gliofit.common.grids import RAS_TO_LPS
from gliofit.common.grids import spacing_mm as affine_spacing
from gliofit.common.io import atomic_directory, write_json
from gliofit.common.nifti import load_volume, nib, save_volume
from gliofit.pipelines.patient import check_patient_name, find_patient
from gliofit.pipelines.registration import ants_array, ants_image, ants_seed, coarse_image
from gliofit.segmentation.brats_convert import LAYOUTS, MODALITIES

__all__ = [
    "preprocess",
    "PREPROCESS_JSON",
    "PREPROCESS_STEPS",
    "HEAD_FRACTION",
    "REGISTRATION_SPACING_MM",
    "REFINE_BAND_MM",
    "head_mask",
    "n4",
    "rigid_to",
    "output_grid",
    "atlas_brain_mask",
    "refine_brain_mask",
    "ants_matrix_ras",
    "rough_brain",
    "needs_preprocessing",
    "N4_SPACING_MM",
]

PREPROCESS_JSON = "preprocess.json"
HEAD_FRACTION = 0.1
"""Head mask: voxels above this fraction of the median of the non-zero intensities."""
REGISTRATION_SPACING_MM = 3.0
"""Rigid and atlas registrations run on copies at this isotropic spacing (mm)."""
REFINE_BAND_MM = 4.0
"""The brain mask is refined on the images within this distance inside the atlas brain's border (mm)."""
REFINE_OUTWARD_MM = 2.0
"""... and this distance outside it (mm)."""
N4_SPACING_MM = 4.0
"""N4 fits the bias field on a copy at this isotropic spacing (mm)."""
N4_SETTINGS = {"shrink_factor": 4, "convergence": {"iters": [50, 50, 50, 50], "tol": 1e-7}}
"""ANTsPy N4 settings (its default B-spline: one control-point mesh span per 200 mm)."""
RIGID_SETTINGS = {
    "aff_metric": "mattes",
    "aff_iterations": (100, 50),
    "aff_shrink_factors": (2, 1),
    "aff_smoothing_sigmas": (1, 0),
    "aff_random_sampling_rate": 0.3,
}
"""ANTsPy rigid settings, on the copies at :data:`REGISTRATION_SPACING_MM`: levels of 6 and 3 mm (a 12 mm
level lets the optimiser leave the small motion between series of one session for a wrong basin)."""
ROUGH_THRESHOLD = 0.4
"""Rough brain: voxels above this fraction of the head's median, opened by :data:`ROUGH_OPENING_MM`."""
ROUGH_OPENING_MM = 4.0
_SEED = 7
MAX_MOTION_MM = 15.0
"""A rigid result moving the head by more than this on average (mm) is retried (see :func:`rigid_to`)."""
PREPROCESS_STEPS = (
    "n4 t1",
    "n4 t1c",
    "n4 t2",
    "n4 flair",
    "register t1",
    "register t2",
    "register flair",
    "resample",
    "brain mask",
)
"""The names ``on_step`` receives, in order (the n4 ones only with bias correction)."""


def _with_units(settings: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}


def head_mask(data: np.ndarray) -> np.ndarray:
    """Bool (X, Y, Z): voxels above :data:`HEAD_FRACTION` of the median non-zero intensity, closed and filled."""
    nz = data[data > 0]
    if nz.size == 0:
        return np.zeros(data.shape, bool)
    mask = data > HEAD_FRACTION * float(np.median(nz))
    mask = ndimage.binary_closing(mask, iterations=2)
    return ndimage.binary_fill_holes(mask)


def n4(data: np.ndarray, affine: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """N4 bias-field corrected copy of ``data`` (float32).

    The field is fitted inside ``mask`` on a copy at :data:`N4_SPACING_MM` (a bias field is smooth over
    tens of millimetres) and divided out at the image's own resolution.
    """
    import ants

    img = coarse_image(np.maximum(data, 0.0), affine, N4_SPACING_MM)
    m = coarse_image(mask.astype(np.float32), affine, N4_SPACING_MM)
    field = ants.n4_bias_field_correction(img, mask=m, return_bias_field=True, **N4_SETTINGS)
    full = ants.resample_image_to_target(field, ants_image(data, affine), interp_type="linear")
    bias = np.maximum(ants_array(full), 1e-3)
    return np.where(mask, data / bias, data).astype(np.float32)


def ants_matrix_ras(path: str | Path) -> np.ndarray:
    """The (4, 4) RAS matrix of an ANTs linear transform file (fixed world -> moving world, mm)."""
    from gliofit.pipelines.warp import read_affine_lps

    return RAS_TO_LPS @ read_affine_lps(str(path), invert=False) @ RAS_TO_LPS


def _motion_mm(matrix_ras: np.ndarray, data: np.ndarray, affine: np.ndarray) -> float:
    """Mean displacement (mm) a RAS map gives the voxels of the head mask of ``data`` (every 4th voxel)."""
    idx = np.argwhere(head_mask(data))[::4].astype(np.float64)
    if idx.size == 0:
        return 0.0
    pts = np.c_[idx, np.ones(len(idx))] @ np.asarray(affine).T
    return float(np.linalg.norm((pts @ matrix_ras.T - pts)[:, :3], axis=1).mean())


def rigid_to(
    fixed: tuple[np.ndarray, np.ndarray], moving: tuple[np.ndarray, np.ndarray], dst: Path, kind: str = "Rigid"
) -> dict:
    """Register ``moving`` onto ``fixed`` (each (data, RAS affine)); the ANTs file is copied to ``dst``.

    Series of one session move little: a result moving the head by more than :data:`MAX_MOTION_MM` on
    average is taken for a failed optimisation and the registration is run again sampling every voxel
    (the smaller motion is kept; ``retried`` says so).
    Returns {"file", "matrix_ras" (fixed world -> moving world), "type", "motion_mm", "retried", "seconds"}.
    """
    import ants

    t0 = time.perf_counter()
    f = coarse_image(*fixed, REGISTRATION_SPACING_MM)
    m = coarse_image(*moving, REGISTRATION_SPACING_MM)
    dst.parent.mkdir(parents=True, exist_ok=True)
    best: tuple[float, np.ndarray] | None = None
    retried = False
    for attempt, rate in enumerate((RIGID_SETTINGS["aff_random_sampling_rate"], 1.0)):
        settings = RIGID_SETTINGS | {"aff_random_sampling_rate": rate}
        with ants_seed(_SEED + attempt) as seed:
            reg = ants.registration(
                fixed=f,
                moving=m,
                type_of_transform=kind,
                initial_transform="Identity",
                verbose=False,
                **settings,
                **seed,
            )
        matrix = ants_matrix_ras(reg["fwdtransforms"][0])
        motion = _motion_mm(matrix, *fixed)
        if best is None or motion < best[0]:
            best = (motion, matrix)
            shutil.copyfile(reg["fwdtransforms"][0], dst)
        if motion <= MAX_MOTION_MM:
            break
        retried = True
    assert best is not None
    return {
        "file": str(dst),
        "matrix_ras": np.round(best[1], 8).tolist(),
        "type": kind,
        "motion_mm": round(best[0], 3),
        "retried": retried,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def output_grid(
    mask: np.ndarray, affine: np.ndarray, spacing: float, margin_mm: float = 4.0
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """An axis-aligned RAS grid of ``spacing`` mm covering the world bounding box of ``mask`` plus a margin."""
    idx = np.argwhere(mask)
    if idx.size == 0:
        raise InputError("the T1c holds no signal above background: nothing to preprocess")
    lo_i, hi_i = idx.min(axis=0) - 0.5, idx.max(axis=0) + 0.5
    corners = np.array(
        [[x, y, z, 1.0] for x in (lo_i[0], hi_i[0]) for y in (lo_i[1], hi_i[1]) for z in (lo_i[2], hi_i[2])]
    ).T
    world = (affine @ corners)[:3]
    lo, hi = world.min(axis=1) - margin_mm, world.max(axis=1) + margin_mm
    shape = np.ceil((hi - lo) / spacing).astype(int)
    grid = np.diag([spacing, spacing, spacing, 1.0])
    grid[:3, 3] = lo + spacing / 2.0
    return grid, tuple(int(v) for v in shape)


def _apply(
    data: np.ndarray, affine: np.ndarray, grid: np.ndarray, shape, transform: str | None, nearest: bool = False
) -> np.ndarray:
    from gliofit.pipelines.warp import apply_transform_files

    return apply_transform_files(data, affine, shape, grid, [transform] if transform else [], nearest=nearest)


def rough_brain(t1c: np.ndarray, spacing: float) -> np.ndarray:
    """A first brain estimate: bright enough, cut from the skull by an opening, largest part, holes filled."""
    head = head_mask(t1c)
    if not head.any():
        return head
    mask = t1c > ROUGH_THRESHOLD * float(np.median(t1c[head]))
    r = max(1, int(round(ROUGH_OPENING_MM / spacing)))
    ball = ndimage.iterate_structure(ndimage.generate_binary_structure(3, 1), r)
    opened = ndimage.binary_erosion(mask, ball)
    labels, n = ndimage.label(opened)
    if n == 0:
        return head
    sizes = ndimage.sum(opened, labels, range(1, n + 1))
    core = labels == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(ndimage.binary_dilation(core, ball) & mask)


def atlas_brain_mask(t1c: np.ndarray, grid: np.ndarray, atlas, dst: Path) -> tuple[np.ndarray, dict]:
    """The atlas brain (GM + WM + CSF >= 0.5) carried onto the T1c by an affine registration; bool mask, record.

    The metric only counts T1c voxels within 8 mm of :func:`rough_brain`, so the skull does not pull
    the atlas brain outwards.
    """
    import ants

    t0 = time.perf_counter()
    sp = float(affine_spacing(grid)[0])
    rough = rough_brain(t1c, sp)
    near = ndimage.distance_transform_edt(~rough, sampling=sp) <= 8.0
    f = coarse_image(np.where(near, t1c, 0.0), grid, REGISTRATION_SPACING_MM)
    fmask = coarse_image(near.astype(np.float32), grid, REGISTRATION_SPACING_MM, nearest=True)
    m = coarse_image(atlas.t1, atlas.affine, REGISTRATION_SPACING_MM)
    with ants_seed(_SEED) as seed:
        reg = ants.registration(
            fixed=f,
            moving=m,
            mask=fmask,
            type_of_transform="Affine",
            verbose=False,
            aff_metric="mattes",
            aff_iterations=(100, 50, 25),
            aff_shrink_factors=(4, 2, 1),
            aff_smoothing_sigmas=(2, 1, 0),
            aff_random_sampling_rate=0.3,
            **seed,
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(reg["fwdtransforms"][0], dst)
    brain = (atlas.gm + atlas.wm + atlas.csf).astype(np.float32)
    warped = _apply(brain, atlas.affine, grid, t1c.shape, str(dst))
    return warped >= 0.5, {
        "file": str(dst),
        "matrix_ras": np.round(ants_matrix_ras(dst), 8).tolist(),
        "type": "Affine",
        "atlas": atlas.name,
        "rough_volume_cm3": round(float(rough.sum()) * sp**3 / 1000, 3),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _intensity_range(img: np.ndarray, core: np.ndarray) -> tuple[float, float]:
    v = img[core]
    lo, hi = np.percentile(v, [1.0, 99.5])
    return 0.5 * float(lo), float(hi) * 1.1


def refine_brain_mask(mask: np.ndarray, images: list[np.ndarray], spacing: float) -> np.ndarray:
    """Refine a brain mask on the images within :data:`REFINE_BAND_MM` of its border (see the module doc)."""
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    core = inside > REFINE_BAND_MM
    band = (inside <= REFINE_BAND_MM) & (outside <= REFINE_OUTWARD_MM) & ~core
    if core.sum() < 100:
        return mask
    ok = np.ones(mask.shape, bool)
    for img in images:
        lo, hi = _intensity_range(img, core)
        ok &= (img >= lo) & (img <= hi)
    refined = core | (band & ok)
    refined = ndimage.binary_opening(refined, iterations=1) | core
    labels, n = ndimage.label(refined)
    if n > 1:
        sizes = ndimage.sum(refined, labels, range(1, n + 1))
        refined = labels == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(ndimage.binary_closing(refined, iterations=1))


def _reoriented(path: Path, what: str) -> tuple[np.ndarray, np.ndarray, dict]:
    img = nib.load(str(path)) if path.is_file() else None
    if img is None:
        raise InputError(f"{path}: {what} not found")
    load_volume(path, what)  # the one validation of a volume
    before = "".join(nib.aff2axcodes(img.affine))
    can = nib.as_closest_canonical(img)
    return (
        np.asarray(can.dataobj, dtype=np.float32),
        can.affine.astype(np.float64),
        {"step": "reorient", "modality": what, "from_axcodes": before, "to_axcodes": "RAS"},
    )


def preprocess(
    patient_dir: str | Path,
    out_dir: str | Path,
    *,
    spacing_mm: float = 1.0,
    bias_correction: bool = True,
    atlas=None,
    on_step=None,
) -> dict:
    """Preprocess one patient folder (BraTS layout, e.g. from ``import-dicom``) into ``out_dir``.

    Parameters
    ----------
    patient_dir : a BraTS 2021/2023 folder (images in any orientation and spacing, each on its own grid).
    out_dir : the output folder (BraTS 2023 layout; its name is the case name; replaced when complete).
    spacing_mm : isotropic output spacing, mm.
    bias_correction : run N4 (False: the baseline path without it).
    atlas : the 1 mm atlas with a T1 (default ``load_atlas()``).
    on_step : called with each step's name as it starts (progress).

    Returns
    -------
    The ``preprocess.json`` content.
    """
    from gliofit.growth.atlas import load_atlas

    spacing = check_positive(spacing_mm, "--spacing-mm")
    src = Path(patient_dir)
    case = find_patient(src)
    out = Path(out_dir)
    name = check_patient_name(out.name, out)
    note = on_step or (lambda _s: None)
    t_start = time.perf_counter()
    steps: list[dict] = []
    vols = {}
    for m, path in zip(MODALITIES, case.images):
        data, aff, rec = _reoriented(path, m)
        vols[m] = (data, aff)
        steps.append(rec)
    with atomic_directory(out) as tmp:
        tdir = tmp / "transforms"
        heads = {m: head_mask(d) for m, (d, _) in vols.items()}
        if bias_correction:
            for m, (d, a) in vols.items():
                note(f"n4 {m}")
                t0 = time.perf_counter()
                vols[m] = (n4(d, a, heads[m]), a)
                steps.append(
                    {
                        "step": "n4",
                        "modality": m,
                        "settings": _with_units(N4_SETTINGS),
                        "seconds": round(time.perf_counter() - t0, 3),
                    }
                )
        transforms: dict[str, str | None] = {"t1c": None}
        for m in ("t1", "t2", "flair"):
            note(f"register {m}")
            rec = rigid_to(vols["t1c"], vols[m], tdir / f"{m}_to_t1c.mat")
            transforms[m] = rec["file"]
            rec["file"] = str(Path(rec["file"]).relative_to(tmp))
            steps.append(
                {
                    "step": "register",
                    "modality": m,
                    "to": "t1c",
                    "settings": _with_units(RIGID_SETTINGS) | {"spacing_mm": REGISTRATION_SPACING_MM},
                }
                | rec
            )
        note("resample")
        grid, shape = output_grid(heads["t1c"], vols["t1c"][1], spacing)
        out_imgs = {m: np.maximum(_apply(d, a, grid, shape, transforms[m]), 0.0) for m, (d, a) in vols.items()}
        steps.append(
            {
                "step": "resample",
                "spacing_mm": spacing,
                "shape": list(shape),
                "affine": np.round(grid, 6).tolist(),
                "interpolation": "linear",
                "frame": "t1c world (RAS mm)",
            }
        )
        note("brain mask")
        atlas = atlas if atlas is not None else load_atlas()
        if atlas.t1 is None:
            raise InputError(f"atlas {atlas.name}: has no T1 image to register for the brain mask")
        mask0, rec = atlas_brain_mask(out_imgs["t1c"], grid, atlas, tdir / "atlas_to_t1c.mat")
        rec["file"] = str(Path(rec["file"]).relative_to(tmp))
        brain = refine_brain_mask(mask0, [out_imgs["t1c"], out_imgs["t2"]], spacing)
        steps.append(
            {
                "step": "brain_mask",
                "method": "atlas brain carried by an affine registration, refined on T1c and T2 intensities",
                "refine_band_mm": [REFINE_BAND_MM, REFINE_OUTWARD_MM],
                "volume_cm3": {
                    "atlas": round(float(mask0.sum()) * spacing**3 / 1000, 3),
                    "refined": round(float(brain.sum()) * spacing**3 / 1000, 3),
                },
            }
            | rec
        )
        names = LAYOUTS["brats2023"]
        for m in MODALITIES:
            save_volume(np.where(brain, out_imgs[m], 0.0), grid, tmp / f"{name}{names[m]}.nii.gz")
        save_volume(brain, grid, tmp / "brain_mask.nii.gz", dtype=np.uint8)
        if case.seg is not None:
            seg, seg_aff = load_volume(case.seg, "segmentation")
            lab = _apply(np.rint(seg).astype(np.float32), seg_aff, grid, shape, None, nearest=True)
            save_volume(np.rint(lab), grid, tmp / f"{name}{names['seg']}.nii.gz", dtype=np.uint8)
            steps.append({"step": "segmentation", "interpolation": "nearest", "from": "t1c grid"})
        record = {
            "format": "gliofit-preprocess/1",
            "gliofit_version": __version__,
            "source": str(src.resolve()),
            "layout": "brats2023",
            "import_record": _import_record(src),
            "output_grid": {"shape": list(shape), "spacing_mm": spacing, "affine": np.round(grid, 6).tolist()},
            "steps": steps,
            "seconds": round(time.perf_counter() - t_start, 3),
        }
        write_json(record, tmp / PREPROCESS_JSON)
    return record


def needs_preprocessing(folder: str | Path) -> bool:
    """True for a folder written by ``import-dicom`` (``import.json``) without ``preprocess.json``."""
    p = Path(folder)
    return (p / "import.json").is_file() and not (p / PREPROCESS_JSON).is_file()


def _import_record(src: Path) -> str | None:
    """The import.json behind ``src`` (its own, or the one a preprocessed folder names), as an absolute path."""
    if (src / "import.json").is_file():
        return str((src / "import.json").resolve())
    pre = src / PREPROCESS_JSON
    if pre.is_file():
        return json.loads(pre.read_text()).get("import_record")
    return None
