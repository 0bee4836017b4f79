"""Synthetic DICOM MR studies written from a phantom case folder (test and benchmark data).

A phantom case (:func:`gliofit.segmentation.phantoms.make_phantoms`) holds four skull-stripped NIfTI
images and their labels. :func:`write_dicom_study` turns it into what a scanner sends:

- one MR series per modality, each an oblique acquisition (slices tilted by ``tilt_deg`` about the
  scanner's left-right axis) with its own pixel size and slice spacing (FLAIR thicker);
- a skull-like shell around the brain and a smooth multiplicative bias field in scanner coordinates;
- a known patient motion between series: T1, T2 and FLAIR see the anatomy moved rigidly
  (:attr:`DicomStudy.motion`, RAS world mm) relative to the T1c, which sees it as the phantom does;
- a three-slice localiser series, realistic tags (patient, study, series and frame-of-reference
  UIDs, orientation, position, spacing, sequence tags, the contrast agent on the T1c), files named
  at random so their order on disk says nothing.

Geometry: series ``m`` samples the phantom at ``motion[m] @ x`` for scanner point ``x`` (RAS mm), so
``motion[m]`` maps the series' world onto the T1c's (= the phantom's) world.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from gliofit.common.grids import resample_linear, spacing_mm, voxel_to_world
from gliofit.common.nifti import load_volume
from gliofit.segmentation.brats_convert import MODALITIES, read_case_folder

__all__ = ["Acquisition", "DicomStudy", "ACQUISITIONS", "write_dicom_study", "rigid_ras", "write_series", "series_grid"]

_LPS = np.diag([-1.0, -1.0, 1.0])
SKULL_MM = (4.0, 9.0)
"""The skull-like shell lies this far outside the brain, mm."""
_SKULL_INTENSITY = {"t1": 1.1, "t1c": 1.1, "t2": 0.55, "flair": 0.7}  # times the brain's median


@dataclass(frozen=True)
class Acquisition:
    """How one series is acquired: header values and grid (mm, degrees)."""

    modality: str
    description: str
    scanning_sequence: str
    echo_ms: float
    repetition_ms: float
    pixel_mm: float
    slice_mm: float
    inversion_ms: float | None = None
    contrast: bool = False


ACQUISITIONS = (
    Acquisition("t1", "T1 SE AX pre", "SE", 12.0, 600.0, 1.0, 1.0),
    Acquisition("t1c", "T1 SE AX +C", "SE", 12.0, 600.0, 1.0, 1.0, contrast=True),
    Acquisition("t2", "T2 TSE AX", "SE", 100.0, 5000.0, 1.0, 1.0),
    Acquisition("flair", "FLAIR AX", "IR", 120.0, 9000.0, 1.0, 3.0, inversion_ms=2500.0),
)
"""The default four series (FLAIR 1 x 1 x 3 mm); :func:`write_dicom_study` scales the grid."""


@dataclass
class DicomStudy:
    """What :func:`write_dicom_study` wrote: folders, UIDs and the known geometry."""

    folder: Path
    series: dict[str, Path]
    series_uid: dict[str, str]
    motion: dict[str, np.ndarray]
    affines: dict[str, np.ndarray]
    brain: tuple[np.ndarray, np.ndarray]
    case_dir: Path
    extra: dict[str, Path] = field(default_factory=dict)


def rigid_ras(angles_deg, shift_mm, centre_mm) -> np.ndarray:
    """A (4, 4) rigid map in RAS mm: rotations about x, y, z (degrees) around ``centre_mm``, then a shift."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    r = rz @ ry @ rx
    c = np.asarray(centre_mm, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c - r @ c + np.asarray(shift_mm, dtype=np.float64)
    return m


def series_grid(
    centre_mm: np.ndarray, extent_mm: np.ndarray, pixel_mm: float, slice_mm: float, tilt_deg: float
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A (4, 4) RAS affine and shape (columns, rows, slices) of a grid tilted about x around ``centre_mm``.

    Columns run towards patient left, rows towards posterior, slices towards superior (then tilted),
    as an axial acquisition displayed in radiological convention.
    """
    rot = rigid_ras((tilt_deg, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))[:3, :3]
    axes = rot @ np.diag([-1.0, -1.0, 1.0])  # RAS directions of columns, rows, slices
    n = np.ceil(extent_mm / np.array([pixel_mm, pixel_mm, slice_mm])).astype(int)
    affine = np.eye(4)
    affine[:3, :3] = axes * np.array([pixel_mm, pixel_mm, slice_mm])
    affine[:3, 3] = centre_mm - affine[:3, :3] @ ((n - 1) / 2.0)
    return affine, tuple(int(v) for v in n)


def _uid(root: str, *parts) -> str:
    digest = int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:24], 16)
    return f"{root}.{digest}"


def _base_dataset(study: dict, acq_uid: str, number: int, description: str):
    from pydicom.dataset import Dataset

    ds = Dataset()
    for key, value in study.items():
        setattr(ds, key, value)
    ds.Modality = "MR"
    ds.SeriesInstanceUID = acq_uid
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.ProtocolName = description
    ds.Manufacturer = "gliofit phantom"
    ds.MagneticFieldStrength = 3.0
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    return ds


def write_series(
    folder: Path,
    volume: np.ndarray,
    affine: np.ndarray,
    study: dict,
    acq: Acquisition,
    number: int,
    rng: np.random.Generator,
    *,
    image_type=("ORIGINAL", "PRIMARY", "M", "NONE"),
) -> str:
    """Write one series, a file per slice, ``volume`` (columns, rows, slices) >= 0 on ``affine`` (RAS).

    Files get random names in ``folder``; returns the SeriesInstanceUID.
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    series_uid = _uid("1.2.826.0.1.3680043.10.1338.2", study["StudyInstanceUID"], number, acq.description)
    sp = spacing_mm(affine)
    lps = _LPS @ affine[:3, :3] / sp
    iop = [round(float(v), 8) for v in np.concatenate([lps[:, 0], lps[:, 1]])]
    pixels = np.clip(np.rint(volume), 0, 65535).astype(np.uint16)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(volume.shape[2]):
        ds = _base_dataset(study, series_uid, number, acq.description)
        sop = _uid("1.2.826.0.1.3680043.10.1338.3", series_uid, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
        ds.ImageType = list(image_type)
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.ScanningSequence = acq.scanning_sequence
        ds.SequenceVariant = "SK"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.EchoTime, ds.RepetitionTime = acq.echo_ms, acq.repetition_ms
        if acq.inversion_ms is not None:
            ds.InversionTime = acq.inversion_ms
        if acq.contrast:
            ds.ContrastBolusAgent = "Gadobutrol"
            ds.ContrastBolusRoute = "IV"
            ds.ContrastBolusVolume = 7.5
        ds.SliceThickness = float(sp[2])
        ds.SpacingBetweenSlices = float(sp[2])
        ds.PixelSpacing = [float(sp[1]), float(sp[0])]
        ds.ImageOrientationPatient = iop
        ipp = _LPS @ voxel_to_world(affine, np.array([0.0, 0.0, float(k)]))
        ds.ImagePositionPatient = [round(float(v), 6) for v in ipp]
        ds.SliceLocation = round(float(ipp @ np.cross(lps[:, 0], lps[:, 1])), 6)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[0])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(pixels[:, :, k].T).tobytes()
        name = f"IM{rng.integers(1 << 40):012x}.dcm"
        ds.save_as(folder / name, enforce_file_format=True)
    return series_uid


def _skull_and_bias(
    img: np.ndarray,
    affine: np.ndarray,
    brain: np.ndarray,
    modality: str,
    pad_vox: int,
    rng: np.random.Generator,
    bias_strength: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The image padded by ``pad_vox``, a skull-like shell added and a smooth bias field multiplied in."""
    img = np.pad(img, pad_vox)
    brain = np.pad(brain, pad_vox)
    sp = spacing_mm(affine)
    shifted = affine.copy()
    shifted[:3, 3] = voxel_to_world(affine, -np.full(3, float(pad_vox)))
    dist = ndimage.distance_transform_edt(~brain, sampling=sp)
    shell = (dist > SKULL_MM[0]) & (dist < SKULL_MM[1])
    median = float(np.median(img[brain])) if brain.any() else 1.0
    img = np.where(shell, _SKULL_INTENSITY[modality] * median, img)
    ijk = np.indices(img.shape, dtype=np.float32).reshape(3, -1).T
    xyz = voxel_to_world(shifted, ijk) / 80.0
    c = rng.normal(size=4)
    field = c[0] * xyz[:, 0] + c[1] * xyz[:, 1] + c[2] * xyz[:, 2] + c[3] * (xyz**2).sum(axis=1)
    field = field / max(float(np.abs(field).max()), 1e-6) * bias_strength
    img = img * np.exp(field).reshape(img.shape).astype(np.float32)
    return img.astype(np.float32), shifted


def write_dicom_study(
    case_dir: str | Path,
    out_dir: str | Path,
    *,
    seed: int = 0,
    tilt_deg: float = 15.0,
    pixel_scale: float = 1.0,
    motion_deg: float = 3.0,
    motion_mm: float = 4.0,
    bias_strength: float = 0.3,
    localiser: bool = True,
    patient_id: str = "PHANTOM-0001",
    patient_name: str = "Phantom^Patient",
) -> DicomStudy:
    """Write a phantom case as a DICOM study (one folder per series under ``out_dir``).

    Parameters
    ----------
    case_dir : a phantom case folder (four images, labels, truth.json).
    out_dir : the study folder (created; series in ``s<number>/``).
    seed : draws file names, bias fields and the motion directions.
    tilt_deg : oblique tilt of every series about the scanner x axis, degrees.
    pixel_scale : multiplies every pixel size and slice spacing of :data:`ACQUISITIONS`.
    motion_deg, motion_mm : the rigid motion of the anatomy in T1, T2 and FLAIR relative to T1c
        (a rotation of that many degrees about a random axis, a shift of that length).
    bias_strength : the bias field spans ``exp(±bias_strength)``.
    localiser : also write a three-slice localiser series.
    patient_id, patient_name : header values (the importer must never write them out).
    """
    rng = np.random.default_rng(seed)
    case = read_case_folder(case_dir)
    out = Path(out_dir)
    first, affine = load_volume(case.images[0], "T1")
    brain = first > 0
    pad_vox = int(np.ceil(SKULL_MM[1] / min(spacing_mm(affine)))) + 2
    idx = np.argwhere(brain)
    centre = voxel_to_world(affine, (idx.min(axis=0) + idx.max(axis=0)) / 2.0)
    extent = (idx.max(axis=0) - idx.min(axis=0) + 1) * spacing_mm(affine) + 2 * SKULL_MM[1] + 6.0
    extent = np.array([extent.max(), extent.max(), extent[2] + 20.0])
    study = {
        "PatientName": patient_name,
        "PatientID": patient_id,
        "PatientBirthDate": "19700101",
        "PatientSex": "O",
        "StudyInstanceUID": _uid("1.2.826.0.1.3680043.10.1338.1", patient_id, seed),
        "StudyDate": "20240102",
        "StudyTime": "101500",
        "StudyID": "1",
        "AccessionNumber": "A0001",
        "ReferringPhysicianName": "",
        "FrameOfReferenceUID": _uid("1.2.826.0.1.3680043.10.1338.4", seed),
    }
    written = DicomStudy(out, {}, {}, {}, {}, (brain, affine), Path(case_dir))
    for number, acq in enumerate(ACQUISITIONS, start=2):
        img, _ = load_volume(case.images[MODALITIES.index(acq.modality)], acq.modality)
        padded, padded_affine = _skull_and_bias(img, affine, brain, acq.modality, pad_vox, rng, bias_strength)
        axis = rng.normal(size=3)
        shift = rng.normal(size=3)
        motion = (
            np.eye(4)
            if acq.modality == "t1c"
            else rigid_ras(motion_deg * axis / np.linalg.norm(axis), motion_mm * shift / np.linalg.norm(shift), centre)
        )
        grid, shape = series_grid(centre, extent, acq.pixel_mm * pixel_scale, acq.slice_mm * pixel_scale, tilt_deg)
        vol = resample_linear(padded, padded_affine, motion @ grid, shape)
        folder = out / f"s{number:02d}"
        written.series_uid[acq.modality] = write_series(folder, vol, grid, study, acq, number, rng)
        written.series[acq.modality], written.motion[acq.modality], written.affines[acq.modality] = folder, motion, grid
    if localiser:
        loc = Acquisition("t1", "localizer", "GR", 3.0, 8.0, 4.0 * pixel_scale, 40.0)
        grid, shape = series_grid(centre, np.array([extent[0], extent[1], 100.0]), loc.pixel_mm, loc.slice_mm, 0.0)
        vol = resample_linear(np.pad(first, pad_vox), padded_affine, grid, shape)
        folder = out / "s01"
        write_series(folder, vol, grid, study, loc, 1, rng, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
        written.extra["localiser"] = folder
    return written
