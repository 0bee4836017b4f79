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
7. ``report``: ``report.png`` and a self-contained ``report.html`` (:mod:`gliofit.pipelines.report`);
   the html shows the timings, so they (``total`` included) are read just before it is written.

Nothing half-written: every file goes into a hidden sibling folder ``.<OUT>.part-<pid>`` that is renamed
to ``OUT`` when complete (:func:`gliofit.common.io.atomic_directory`) (an existing ``OUT`` folder is replaced), so ``OUT/result.json`` exists only
for a finished patient — what ``cohort`` relies on to resume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gliofit.common.errors import InputError
from gliofit.common.grids import check_same_grid
from gliofit.common.io import atomic_directory, write_json, write_text
from gliofit.common.labels import detect_convention, tumour_masks
from gliofit.common.nifti import load_volume, save_volume
from gliofit.common.timing import Stopwatch
from gliofit.pipelines.patient import FollowUp, find_followup, find_patient
from gliofit.pipelines.preprocess import needs_preprocessing, preprocess
from gliofit.segmentation import check_precision
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


def _check_segmentation_source(patient: BratsCase, model: Any) -> None:
    """Raise :class:`InputError` naming the missing file when the folder holds no segmentation and no model
    is given."""
    if patient.seg is None and model is None:
        want = patient.images[0].parent / f"{patient.name}{LAYOUTS[patient.layout]['seg']}.nii.gz"
        raise InputError(
            f"{want}: no segmentation in the patient folder and no --model given "
            "(`gliofit models` lists the segmentation models; README: How to use your own data)"
        )


@dataclass(frozen=True)
class _Segmenter:
    """The model a folder without a segmentation is segmented with, where, and in which precision."""

    model: Any
    device: str = "cpu"
    precision: str = "auto"


def _segmentation(
    patient: BratsCase, segmenter: _Segmenter, tmp: Path, progress: bool = False
) -> tuple[Path, np.ndarray, np.ndarray]:
    """The label map (given or predicted), written to ``tmp/segmentation.nii.gz``; (path, labels, affine)."""
    dst = tmp / "segmentation.nii.gz"
    if patient.seg is not None:
        labels, affine = load_volume(patient.seg, "segmentation")
        save_volume(np.rint(labels), affine, dst, dtype=np.uint8)
        return dst, np.rint(labels).astype(np.uint8), affine
    _check_segmentation_source(patient, segmenter.model)
    from gliofit.segmentation.predict import segment

    labels, affine = segment(
        *patient.images,
        segmenter.model,
        device=segmenter.device,
        labels="brats2023",
        progress=progress,
        precision=segmenter.precision,
    )
    save_volume(labels, affine, dst, dtype=np.uint8)
    return dst, labels, affine


def brain_on_patient_grid(
    atlas, registration, shape: tuple[int, int, int], affine: np.ndarray, tumour: np.ndarray
) -> np.ndarray:
    """The atlas brain (grey + white matter >= 0.1, as the solver's domain) mapped onto the patient
    grid (nearest neighbour), joined with the tumour (which may have displaced tissue). Bool (X, Y, Z)."""
    brain = atlas.domain
    if registration is None:
        from gliofit.common.grids import resample_linear

        on_patient = resample_linear(brain.astype(np.float32), atlas.affine, affine, shape) >= 0.5
    else:
        on_patient = np.asarray(registration.to_patient(brain, atlas, shape, affine)) >= 0.5
    return on_patient | tumour


def _check_same_grid(
    seg: Path, shape: tuple[int, ...], affine: np.ndarray, t1_shape: tuple[int, ...], t1_affine: np.ndarray
) -> None:
    check_same_grid(seg, shape, affine, t1_shape, t1_affine, what="segmentation", ref="the MRI")


def _register(patient: BratsCase, t1: np.ndarray, affine: np.ndarray, atlas, kind: str, tumour: np.ndarray, tmp: Path):
    if kind == "none":
        return None
    from gliofit.pipelines.registration import register_to_atlas_ants

    reg = register_to_atlas_ants(
        t1, affine, atlas, exclude=tumour, kind="SyN" if kind == "syn" else "Affine", source=str(patient.images[0])
    )
    reg.save(tmp / "transforms")
    return reg


def _match_masks(density: np.ndarray, parameters: dict) -> tuple[np.ndarray, np.ndarray]:
    return density >= parameters["threshold_edema"], density >= parameters["threshold_core"]


@dataclass
class _Scan:
    """What the load and segmentation stages read: the T1, the label map and its tumour masks."""

    t1: np.ndarray
    t1_affine: np.ndarray
    seg_path: Path
    labels: np.ndarray
    affine: np.ndarray
    masks: dict[str, np.ndarray]


def _load_and_segment(patient: BratsCase, segmenter: _Segmenter, tmp: Path, watch: Stopwatch) -> _Scan:
    """Stages ``load`` and ``segmentation``: the T1, then the label map (given: ``load``; predicted)."""
    with watch.stage("load"):
        t1, t1_affine = load_volume(patient.images[0], "T1")
    with watch.stage("segmentation" if patient.seg is None else "load"):
        seg_path, labels, affine = _segmentation(patient, segmenter, tmp, progress=watch.on_stage is not None)
        _check_same_grid(seg_path if patient.seg is None else patient.seg, labels.shape, affine, t1.shape, t1_affine)
        masks = tumour_masks(
            labels.astype(np.int64), detect_convention(labels, str(seg_path)), str(patient.images[0].parent)
        )
        if not masks["whole_tumor"].any():
            raise InputError(f"{patient.images[0].parent}: the segmentation holds no tumour voxels")
    return _Scan(t1, t1_affine, seg_path, labels, affine, masks)


def _infer(db, scan: _Scan, reg, atlas, watch: Stopwatch, **options):
    """Stage ``query`` (with the inverse solver's own ``load`` and ``registration`` seconds)."""
    from gliofit.inverse.api import infer

    watch.announce("query")
    res = infer(
        db,
        scan.seg_path,
        registration=reg,
        in_atlas_space=reg is None,
        atlas=atlas,
        progress=watch.on_stage is not None,
        **options,
    )
    for stage in ("load", "registration", "query"):
        watch.add(stage, res.timings[stage])
    return res


def _infer_two_scans(
    db,
    follow: FollowUp,
    scan: _Scan,
    reg,
    registration: str,
    segmenter: _Segmenter,
    atlas,
    tmp: Path,
    watch: Stopwatch,
    **options,
):
    """The follow-up segmented (given or model), carried rigidly onto the first scan's grid
    (``segmentation_followup.nii.gz``), and both scans fitted together (docs/longitudinal.md)."""
    from gliofit.inverse.longitudinal import infer_two_scans
    from gliofit.pipelines.followup import followup_on_first_grid

    sub = tmp / "followup"
    sub.mkdir(exist_ok=True)
    with watch.stage("segmentation" if follow.case.seg is None else "load"):
        _, labels, affine = _segmentation(follow.case, segmenter, sub)
        t1_later, t1_later_affine = load_volume(follow.case.images[0], "follow-up T1")
        _check_same_grid(
            follow.case.seg or follow.case.images[0], labels.shape, affine, t1_later.shape, t1_later_affine
        )
    with watch.stage("registration"):
        on_first = followup_on_first_grid(
            labels,
            affine,
            t1_later,
            t1_later_affine,
            scan.t1,
            scan.t1_affine,
            registration=registration,
            tumour=labels > 0,
            source=str(follow.case.images[0]),
        )
        later = save_volume(on_first, scan.t1_affine, tmp / "segmentation_followup.nii.gz", dtype=np.uint8)
    res = infer_two_scans(
        db,
        scan.seg_path,
        later,
        follow.days_between,
        registration=reg,
        in_atlas_space=reg is None,
        atlas=atlas,
        **options,
    )
    for stage in ("load", "registration", "query"):
        watch.add(stage, res.timings[stage])
    return res


def _write_densities(res, atlas, scan: _Scan, tmp: Path, watch: Stopwatch) -> np.ndarray:
    """Stage ``density``: the best match's density on the atlas grid and on the patient's; the latter."""
    with watch.stage("density"):
        density_patient = res.density_on_input_grid()
        save_volume(res.density_array, atlas.affine, tmp / "tumor_density_atlas.nii.gz")
        save_volume(density_patient, scan.affine, tmp / "tumor_density.nii.gz")
    return density_patient


def _write_plan(atlas, reg, scan: _Scan, density_patient: np.ndarray, margin_mm: float, tmp: Path, watch: Stopwatch):
    """Stage ``plan``: the brain on the patient grid, both target volumes and plan.json; (plan, summary)."""
    from gliofit.pipelines.planning import make_plan

    with watch.stage("plan"):
        brain = brain_on_patient_grid(atlas, reg, scan.labels.shape, scan.affine, scan.masks["whole_tumor"])
        save_volume(brain, scan.affine, tmp / "brain_mask.nii.gz", dtype=np.uint8)
        plan = make_plan(
            density_patient,
            scan.masks["core"],
            scan.affine,
            brain=brain,
            margin_mm=margin_mm,
            whole_tumor=scan.masks["whole_tumor"],
        )
        save_volume(plan.standard, scan.affine, tmp / "target_standard.nii.gz", dtype=np.uint8)
        save_volume(plan.model, scan.affine, tmp / "target_model.nii.gz", dtype=np.uint8)
        summary = dict(plan.summary) | {"brain": "atlas brain on the patient grid + tumour"}
        write_json(summary, tmp / "plan.json")
    return plan, summary


def _report_figure(
    tmp: Path, patient: BratsCase, scan: _Scan, density: np.ndarray, res, plan, watch: Stopwatch
) -> dict[str, Path]:
    """Stage ``report``, its costly part: report.png (T1c, labels, matched masks, density, both targets)."""
    from gliofit.common.figures import save_figure
    from gliofit.common.wording import parameters_title
    from gliofit.pipelines.report import patient_figure

    with watch.stage("report"):
        mri = load_volume(patient.images[1], "T1c")[0]
        match_wt, match_core = _match_masks(density, res.parameters)
        fig = patient_figure(
            mri=mri,
            mri_name="T1c (T1 with gadolinium)",
            segmentation=scan.labels,
            density=density,
            match_whole_tumor=match_wt,
            match_core=match_core,
            plans={"standard": plan.standard, "model": plan.model},
            affine=scan.affine,
            title=parameters_title(res.parameters, res.uncertainty, res.fit, name=patient.name),
        )
        return {"report.png": save_figure(fig, tmp / "report.png")}


def run_patient(
    patient_dir: str | Path,
    db,
    out_dir: str | Path,
    *,
    model: Any = None,
    device: str = "cpu",
    precision: str = "auto",
    registration: str = "syn",
    top_k: int = 200,
    refine: bool = True,
    margin_mm: float = 15.0,
    density: str = "upsample",
    method: str = "index",
    atlas=None,
    figure: bool = True,
    on_stage: Callable[[str], None] | None = None,
    refine_budget: int | None = None,
) -> dict:
    """Run the whole pipeline for one patient folder and write ``out_dir``.

    Parameters
    ----------
    patient_dir : a BraTS 2021 or 2023 patient folder (:func:`~gliofit.pipelines.patient.find_patient`).
    db : a database directory or an open database.
    out_dir : the output folder (replaced atomically when complete).
    model : STU-Net checkpoint (path or ``(net, meta)``) used when the folder holds no segmentation.
    device : ``cpu`` or ``cuda`` for the segmentation.
    precision : the segmentation network's arithmetic (:data:`gliofit.segmentation.PRECISIONS`).
    registration : ``syn`` (affine + SyN), ``affine`` or ``none`` (MRI already in atlas space).
    top_k, refine, refine_budget, density, method : passed to :func:`gliofit.infer` (``method="exhaustive"``: the
        published baseline's query).
    margin_mm : the standard plan's margin around the tumour core, mm.
    atlas : the database's 1 mm atlas if already loaded.
    figure : write report.png (the html report embeds it).
    on_stage : called with each stage's name (:data:`STAGES`) as it begins; when given, the segmentation
        and an exhaustive query also show their progress bars on stderr.

    Returns
    -------
    The content of ``OUT/result.json`` (INTERFACES.md), with ``timings_s`` per stage (:data:`STAGES`) and
    ``plan`` (volumes in cm³, threshold, brain used).
    """
    import gliofit
    from gliofit.inverse.api import atlas_of
    from gliofit.pipelines.report import patient_html

    if registration not in REGISTRATIONS:
        raise InputError(
            f"registration must be one of {', '.join(REGISTRATIONS)}, got {registration!r}", parameter="registration"
        )
    segmenter = _Segmenter(model, device, check_precision(precision))
    out = output_folder_ready(out_dir)
    watch = Stopwatch(STAGES[:-1], on_stage=on_stage)
    with watch.stage("load"):
        patient = find_patient(patient_dir)
        if not needs_preprocessing(patient_dir):
            _check_segmentation_source(patient, model)  # before any stage line: one error line
        follow = find_followup(patient_dir)
        own_db = isinstance(db, (str, Path))
        if own_db:
            db = gliofit.open_database(db)
    try:
        with watch.stage("load"):
            atlas = atlas if atlas is not None else atlas_of(db)
        with atomic_directory(out) as tmp:
            if needs_preprocessing(patient_dir):  # a raw import-dicom folder
                with watch.stage("load"):
                    preprocess(patient_dir, tmp / "preprocessed" / patient.name, atlas=atlas)
                    patient = find_patient(tmp / "preprocessed" / patient.name)
            scan = _load_and_segment(patient, segmenter, tmp, watch)
            with watch.stage("registration"):
                reg = _register(patient, scan.t1, scan.t1_affine, atlas, registration, scan.masks["whole_tumor"], tmp)
            if follow is None:
                res = _infer(
                    db,
                    scan,
                    reg,
                    atlas,
                    watch,
                    top_k=top_k,
                    refine=refine,
                    refine_budget=refine_budget,
                    density=density,
                    method=method,
                )
            else:
                res = _infer_two_scans(
                    db,
                    follow,
                    scan,
                    reg,
                    registration,
                    segmenter,
                    atlas,
                    tmp,
                    watch,
                    top_k=top_k,
                    density=density,
                    refine=refine,
                )
            density_patient = _write_densities(res, atlas, scan, tmp, watch)
            plan, plan_summary = _write_plan(atlas, reg, scan, density_patient, margin_mm, tmp, watch)
            result = res.to_dict()
            result["space"] = "patient" if reg is not None else "atlas"
            result["patient"] = {
                "name": patient.name,
                "folder": str(patient.images[0].parent.resolve()),
                "layout": patient.layout,
                "registration": registration,
                "segmentation": "given" if patient.seg is not None else "model",
            }
            result["plan"] = plan_summary
            images = _report_figure(tmp, patient, scan, density_patient, res, plan, watch) if figure else None
            result["timings_s"] = watch.timings(ndigits=4)  # measured before report.html and result.json show it
            if images is not None:
                write_text(patient_html(result, images=images, plan=plan_summary), tmp / "report.html")
            write_json(result, tmp / "result.json")
    finally:
        if own_db:
            db.close()
    return result
