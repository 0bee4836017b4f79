"""``gliofit predict-gbm``: the PREDICT-GBM model contract, tumour-cell density from a patient's own tissue maps.

Input ``INPUT_DIR/Patient-X/`` (or one such folder) holds ``X-gm.nii.gz``, ``X-wm.nii.gz``,
``X-csf.nii.gz`` (tissue probabilities or 0/1 masks) and ``X-tumorseg.nii.gz`` (1 necrosis, 2 edema,
3 enhancing), all on one grid (``X-pet.nii.gz`` may lie there and is not used). Output
``OUTPUT_DIR/X.nii.gz``: the tumour-cell density (float32 in [0, 1]) on the input grid and affine.

Per patient: the tissue maps become the solver's atlas (:func:`gliofit.growth.atlas.atlas_from_tissue_maps`),
with the tumour counted as white matter where the maps leave it without tissue (a tumour displaces the
tissue it grows in); the atlas goes to a simulation grid of ``resolution_mm``; the whole tumour and
core (necrosis + enhancing) become masks there. The start point: the seed at the core's centre,
``T_days`` = :data:`T_DAYS` (a convention: only D·T and rho·T are identified), the front speed from the
whole tumour's equivalent radius (r_wt = 2·sqrt(D·rho)·T) and the infiltration length sqrt(D/rho) from the
distance between the core and whole-tumour fronts (one infiltration length separates the
``threshold_core`` and ``threshold_edema`` levels of a travelling front, ln(0.675/0.25) ≈ 1). Then
:func:`gliofit.inverse.refine.refine` (CMA-ES over mu_D, mu_rho and the seed with the forward solver)
and one final simulation, mapped back to the input grid linearly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from gliofit.common.errors import InputError, check_positive
from gliofit.common.grids import resample_area, resample_linear, voxel_to_world
from gliofit.common.io import write_json
from gliofit.common.nifti import load_volume, save_volume

__all__ = ["predict_gbm", "predict_patient", "find_predict_patients", "start_parameters", "T_DAYS", "TISSUES"]

T_DAYS = 365.0
"""The time convention of every fit, days."""
TISSUES = ("gm", "wm", "csf", "tumorseg")
_LABELS = {"necrosis": 1, "edema": 2, "enhancing": 3}


def find_predict_patients(input_dir: str | Path) -> list[tuple[str, Path]]:
    """(X, folder) of every ``Patient-X`` folder in ``input_dir`` (or of ``input_dir`` itself)."""
    root = Path(input_dir)
    if not root.is_dir():
        raise InputError(f"{root}: input folder not found" if not root.exists() else f"{root}: not a folder")
    folders = (
        [root]
        if root.name.startswith("Patient-")
        else sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("Patient-"))
    )
    if not folders:
        raise InputError(f"{root}: no Patient-X folders (PREDICT-GBM layout: Patient-X/X-gm.nii.gz ...)")
    return [(f.name[len("Patient-") :], f) for f in folders]


def _file(folder: Path, x: str, key: str) -> Path:
    for ext in (".nii.gz", ".nii"):
        p = folder / f"{x}-{key}{ext}"
        if p.is_file():
            return p
    raise InputError(f"{folder / (x + '-' + key + '.nii.gz')}: missing {key} file of patient {x}")


def start_parameters(grid, wt: np.ndarray, core: np.ndarray) -> dict:
    """A start for the refinement from the masks' sizes (see the module doc); world mm, days."""
    voxel_mm3 = grid.voxel_volume_mm3
    r_wt = (3.0 * wt.sum() * voxel_mm3 / (4.0 * math.pi)) ** (1.0 / 3.0)
    r_core = (3.0 * core.sum() * voxel_mm3 / (4.0 * math.pi)) ** (1.0 / 3.0)
    length_mm = max(r_wt - r_core, min(grid.spacing_mm))
    speed = max(r_wt, 2.0 * min(grid.spacing_mm)) / T_DAYS
    D, rho = speed * length_mm / 2.0, speed / (2.0 * length_mm)
    centre_of = core if core.any() else wt
    idx = np.argwhere(centre_of)
    centre = idx.mean(axis=0)
    inside = idx[np.argmin(np.linalg.norm(idx - centre, axis=1))]  # a voxel of the mask nearest its centre
    return {
        "D_mm2_per_day": D,
        "rho_per_day": rho,
        "T_days": T_DAYS,
        "origin_mm": [float(v) for v in voxel_to_world(grid.affine, inside.astype(float))],
    }


def predict_patient(
    folder: Path, x: str, *, resolution_mm: float = 2.0, budget: int = 40
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(density on the input grid, affine, fit record) of one PREDICT-GBM patient folder."""
    from gliofit.common.grids import check_same_grid
    from gliofit.growth.atlas import Atlas, resample_atlas
    from gliofit.growth.solver import simulate_one
    from gliofit.inverse.refine import refine

    paths = {k: _file(folder, x, k) for k in TISSUES}
    vols = {k: load_volume(p, k) for k, p in paths.items()}
    shape, affine = vols["gm"][0].shape, vols["gm"][1]
    for k in TISSUES[1:]:
        check_same_grid(paths[k], vols[k][0].shape, vols[k][1], shape, affine, ref=str(paths["gm"]))
    lab = np.rint(vols["tumorseg"][0]).astype(np.int64)
    bad = sorted(set(np.unique(lab).tolist()) - {0, 1, 2, 3})
    if bad:
        raise InputError(f"{paths['tumorseg']}: labels must be 0, 1 necrosis, 2 edema, 3 enhancing; found {bad[0]}")
    wt_in, core_in = lab > 0, np.isin(lab, (1, 3))
    if not wt_in.any():
        raise InputError(f"{paths['tumorseg']}: no tumour voxels")
    gm, wm, csf = (np.clip(vols[k][0], 0.0, 1.0) for k in ("gm", "wm", "csf"))
    empty = wt_in & (gm + wm < 0.5)
    wm = np.where(empty, 1.0 - gm, wm)
    csf = np.where(wt_in, np.minimum(csf, 1.0 - gm - wm), csf)
    atlas = Atlas(
        f"patient-{x}",
        gm.astype(np.float32),
        wm.astype(np.float32),
        np.clip(csf, 0.0, 1.0).astype(np.float32),
        np.asarray(affine, dtype=np.float64),
    )
    grid = resample_atlas(atlas, check_positive(resolution_mm, "--resolution-mm"))
    wt = resample_area(wt_in.astype(np.float32), affine, grid.affine, grid.shape) >= 0.5
    core = resample_area(core_in.astype(np.float32), affine, grid.affine, grid.shape) >= 0.5
    if not wt.any():
        raise InputError(f"{paths['tumorseg']}: the tumour is smaller than one {resolution_mm} mm voxel")
    start = start_parameters(grid, wt, core)
    fit = refine(grid, wt, core, start, budget=budget)
    u = simulate_one(grid, fit["D_mm2_per_day"], fit["rho_per_day"], fit["origin_mm"], fit["T_days"])
    density = np.clip(resample_linear(u, grid.affine, affine, shape), 0.0, 1.0).astype(np.float32)
    record = {"patient": x, "start": start, "resolution_mm": grid.spacing_mm[0]} | fit
    return density, affine, record


def predict_gbm(
    input_dir: str | Path, output_dir: str | Path, *, resolution_mm: float = 2.0, budget: int = 40, on_patient=None
) -> list[dict]:
    """Write ``OUTPUT_DIR/X.nii.gz`` (and ``X.json``, the fit) for every patient; returns the fit records.

    A patient whose output exists is skipped (resumable); each file is written atomically.
    """
    patients = find_predict_patients(input_dir)
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output path is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for x, folder in patients:
        target = out / f"{x}.nii.gz"
        if target.is_file() and (out / f"{x}.json").is_file():
            records.append(json.loads((out / f"{x}.json").read_text()))
        else:
            density, affine, rec = predict_patient(folder, x, resolution_mm=resolution_mm, budget=budget)
            save_volume(density, affine, target)
            write_json(rec, out / f"{x}.json")
            records.append(rec)
        if on_patient is not None:
            on_patient(x)
    return records
