"""Patient folders for ``run`` and ``cohort``: a BraTS case folder plus a name that is safe under OUT.

The layouts (INTERFACES.md) are read by :func:`gliofit.segmentation.brats_convert.read_case_folder`,
the one reader of BraTS folders: files are named after the folder (``<case>-t1n.nii.gz`` ... for
BraTS 2023+, ``<case>_t1.nii.gz`` ... for BraTS 2021, ``.nii`` too, an optional ``<case>-seg`` /
``<case>_seg``); mixed naming or a missing modality is refused with one line naming the file.
Here the folder's name, which becomes ``OUT/<patient>/`` in a cohort, is checked as well: an empty,
hidden (``.x``) name, ``..``, a path separator or a control character is refused, and so is a file
that is a symbolic link leading outside the folder.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from gliofit.common.errors import InputError
from gliofit.segmentation.brats_convert import BratsCase, read_case_folder

__all__ = ["find_patient", "find_patients", "check_patient_name"]


def check_patient_name(name: str, where: str | Path) -> str:
    """``name`` if it can be a folder name under OUT; InputError otherwise."""
    if not name or ".." in name or "/" in name or "\\" in name or name.startswith("."):
        raise InputError(f"{where}: patient name {name!r} is not allowed (empty, hidden, '..' or a path separator)")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
        raise InputError(f"{where}: patient name {name!r} is not allowed (control characters)")
    return name


def _check_inside(case: BratsCase, folder: Path) -> None:
    """InputError when a file of ``case`` is a symbolic link leading outside ``folder``."""
    root = folder.resolve()
    for f in (*case.images, *((case.seg,) if case.seg is not None else ())):
        if f.is_symlink() and not f.resolve().is_relative_to(root):
            raise InputError(f"{f}: symbolic link to {f.resolve()}, outside the patient folder; copy the file in")


def find_patient(folder: str | Path) -> BratsCase:
    """The files of one patient folder (:class:`~gliofit.segmentation.brats_convert.BratsCase`)."""
    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"{path}: patient folder not found" if not path.exists() else f"{path}: not a folder")
    check_patient_name(path.name, path)
    case = read_case_folder(path)
    _check_inside(case, path)
    return case


def find_patients(cohort: str | Path) -> list[Path]:
    """The patient folders of a cohort directory: its sub-folders, sorted by name, hidden ones skipped."""
    path = Path(cohort)
    if not path.is_dir():
        raise InputError(f"{path}: cohort folder not found" if not path.exists() else f"{path}: not a folder")
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"{path}: no patient folders in the cohort")
    return folders
