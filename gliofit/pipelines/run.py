"""One patient end to end: MRI folder -> segmentation -> registration -> inference -> plan -> report.

:func:`run_patient` is what ``gliofit run`` and every ``cohort`` worker call. Stages, each timed into
``result.json``'s ``timings_s``:

1. ``load``: the folder's layout and files (:mod:`gliofit.pipelines.patient`); the segmentation given
   in the folder, or
2. ``segmentation``: STU-Net (:func:`gliofit.segmentation.predict.segment`) on the four modalities
   (BraTS 2023 labels on the MRI's grid);
3. ``registration``: the patient T1 to the atlas T1, affine then SyN with the tumour left out of the
   metric (:mod:`gliofit.pipelines.registration`); transforms kept in ``OUT/transforms/``;
4. ``query``: :func:`gliofit.infer` through that registration (masks to the atlas by nearest neighbour);
5. ``density``: the best match's tumour-cell density on the atlas grid and, through the inverse
   transforms (linear), on the patient's grid;
6. ``plan``: standard and model-based target volumes (:mod:`gliofit.pipelines.planning`), limited to
   the atlas brain mapped onto the patient (``brain_mask.nii.gz``) joined with the tumour;
7. ``report``: ``report.png`` and a self-contained ``report.html`` (:mod:`gliofit.pipelines.report`).

Nothing half-written: every file goes into a hidden sibling folder ``.<OUT>.part-<pid>`` that is renamed
to ``OUT`` when complete (an existing ``OUT`` folder is replaced), so ``OUT/result.json`` exists only
for a finished patient — what ``cohort`` relies on to resume.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from gliofit.common.errors import InputError
from gliofit.common.grids import check_same_grid
from gliofit.common.labels import detect_convention, tumour_masks
from gliofit.common.nifti import load_volume, save_volume
from gliofit.pipelines.patient import find_patient
from gliofit.segmentation.brats_convert import LAYOUTS, BratsCase

__all__ = ["REGISTRATIONS", "STAGES", "run_patient", "output_folder_ready", "brain_on_patient_grid"]

REGISTRATIONS = ("syn", "affine", "none")
"""``syn``: affine then SyN (default); ``affine`` only; ``none``: the MRI is already in atlas space."""
STAGES = ("load", "segmentation", "registration", "query", "density", "plan", "report", "total")
"""Keys of ``timings_s`` in a pipeline result.json (seconds)."""


def output_folder_ready(out: str | Path) -> Path:
    """``out`` as a Path after checking it can become the output folder (InputError if it is a file)."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise InputError(f"{p}: output path is a file, not a folder")
    if p.name in ("", ".", ".."):
        raise InputError(f"{p}: give a named output folder")
    return p


def _segmentation(patient: BratsCase, model: Any, device: str, tmp: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """The label map (given or predicted), written to ``tmp/segmentation.nii.gz``; (path, labels, affine)."""
    dst = tmp / "segmentation.nii.gz"
    if patient.seg is not None:
        labels, affine = load_volume(patient.seg, "segmentation")
        save_volume(np.rint(labels), affine, dst, dtype=np.uint8)
        return dst, np.rint(labels).astype(np.uint8), affine
    if model is None:
        want = patient.images[0].parent / f"{patient.name}{LAYOUTS[patient.layout]['seg']}.nii.gz"
        raise InputError(f"{want}: no segmentation in the patient folder and no --model given")
    from gliofit.segmentation.predict import segment

    labels, affine = segment(*patient.images, model, device=device, labels="brats2023")
    save_volume(labels, affine, dst, dtype=np.uint8)
    return dst, labels, affine


def brain_on_patient_grid(atlas, registration, shape: tuple[int, int, int], affine: np.ndarray,
                          tumour: np.ndarray) -> np.ndarray:
    """The atlas brain (grey + white matter >= 0.1, as the solver's domain) mapped onto the patient
    grid (nearest neighbour), joined with the tumour (which may have displaced tissue). Bool (X, Y, Z)."""
    brain = (atlas.gm + atlas.wm) >= 0.1
    if registration is None:
        from gliofit.common.grids import resample_linear

        on_patient = resample_linear(brain.astype(np.float32), atlas.affine, affine, shape) >= 0.5
    else:
        on_patient = np.asarray(registration.to_patient(brain, atlas, shape, affine)) >= 0.5
    return on_patient | tumour


def _check_same_grid(seg: Path, shape: tuple[int, ...], affine: np.ndarray, t1_shape: tuple[int, ...],
                     t1_affine: np.ndarray) -> None:
    check_same_grid(seg, shape, affine, t1_shape, t1_affine, what="segmentation", ref="the MRI")


def _register(patient: BratsCase, t1: np.ndarray, affine: np.ndarray, atlas, kind: str, tumour: np.ndarray,
              tmp: Path):
    if kind == "none":
        return None
    from gliofit.pipelines.registration import register_to_atlas_ants

    reg = register_to_atlas_ants(t1, affine, atlas, exclude=tumour, kind="SyN" if kind == "syn" else "Affine",
                                 source=str(patient.images[0]))
    reg.save(tmp / "transforms")
    return reg


def _match_masks(density: np.ndarray, parameters: dict) -> tuple[np.ndarray, np.ndarray]:
    return density >= parameters["threshold_edema"], density >= parameters["threshold_core"]


def _write_report(folder: Path, result: dict, patient: BratsCase, labels: np.ndarray, affine: np.ndarray,
                  density: np.ndarray, res, plan) -> None:
    """report.png (T1c, labels, matched masks, density, both targets) and report.html in ``folder``."""
    from gliofit.common.wording import parameters_title
    from gliofit.pipelines.report import patient_figure, write_patient_report

    mri = load_volume(patient.images[1], "T1c")[0]
    match_wt, match_core = _match_masks(density, res.parameters)
    fig = patient_figure(mri=mri, mri_name="T1c (T1 with gadolinium)", segmentation=labels, density=density,
                         match_whole_tumor=match_wt, match_core=match_core,
                         plans={"standard": plan.standard, "model": plan.model}, affine=affine,
                         title=parameters_title(res.parameters, res.uncertainty, res.fit, name=patient.name))
    write_patient_report(folder, result, fig, plan=result.get("plan"))


def run_patient(patient_dir: str | Path, db, out_dir: str | Path, *, model: Any = None, device: str = "cpu",
                registration: str = "syn", top_k: int = 200, refine: bool = False, margin_mm: float = 15.0,
                density: str = "upsample", method: str = "index", atlas=None, figure: bool = True) -> dict:
    """Run the whole pipeline for one patient folder and write ``out_dir``.

    Parameters
    ----------
    patient_dir : a BraTS 2021 or 2023 patient folder (:func:`~gliofit.pipelines.patient.find_patient`).
    db : a database directory or an open database.
    out_dir : the output folder (replaced atomically when complete).
    model : STU-Net checkpoint (path or ``(net, meta)``) used when the folder holds no segmentation.
    device : ``cpu`` or ``cuda`` for the segmentation.
    registration : ``syn`` (affine + SyN), ``affine`` or ``none`` (MRI already in atlas space).
    top_k, refine, density, method : passed to :func:`gliofit.infer` (``method="exhaustive"``: the
        published baseline's query).
    margin_mm : the standard plan's margin around the tumour core, mm.
    atlas : the database's 1 mm atlas if already loaded.
    figure : write report.png (the html report embeds it).

    Returns
    -------
    The content of ``OUT/result.json`` (INTERFACES.md), with ``timings_s`` per stage (:data:`STAGES`) and
    ``plan`` (volumes in cm³, threshold, brain used).
    """
    import gliofit
    from gliofit.inverse.api import atlas_of
    from gliofit.common.io import write_json
    from gliofit.pipelines.planning import make_plan

    if registration not in REGISTRATIONS:
        raise InputError(f"--registration must be one of {', '.join(REGISTRATIONS)}, got {registration!r}")
    out = output_folder_ready(out_dir)
    t0 = time.perf_counter()
    timings = dict.fromkeys(STAGES, 0.0)
    patient = find_patient(patient_dir)
    own_db = isinstance(db, (str, Path))
    if own_db:
        db = gliofit.open_database(db)
    atlas = atlas if atlas is not None else atlas_of(db)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.part-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        t1, t1_affine = load_volume(patient.images[0], "T1")
        timings["load"] = time.perf_counter() - t0
        ts = time.perf_counter()
        seg_path, labels, affine = _segmentation(patient, model, device, tmp)
        _check_same_grid(seg_path if patient.seg is None else patient.seg, labels.shape, affine, t1.shape, t1_affine)
        masks = tumour_masks(labels.astype(np.int64), detect_convention(labels, str(seg_path)), str(patient.images[0].parent))
        if not masks["whole_tumor"].any():
            raise InputError(f"{patient.images[0].parent}: the segmentation holds no tumour voxels")
        timings["segmentation" if patient.seg is None else "load"] += time.perf_counter() - ts

        tr = time.perf_counter()
        reg = _register(patient, t1, t1_affine, atlas, registration, masks["whole_tumor"], tmp)
        timings["registration"] = time.perf_counter() - tr

        res = gliofit.infer(db, seg_path, registration=reg, in_atlas_space=reg is None, top_k=top_k,
                            refine=refine, density=density, method=method, atlas=atlas)
        timings["load"] += res.timings["load"]              # reading the masks onto the database grid
        timings["registration"] += res.timings["registration"]
        timings["query"] = res.timings["query"]

        td = time.perf_counter()
        density_atlas = res.density_array
        density_patient = res.density_on_input_grid()
        save_volume(density_atlas, atlas.affine, tmp / "tumor_density_atlas.nii.gz")
        save_volume(density_patient, affine, tmp / "tumor_density.nii.gz")
        timings["density"] = time.perf_counter() - td

        tp = time.perf_counter()
        brain = brain_on_patient_grid(atlas, reg, labels.shape, affine, masks["whole_tumor"])
        save_volume(brain, affine, tmp / "brain_mask.nii.gz", dtype=np.uint8)
        plan = make_plan(density_patient, masks["core"], affine, brain=brain, margin_mm=margin_mm,
                         whole_tumor=masks["whole_tumor"])
        save_volume(plan.standard, affine, tmp / "target_standard.nii.gz", dtype=np.uint8)
        save_volume(plan.model, affine, tmp / "target_model.nii.gz", dtype=np.uint8)
        plan_summary = dict(plan.summary) | {"brain": "atlas brain on the patient grid + tumour"}
        write_json(plan_summary, tmp / "plan.json")
        timings["plan"] = time.perf_counter() - tp

        result = res.to_dict()
        result["space"] = "patient" if reg is not None else "atlas"
        result["patient"] = {"name": patient.name, "folder": str(patient.images[0].parent.resolve()), "layout": patient.layout,
                             "segmentation": "given" if patient.seg is not None else "model",
                             "registration": registration}
        result["plan"] = plan_summary
        tq = time.perf_counter()
        result["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
        if figure:
            _write_report(tmp, result, patient, labels, affine, density_patient, res, plan)
        timings["report"] = time.perf_counter() - tq
        timings["total"] = time.perf_counter() - t0
        result["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
        write_json(result, tmp / "result.json")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if own_db:
            db.close()
    return result
