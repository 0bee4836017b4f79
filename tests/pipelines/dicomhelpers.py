"""Shared fixtures of the DICOM tests: one phantom DICOM study written from the first phantom patient."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from pipelinehelpers import GLIOFIT, atlas1, phantom_cohort  # noqa: F401 - fixtures

from gliofit.pipelines.dicom_phantom import DicomStudy, write_dicom_study

PIXEL_SCALE = 2.0
"""DICOM grids at twice the default spacing (2 mm pixels, FLAIR 6 mm slices): tests run in seconds."""
PATIENT_ID, PATIENT_NAME = "PHANTOM-0001", "Phantom^Patient"
_ONCE: dict = {}


def gliofit(*args) -> subprocess.CompletedProcess:
    return subprocess.run([GLIOFIT, *map(str, args)], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="session")
def dicom_study(tmp_path_factory, phantom_cohort) -> DicomStudy:  # noqa: F811
    """The first phantom as an oblique DICOM study with skull, bias, motion and a localiser."""
    if "study" not in _ONCE:
        out = tmp_path_factory.mktemp("dicom") / "STUDY"
        _ONCE["study"] = write_dicom_study(phantom_cohort[0], out, seed=1, pixel_scale=PIXEL_SCALE,
                                           patient_id=PATIENT_ID, patient_name=PATIENT_NAME)
    return _ONCE["study"]


def copy_study(study: DicomStudy, dst: Path) -> Path:
    """A writable copy of the study folder."""
    shutil.copytree(study.folder, dst)
    return dst


def series_files(folder: Path) -> list[Path]:
    """The files of one series folder, in slice order (by InstanceNumber)."""
    files = sorted(folder.glob("*.dcm"))
    return sorted(files, key=lambda f: int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber))
