"""DICOM files of a study: read the headers, group them into series, check and assemble one volume.

:func:`scan_study` reads every file under a folder with pydicom (headers only), keeps the image
objects and lists what it could not use (not DICOM, corrupt, non-image objects such as reports or RT
structures). :func:`check_geometry` sorts a series' slices along their normal and refuses mixed
orientations, repeated positions and gaps (missing slices). :func:`read_volume` hands the sorted
files to SimpleITK's series reader (GDCM) and returns the volume with its RAS affine, checked against
the geometry computed from the headers.

Coordinates: DICOM patient coordinates are LPS; every affine returned here is RAS (nibabel's).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gliofit.common.errors import InputError

__all__ = [
    "Slice",
    "Series",
    "Skipped",
    "scan_study",
    "read_image_slices",
    "header_affine",
    "check_geometry",
    "read_volume",
    "IMAGE_SOP_CLASSES",
    "ORIENTATION_TOL",
    "GAP_TOLERANCE",
]

IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image",
    "1.2.840.10008.5.1.4.1.1.2": "CT Image",
}
"""Single-frame image storage classes the importer converts (others are listed as skipped)."""
ORIENTATION_TOL = 1e-3
"""Largest difference of direction cosines between slices of one series."""
GAP_TOLERANCE = 0.25
"""A slice step may differ from the series' median step by this fraction before it is a gap."""
_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Slice:
    """One image file: its path and the header values used for grouping and geometry."""

    path: Path
    series_uid: str
    patient_key: str
    orientation: tuple[float, ...]
    position: tuple[float, ...]
    pixel_sha1: str
    header: object = field(repr=False)


@dataclass
class Series:
    """The image files of one SeriesInstanceUID (unsorted until :func:`check_geometry`)."""

    uid: str
    slices: list[Slice]

    @property
    def header(self):
        """The first slice's header (series-level tags)."""
        return self.slices[0].header

    @property
    def number(self) -> int | None:
        v = getattr(self.header, "SeriesNumber", None)
        return int(v) if v not in (None, "") else None

    @property
    def description(self) -> str:
        return str(getattr(self.header, "SeriesDescription", "") or getattr(self.header, "ProtocolName", "") or "")

    def content_sha1(self) -> str:
        """A hash of the pixel data of all slices (equal for a series sent twice under two UIDs)."""
        import hashlib

        return hashlib.sha1("".join(sorted(s.pixel_sha1 for s in self.slices)).encode()).hexdigest()

    def label(self) -> str:
        """``series 5 'T1 SE AX +C'``: how messages name a series (no patient data)."""
        return f"series {self.number if self.number is not None else '?'} {self.description!r}"


@dataclass
class Skipped:
    """Something the importer did not use, and why (relative path or series label)."""

    what: str
    reason: str


def _read_header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=False, force=False), None
    except InvalidDicomError:
        return None, "not DICOM"
    except Exception as exc:  # noqa: BLE001 - any parser failure makes the file corrupt
        return None, f"corrupt DICOM ({type(exc).__name__})"


def _pixel_bytes_ok(ds) -> bool:
    data = ds.get("PixelData")
    if data is None:
        return False
    expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.BitsAllocated) // 8
    return len(data) >= expected


def _patient_key(ds) -> str:
    """A key comparing patients across files: PatientID and birth date, hashed (never printed)."""
    import hashlib

    raw = f"{ds.get('PatientID', '')}|{ds.get('PatientBirthDate', '')}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _as_slice(path: Path, ds, root: Path) -> tuple[Slice | None, Skipped | None]:
    rel = str(path.relative_to(root))
    sop = str(ds.get("SOPClassUID", ""))
    if not sop:
        return None, Skipped(rel, "corrupt DICOM (no SOP Class UID)")
    if sop not in IMAGE_SOP_CLASSES:
        name = getattr(ds.get("SOPClassUID"), "name", sop) or "no SOP class"
        return None, Skipped(rel, f"not a single-frame image ({name})")
    if not _pixel_bytes_ok(ds):
        return None, Skipped(rel, "corrupt DICOM (pixel data truncated or missing)")
    import hashlib

    digest = hashlib.sha1(bytes(ds.PixelData)).hexdigest()
    del ds.PixelData  # SimpleITK reads the pixels again later
    try:
        iop = tuple(float(v) for v in ds.ImageOrientationPatient)
        ipp = tuple(float(v) for v in ds.ImagePositionPatient)
        uid = str(ds.SeriesInstanceUID)
    except (AttributeError, TypeError, ValueError):
        return None, Skipped(rel, "image without orientation, position or series UID")
    if len(iop) != 6 or len(ipp) != 3:
        return None, Skipped(rel, "image with a malformed orientation or position")
    return Slice(path, uid, _patient_key(ds), iop, ipp, digest, ds), None


def read_image_slices(files: list[Path]) -> list[Slice]:
    """The single-frame image slices among ``files`` (others are ignored)."""
    out = []
    for f in files:
        ds, _ = _read_header(Path(f))
        if ds is not None:
            sl, _skip = _as_slice(Path(f), ds, Path(f).parent)
            if sl is not None:
                out.append(sl)
    return out


def scan_study(folder: str | Path, *, on_file=None) -> tuple[list[Series], list[Skipped]]:
    """Every image series under ``folder`` (recursively) and the files that were skipped.

    Raises InputError when the folder is missing, holds no DICOM file at all, no image, or images
    of more than one patient (the message names a file, never the identifiers).
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: study folder not found" if not root.exists() else f"{root}: not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    groups: dict[str, list[Slice]] = defaultdict(list)
    skipped: list[Skipped] = []
    dicom_seen = 0
    for path in files:
        ds, problem = _read_header(path)
        if on_file is not None:
            on_file(path)
        if ds is None:
            if problem != "not DICOM":
                dicom_seen += 1
            skipped.append(Skipped(str(path.relative_to(root)), problem or "unreadable"))
            continue
        dicom_seen += 1
        sl, skip = _as_slice(path, ds, root)
        if skip is not None:
            skipped.append(skip)
        else:
            groups[sl.series_uid].append(sl)
    if dicom_seen == 0:
        raise InputError(f"{root}: no DICOM files found")
    if not groups:
        raise InputError(
            f"{root}: no image series among {dicom_seen} DICOM files (e.g. {skipped[0].what}: {skipped[0].reason})"
        )
    series = [Series(uid, sl) for uid, sl in groups.items()]
    reference = next(iter(groups.values()))[0]
    for s in series:
        other = next((x for x in s.slices if x.patient_key != reference.patient_key), None)
        if other is not None:
            raise InputError(
                f"{other.path}: belongs to a different patient than {reference.path} "
                f"(one study folder must hold one patient)"
            )
    series.sort(key=lambda s: (s.number if s.number is not None else 1 << 30, s.uid))
    return series, skipped


def _normal(iop: tuple[float, ...]) -> np.ndarray:
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    return np.cross(row, col)


def check_geometry(series: Series, root: Path) -> tuple[list[Slice], float]:
    """The slices sorted along their normal and the slice step (mm); InputError on a broken series.

    Broken: slices with different orientations, more than one slice at a position (several volumes
    in one series), or a gap larger than :data:`GAP_TOLERANCE` of the median step (missing slices).
    """
    where = series.slices[0].path.parent
    first = np.asarray(series.slices[0].orientation)
    for sl in series.slices:
        if np.abs(np.asarray(sl.orientation) - first).max() > ORIENTATION_TOL:
            raise InputError(f"{sl.path}: {series.label()} mixes slice orientations")
    if len(series.slices) < 2:
        raise InputError(f"{where}: {series.label()} has a single slice, not a volume")
    n = _normal(series.slices[0].orientation)
    ordered = sorted(series.slices, key=lambda s: float(np.dot(s.position, n)))
    pos = np.array([np.dot(s.position, n) for s in ordered])
    steps = np.diff(pos)
    step = float(np.median(steps))
    if step < 1e-3 or steps.min() < 1e-3:
        dup = ordered[int(np.argmin(steps)) + 1].path
        raise InputError(f"{dup}: {series.label()} holds several slices at one position (more than one volume)")
    if np.abs(steps - step).max() > GAP_TOLERANCE * step:
        k = int(np.argmax(np.abs(steps - step)))
        missing = max(int(round(steps[k] / step)) - 1, 1)
        raise InputError(
            f"{ordered[k].path}: {series.label()} has {missing} missing slice(s) after this file "
            f"(step {steps[k]:.2f} mm, expected {step:.2f} mm)"
        )
    offsets = np.array(ordered[-1].position) - np.array(ordered[0].position)
    if np.linalg.norm(np.cross(offsets / np.linalg.norm(offsets), n)) > 0.05:
        raise InputError(
            f"{where}: {series.label()} has slices that are not stacked along their normal "
            f"(gantry tilt is not supported)"
        )
    return ordered, step


def header_affine(ordered: list[Slice], step_mm: float) -> np.ndarray:
    """The (4, 4) RAS affine of voxel (column, row, slice) computed from the headers alone."""
    ds = ordered[0].header
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    iop = np.asarray(ordered[0].orientation)
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * col_mm
    lps[:3, 1] = iop[3:] * row_mm
    lps[:3, 2] = _normal(ordered[0].orientation) * step_mm
    lps[:3, 3] = ordered[0].position
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ lps


def read_volume(ordered: list[Slice], step_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(columns, rows, slices) float32 volume and RAS affine of sorted slices, read by SimpleITK.

    The rescale slope and intercept are applied by the reader. The affine is SimpleITK's; it must
    agree with :func:`header_affine` to 0.01 mm at the grid corners (else InputError).
    """
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(s.path) for s in ordered])
    img = reader.Execute()
    data = np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0)).astype(np.float32)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _LPS @ direction @ np.diag(img.GetSpacing())
    affine[:3, 3] = _LPS @ np.asarray(img.GetOrigin())
    expected = header_affine(ordered, step_mm)
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, data.shape[0] - 1) for j in (0, data.shape[1] - 1) for k in (0, data.shape[2] - 1)]
    ).T
    if np.abs((affine - expected) @ corners).max() > 0.01:
        raise InputError(f"{ordered[0].path.parent}: the series reader's geometry disagrees with the headers")
    return data, affine
