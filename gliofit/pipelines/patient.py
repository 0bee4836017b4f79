"""Patient folders for ``run`` and ``cohort``: a BraTS case folder plus a name that is safe under OUT.

The layouts (INTERFACES.md) are read by :func:`gliofit.segmentation.brats_convert.read_case_folder`,
the one reader of BraTS folders: files are named after the folder (``<case>-t1n.nii.gz`` ... for
BraTS 2023+, ``<case>_t1.nii.gz`` ... for BraTS 2021, ``.nii`` too, an optional ``<case>-seg`` /
``<case>_seg``); mixed naming or a missing modality is refused with one line naming the file.
Here the folder's name, which becomes ``OUT/<patient>/`` in a cohort, is checked as well: an empty,
hidden (``.x``) name, ``..``, a path separator or a control character is refused, and so is a file
that is a symbolic link leading outside the folder.

A second time point (docs/longitudinal.md): a ``followup/`` sub-folder in the same BraTS layout (files named
after the patient, ``<case>-t1n.nii.gz`` ..., or after the folder, ``followup-t1n.nii.gz`` ...) and
``timepoints.json`` beside it: ``{"days_between": N}`` or ``{"earlier_date": "YYYY-MM-DD",
"later_date": "YYYY-MM-DD"}`` (both forms together must agree within a day). :func:`find_followup` reads them.
"""

from __future__ import annotations

import datetime
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from gliofit.common.errors import InputError
from gliofit.segmentation.brats_convert import LAYOUTS, MODALITIES, BratsCase, read_case_folder

__all__ = [
    "FOLLOWUP_FOLDER",
    "TIMEPOINTS_FILE",
    "FollowUp",
    "check_patient_name",
    "find_followup",
    "find_patient",
    "find_patients",
    "read_timepoints",
]

FOLLOWUP_FOLDER = "followup"
TIMEPOINTS_FILE = "timepoints.json"


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


@dataclass(frozen=True)
class FollowUp:
    """The second time point of a patient folder: its files and the days since the first scan."""

    case: BratsCase
    days_between: float


def _date(value, path: Path, key: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(str(value))
    except ValueError:
        raise InputError(f"{path}: {key} {value!r} is not a date (YYYY-MM-DD)") from None


def read_timepoints(path: str | Path) -> float:
    """Days between the scans from ``timepoints.json`` (InputError naming it when missing, malformed or <= 0)."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(
            f"{p}: missing (a followup/ folder needs {TIMEPOINTS_FILE} with the days between the scans)"
        ) from None
    except (OSError, ValueError) as err:
        raise InputError(f"{p}: not valid JSON ({err})") from None
    if not isinstance(d, dict) or not ({"days_between"} <= d.keys() or {"earlier_date", "later_date"} <= d.keys()):
        raise InputError(f'{p}: give {{"days_between": N}} or {{"earlier_date": ..., "later_date": ...}}')
    days = None
    if "earlier_date" in d:
        days = float((_date(d["later_date"], p, "later_date") - _date(d["earlier_date"], p, "earlier_date")).days)
    if "days_between" in d:
        try:
            n = float(d["days_between"])
        except (TypeError, ValueError):
            raise InputError(f"{p}: days_between must be a number, got {d['days_between']!r}") from None
        if days is not None and abs(n - days) > 1.0:
            raise InputError(f"{p}: days_between {n:g} disagrees with the dates ({days:g} days apart)")
        days = n
    if not days > 0:
        raise InputError(f"{p}: the later scan must come after the earlier (days between {days:g} <= 0)")
    return days


def _followup_case(folder: Path, patient: str) -> BratsCase:
    """The follow-up folder's files, named after the patient or after the folder."""
    from gliofit.segmentation.brats_convert import _find

    for name in (patient, folder.name):
        for layout, names in LAYOUTS.items():
            files = {k: _find(folder, f"{name}{s}") for k, s in names.items()}
            if all(files[m] is not None for m in MODALITIES):
                return BratsCase(name, layout, tuple(files[m] for m in MODALITIES), files["seg"])
    return read_case_folder(folder)  # its one-line error names what is missing


def find_followup(folder: str | Path) -> FollowUp | None:
    """The ``followup/`` time point of a patient folder, or None; a followup/ without ``timepoints.json``
    (or the reverse) is refused."""
    path = Path(folder)
    sub, tp = path / FOLLOWUP_FOLDER, path / TIMEPOINTS_FILE
    if not sub.is_dir():
        if tp.is_file():
            raise InputError(f"{tp}: timepoints given but no {FOLLOWUP_FOLDER}/ folder with the later scan")
        return None
    days = read_timepoints(tp)
    case = _followup_case(sub, path.name)
    _check_inside(case, sub)
    return FollowUp(case, days)
