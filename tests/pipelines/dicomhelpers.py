"""Helpers of the DICOM tests (the phantom DICOM study fixture is in ``conftest.py``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom

from pipelinehelpers import GLIOFIT

from gliofit.pipelines.dicom_phantom import DicomStudy

PIXEL_SCALE = 2.0
"""DICOM grids at twice the default spacing (2 mm pixels, FLAIR 6 mm slices): tests run in seconds."""
PATIENT_ID, PATIENT_NAME = "PHANTOM-0001", "Phantom^Patient"


def gliofit(*args) -> subprocess.CompletedProcess:
    return subprocess.run([GLIOFIT, *map(str, args)], capture_output=True, text=True, timeout=900)


def copy_study(study: DicomStudy, dst: Path) -> Path:
    """A writable copy of the study folder."""
    shutil.copytree(study.folder, dst)
    return dst


def series_files(folder: Path) -> list[Path]:
    """The files of one series folder, in slice order (by InstanceNumber)."""
    files = sorted(folder.glob("*.dcm"))
    return sorted(files, key=lambda f: int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber))


PREPROCESS_MM = 2.0
"""Output spacing of the preprocessing in the tests (1 mm in the benchmark)."""


def dice(a, b) -> float:
    return float(2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1))
