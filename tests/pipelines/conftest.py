"""Fixtures of the pipeline tests: one small database and phantom patient folders (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipelinehelpers import PHANTOM_MM

from gliofit.segmentation.phantoms import make_phantoms
from gliofit.simulations_db.build import build_database
from gliofit.simulations_db.design import SnapshotRule


@pytest.fixture(scope="session")
def pipeline_db(tmp_path_factory) -> Path:
    """80 simulations at 6 mm, 4 snapshots each."""
    path = tmp_path_factory.mktemp("pipeline") / "DB"
    build_database(path, 80, resolution_mm=6.0, seed=0, workers=1, snapshots=SnapshotRule(count=4), progress=False)
    return path


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory, atlas1) -> list[Path]:
    """Three BraTS 2023 phantom patient folders at 3 mm (MRI + segmentation + truth.json)."""
    root = tmp_path_factory.mktemp("cohort") / "COHORT"
    return make_phantoms(root, 3, seed=11, resolution_mm=PHANTOM_MM, atlas=atlas1, sim_resolution_mm=PHANTOM_MM)


@pytest.fixture(scope="session")
def dicom_study(tmp_path_factory, phantom_cohort):
    """The first phantom as an oblique DICOM study with skull, bias, motion and a localiser."""
    from dicomhelpers import PATIENT_ID, PATIENT_NAME, PIXEL_SCALE

    from gliofit.pipelines.dicom_phantom import write_dicom_study

    out = tmp_path_factory.mktemp("dicom") / "STUDY"
    return write_dicom_study(
        phantom_cohort[0], out, seed=1, pixel_scale=PIXEL_SCALE, patient_id=PATIENT_ID, patient_name=PATIENT_NAME
    )


@pytest.fixture(scope="session")
def imported_patient(tmp_path_factory, dicom_study) -> Path:
    """The DICOM study through ``gliofit import-dicom``."""
    from dicomhelpers import gliofit

    out = tmp_path_factory.mktemp("imported") / "P001"
    proc = gliofit("import-dicom", dicom_study.folder, "-o", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def preprocessed_patient(tmp_path_factory, imported_patient) -> Path:
    """The imported folder through ``gliofit preprocess`` at ``PREPROCESS_MM``."""
    from dicomhelpers import PREPROCESS_MM, gliofit

    out = tmp_path_factory.mktemp("preprocessed") / "P001"
    proc = gliofit("preprocess", imported_patient, "-o", out, "--spacing-mm", PREPROCESS_MM, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return out
