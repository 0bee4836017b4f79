"""``gliofit import-dicom``: a DICOM study folder -> a BraTS 2023 patient folder of four NIfTI volumes.

Steps: read every file's header (:func:`~gliofit.pipelines.dicom_series.scan_study`), skip
localisers, derived and non-MR series (:func:`~gliofit.pipelines.dicom_rules.skip_reason`), name the
modality of the others by the rule table (:data:`~gliofit.pipelines.dicom_rules.RULES`) or by the
``--series`` map, drop exact duplicates (the same pixel data under another series UID), check the
chosen series' geometry and convert them with SimpleITK's series reader.

The patient folder holds ``<name>-t1n/-t1c/-t2w/-t2f.nii.gz`` (``<name>`` = the folder's name, which
the user chooses: an ID of theirs or a hash, never read from the headers) in each series' own
scanner orientation and spacing, and ``import.json``: per modality the series number, description,
SeriesInstanceUID, the rule that chose it and its files (relative to the study folder, for the
RTSTRUCT export later); every skipped series and file with the reason. No patient name, ID or birth
date is written anywhere. Nothing half-written: files go to a hidden sibling folder renamed at the end.

``--series MAP.json`` maps modalities to series: ``{"flair": 7, "t1c": "T1 MPRAGE post"}``; a value is a
SeriesNumber, a SeriesInstanceUID or an exact SeriesDescription and must match exactly one series.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gliofit import __version__
from gliofit.common.errors import InputError
from gliofit.common.io import atomic_directory, write_json
from gliofit.common.nifti import save_volume
from gliofit.pipelines.dicom_rules import classify, skip_reason
from gliofit.pipelines.dicom_series import Series, Skipped, check_geometry, read_volume, scan_study
from gliofit.pipelines.patient import check_patient_name
from gliofit.segmentation.brats_convert import LAYOUTS, MODALITIES

__all__ = ["import_dicom", "read_series_map", "source_series", "IMPORT_JSON", "MODALITY_NAMES"]

IMPORT_JSON = "import.json"
MODALITY_NAMES = {"t1": "T1", "t1c": "T1c", "t2": "T2", "flair": "FLAIR"}


def read_series_map(path: str | Path | None) -> dict[str, str]:
    """The ``--series`` file as {modality: selector string}; InputError naming the file when malformed."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: --series map file not found")
    try:
        raw = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or not raw:
        raise InputError(f'{p}: expected an object such as {{"flair": 7}}')
    bad = sorted(set(raw) - set(MODALITIES))
    if bad:
        raise InputError(f"{p}: unknown modality {bad[0]!r} (use {', '.join(MODALITIES)})")
    return {k: str(v) for k, v in raw.items()}


def _matches(series: Series, selector: str) -> bool:
    return selector in (str(series.number), series.uid, series.description)


def _choose(series: list[Series], overrides: dict[str, str], map_path) -> tuple[dict, list[Skipped]]:
    """{modality: [(series, rule)]} of candidates and the series skipped with reasons."""
    chosen: dict[str, list[tuple[Series, str]]] = {m: [] for m in MODALITIES}
    skipped: list[Skipped] = []
    taken: set[str] = set()
    for m, sel in overrides.items():
        hits = [s for s in series if _matches(s, sel)]
        if len(hits) != 1:
            raise InputError(f"{map_path}: {m} selector {sel!r} matches {len(hits)} series (need exactly one)")
        chosen[m].append((hits[0], "--series map"))
        taken.add(hits[0].uid)
    for s in series:
        if s.uid in taken:
            continue
        reason = skip_reason(s.header)
        if reason is not None:
            skipped.append(Skipped(s.label(), reason))
            continue
        modality, rule = classify(s.header)
        if modality is None:
            skipped.append(Skipped(s.label(), rule))
        elif modality in overrides:
            skipped.append(Skipped(s.label(), f"{modality} chosen by the --series map instead"))
        else:
            chosen[modality].append((s, rule))
    return chosen, skipped


def _drop_duplicates(chosen: dict, skipped: list[Skipped]) -> None:
    for m, cands in chosen.items():
        seen: dict[str, Series] = {}
        keep = []
        for s, rule in cands:
            h = s.content_sha1()
            if h in seen:
                skipped.append(Skipped(s.label(), f"duplicate of {seen[h].label()}"))
            else:
                seen[h] = s
                keep.append((s, rule))
        chosen[m] = keep


def _check_one_each(chosen: dict, skipped: list[Skipped], root: Path) -> dict[str, tuple[Series, str]]:
    for m in MODALITIES:
        if len(chosen[m]) > 1:
            names = ", ".join(s.label() for s, _ in chosen[m])
            raise InputError(
                f"{root}: {len(chosen[m])} candidate {MODALITY_NAMES[m]} series: {names} "
                f"(choose one with --series MAP.json)"
            )
        if not chosen[m]:
            seen = ", ".join(f"{k.what} ({k.reason})" for k in skipped) or "none"
            raise InputError(
                f"{root}: no {MODALITY_NAMES[m]} series found (other series: {seen}; name it with --series MAP.json)"
            )
    return {m: chosen[m][0] for m in MODALITIES}


def _record(series: Series, rule: str, ordered, step: float, data: np.ndarray, affine: np.ndarray, root: Path) -> dict:
    return {
        "series_number": series.number,
        "description": series.description,
        "series_instance_uid": series.uid,
        "rule": rule,
        "files": [str(s.path.relative_to(root)) for s in ordered],
        "slices": len(ordered),
        "shape": list(data.shape),
        "slice_step_mm": round(step, 6),
        "affine": np.round(affine, 6).tolist(),
    }


def import_dicom(
    study_dir: str | Path, out_dir: str | Path, *, series_map: str | Path | None = None, progress: bool = True
) -> dict:
    """Convert a DICOM study into a BraTS 2023 patient folder; returns the ``import.json`` content.

    Parameters
    ----------
    study_dir : a folder of DICOM files (any depth, any file names).
    out_dir : the patient folder to write (its name becomes the case name; replaced when complete).
    series_map : optional JSON file {modality: series number, UID or description}.
    progress : show a progress bar while reading the files.
    """
    from gliofit.common.progress import progress_bar

    root = Path(study_dir)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output path is a file, not a folder")
    name = check_patient_name(out.name, out)
    overrides = read_series_map(series_map)
    n_files = sum(1 for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0
    with progress_bar(disable=not progress) as bar:
        task = bar.add_task("reading DICOM headers", total=n_files)
        series, skipped_files = scan_study(root, on_file=lambda _: bar.advance(task))
    chosen, skipped_series = _choose(series, overrides, series_map)
    _drop_duplicates(chosen, skipped_series)
    picked = _check_one_each(chosen, skipped_series, root)
    geometry = {m: check_geometry(s, root) for m, (s, _) in picked.items()}
    with atomic_directory(out) as tmp:
        records = {}
        for m in MODALITIES:
            ordered, step = geometry[m]
            data, affine = read_volume(ordered, step)
            save_volume(data, affine, tmp / f"{name}{LAYOUTS['brats2023'][m]}.nii.gz")
            records[m] = _record(picked[m][0], picked[m][1], ordered, step, data, affine, root)
        record = {
            "format": "gliofit-import/1",
            "gliofit_version": __version__,
            "study_dir": str(root.resolve()),
            "layout": "brats2023",
            "series": records,
            "skipped_series": [vars(s) for s in skipped_series],
            "skipped_files": [{"file": s.what, "reason": s.reason} for s in skipped_files],
        }
        write_json(record, tmp / IMPORT_JSON)
    return record


def source_series(folder: str | Path, modality: str = "t1c") -> list[Path]:
    """The DICOM files of the series a patient folder's ``modality`` came from, in slice order.

    ``folder`` is made by ``import-dicom`` (``import.json``) or ``preprocess`` (``preprocess.json``
    naming its import record). InputError when there is no record or the files are gone.
    """
    p = Path(folder)
    record_path = p / IMPORT_JSON
    pre = p / "preprocess.json"
    if not record_path.is_file() and pre.is_file():
        source = json.loads(pre.read_text()).get("import_record")
        record_path = Path(source) if source else record_path
    if not record_path.is_file():
        raise InputError(f"{p}: no import.json or preprocess.json naming the DICOM series (use --dicom-ref)")
    rec = json.loads(record_path.read_text())
    try:
        entry = rec["series"][modality]
        files = [Path(rec["study_dir"]) / f for f in entry["files"]]
    except (KeyError, TypeError):
        raise InputError(f"{record_path}: no {modality} series recorded") from None
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: DICOM file of the {modality} series recorded in {record_path} is gone")
    return files
