"""DICOM study -> import -> preprocess -> run --dicom-out -> RTSTRUCT + SEG, read back and rasterised."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pydicom
import pytest


from dicomhelpers import dice, gliofit

from gliofit.common.grids import resample_linear, voxel_to_world
from gliofit.common.nifti import load_volume, save_volume
from gliofit.pipelines.dicom_rt import Structure, load_reference, on_reference, read_rtstruct, read_seg

pytestmark = pytest.mark.slow  # every test reads one `gliofit run --dicom-out` of a preprocessed DICOM study

NAMES = [
    "Target standard",
    "Target model",
    "Whole tumour",
    "Tumour core",
    "Enhancing",
    "Necrosis",
    "Edema",
    "Density 1%",
    "Density 10%",
    "Density 30%",
]


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory, preprocessed_patient, phantom_cohort, pipeline_db):
    """The preprocessed folder with the phantom's labels mapped onto its grid, run with --dicom-out,
    and the phantom's own NIfTI folder run the same way."""
    root = tmp_path_factory.mktemp("rt")
    work = root / "P001"
    shutil.copytree(preprocessed_patient, work)
    case = phantom_cohort[0]
    seg, affine = load_volume(case / f"{case.name}-seg.nii.gz")
    grid, shape = load_volume(work / "P001-t1c.nii.gz")[1], load_volume(work / "P001-t1c.nii.gz")[0].shape
    mapped = resample_linear(np.rint(seg).astype(np.uint8), affine, grid, shape, order=0)
    save_volume(mapped, grid, work / "P001-seg.nii.gz", dtype=np.uint8)
    proc = gliofit("run", work, "--db", pipeline_db, "-o", root / "OUT", "--registration", "affine", "--dicom-out")
    assert proc.returncode == 0, proc.stderr
    ref = gliofit("run", case, "--db", pipeline_db, "-o", root / "NIFTI", "--registration", "affine")
    assert ref.returncode == 0, ref.stderr
    return root / "OUT", root / "NIFTI", work


def _structures(out):
    dens, affine = load_volume(out / "tumor_density.nii.gz")
    lab = np.rint(load_volume(out / "segmentation.nii.gz")[0])
    std = load_volume(out / "target_standard.nii.gz")[0] > 0
    mod = load_volume(out / "target_model.nii.gz")[0] > 0
    masks = {
        "Target standard": std,
        "Target model": mod,
        "Whole tumour": lab > 0,
        "Tumour core": np.isin(lab, (1, 3)),
        "Enhancing": lab == 3,
        "Necrosis": lab == 1,
        "Edema": lab == 2,
    }
    structures = {k: Structure(k, v.astype(np.float32), affine) for k, v in masks.items()}
    structures |= {f"Density {p}%": Structure(f"Density {p}%", dens, affine, level=p / 100) for p in (1, 10, 30)}
    return structures, masks, affine


def test_rtstruct_reads_back_onto_the_t1c_series(dicom_run, dicom_study) -> None:
    out, _, _ = dicom_run
    ref = load_reference(dicom_study.series["t1c"])
    back = read_rtstruct(out / "rtstruct.dcm", ref)
    assert list(back) == NAMES
    structures, masks, affine = _structures(out)
    for name, s in structures.items():
        want = on_reference(s, ref)
        assert want.sum() > 0, name
        assert dice(back[name], want) >= 0.95, name
    for name in ("Target standard", "Target model", "Whole tumour", "Edema"):  # and on the NIfTI grid
        on_nifti = resample_linear(back[name].astype(np.float32), ref.affine, affine, masks[name].shape) >= 0.5
        assert dice(on_nifti, masks[name]) >= 0.95, name


def test_rtstruct_references_the_original_series_and_keeps_world_coordinates(dicom_run, dicom_study) -> None:
    out, _, _ = dicom_run
    rt = pydicom.dcmread(out / "rtstruct.dcm")
    t1c = load_reference(dicom_study.series["t1c"])
    assert rt.Modality == "RTSTRUCT" and rt.StudyInstanceUID == t1c.header.StudyInstanceUID
    assert rt.PatientID == t1c.header.PatientID
    series = rt.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == dicom_study.series_uid["t1c"]
    assert {str(i.ReferencedSOPInstanceUID) for i in series.ContourImageSequence} == {
        str(d.SOPInstanceUID) for d in t1c.datasets
    }
    back = read_rtstruct(out / "rtstruct.dcm", t1c)
    # the contoured tumour lies where the run's segmentation lies, in world millimetres
    structures, _, _ = _structures(out)
    contoured = on_reference(structures["Whole tumour"], t1c)
    centre = voxel_to_world(t1c.affine, np.argwhere(back["Whole tumour"]).mean(axis=0))
    assert np.linalg.norm(centre - voxel_to_world(t1c.affine, np.argwhere(contoured).mean(axis=0))) < 0.5
    # and where the phantom's tumour is (its 3 mm labels reached the 2 mm grid by nearest neighbour, which
    # moves boundaries by up to half a voxel: measured 0.53 mm between centres, Dice 0.97)
    truth_lab, truth_aff = _phantom_labels(dicom_study)
    truth = on_reference(Structure("truth", (truth_lab > 0).astype(np.float32), truth_aff), t1c)
    assert dice(truth, back["Whole tumour"]) >= 0.9
    assert np.linalg.norm(centre - voxel_to_world(t1c.affine, np.argwhere(truth).mean(axis=0))) < 1.0


def _phantom_labels(study):
    from gliofit.segmentation.brats_convert import read_case_folder

    return load_volume(read_case_folder(study.case_dir).seg)


def test_seg_reads_back_exactly(dicom_run, dicom_study) -> None:
    out, _, _ = dicom_run
    ref = load_reference(dicom_study.series["t1c"])
    back = read_seg(out / "seg.dcm", ref)
    structures, masks, affine = _structures(out)
    assert set(back) == {"Necrosis", "Edema", "Enhancing"}
    for name, m in back.items():
        assert np.array_equal(m, on_reference(structures[name], ref)), name


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) is not installed")
def test_dciodvfy_reports_no_errors(dicom_run) -> None:
    out, _, _ = dicom_run
    for name in ("rtstruct.dcm", "seg.dcm"):
        proc = subprocess.run(["dciodvfy", str(out / name)], capture_output=True, text=True, timeout=120)
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
        assert not errors, (name, errors)


def test_parameters_from_dicom_agree_with_the_nifti_folder(dicom_run) -> None:
    out, nifti, _ = dicom_run
    a = json.loads((out / "result.json").read_text())
    b = json.loads((nifti / "result.json").read_text())
    for key in ("mu_D_mm", "mu_rho", "infiltration_length_mm"):
        lo_a, hi_a = a["uncertainty"][key]["ci95"]
        lo_b, hi_b = b["uncertainty"][key]["ci95"]
        assert lo_b <= a["parameters"][key] <= hi_b or lo_a <= b["parameters"][key] <= hi_a, key


def test_plan_dicom_ref_writes_the_same_structures(tmp_path, dicom_run, dicom_study) -> None:
    out, _, _ = dicom_run
    proc = gliofit(
        "plan",
        "--density",
        out / "tumor_density.nii.gz",
        "--seg",
        out / "segmentation.nii.gz",
        "--brain",
        out / "brain_mask.nii.gz",
        "-o",
        tmp_path / "PLAN",
        "--dicom-ref",
        dicom_study.series["t1c"],
    )
    assert proc.returncode == 0, proc.stderr
    ref = load_reference(dicom_study.series["t1c"])
    a = read_rtstruct(tmp_path / "PLAN" / "rtstruct.dcm", ref)
    b = read_rtstruct(out / "rtstruct.dcm", ref)
    for name in NAMES:
        assert np.array_equal(a[name], b[name]), name


def test_dicom_outputs_refuse_missing_references(tmp_path, dicom_run, dicom_study, phantom_cohort, pipeline_db) -> None:
    proc = gliofit("run", phantom_cohort[1], "--db", pipeline_db, "-o", tmp_path / "O", "--dicom-out")
    assert proc.returncode == 2 and "no import.json or preprocess.json" in proc.stderr, proc.stderr
    assert not (tmp_path / "O").exists()
    out, _, _ = dicom_run
    proc = gliofit(
        "plan",
        "--density",
        out / "tumor_density.nii.gz",
        "--seg",
        out / "segmentation.nii.gz",
        "-o",
        tmp_path / "P",
        "--dicom-ref",
        dicom_study.folder,
    )
    assert proc.returncode == 2 and "image series" in proc.stderr, proc.stderr


def test_run_preprocesses_a_raw_import_folder(tmp_path, imported_patient, phantom_cohort, pipeline_db) -> None:
    """``run`` on a folder straight from import-dicom: preprocessing (1 mm) becomes a step of the run."""
    work = tmp_path / "P001"
    shutil.copytree(imported_patient, work)
    case = phantom_cohort[0]
    seg, affine = load_volume(case / f"{case.name}-seg.nii.gz")
    t1c, t1c_affine = load_volume(work / "P001-t1c.nii.gz")
    mapped = resample_linear(np.rint(seg).astype(np.uint8), affine, t1c_affine, t1c.shape, order=0)
    save_volume(mapped, t1c_affine, work / "P001-seg.nii.gz", dtype=np.uint8)
    proc = gliofit("run", work, "--db", pipeline_db, "-o", tmp_path / "OUT", "--registration", "affine", "--dicom-out")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "OUT" / "preprocessed" / "P001" / "preprocess.json").is_file()
    assert (tmp_path / "OUT" / "rtstruct.dcm").is_file() and (tmp_path / "OUT" / "seg.dcm").is_file()
