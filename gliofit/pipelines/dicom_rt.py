"""Target volumes back to the planning system: one DICOM RTSTRUCT and one DICOM SEG on the original T1c series.

The RTSTRUCT is written with pydicom directly, the SEG with highdicom (docs/clinical.md says why):

- every structure is first sampled onto the reference series' own grid (its oblique slices, its
  pixel size): masks linearly and kept where >= 0.5, iso-density structures by sampling the density
  linearly and keeping it where >= the level;
- each slice's mask is traced at the 0.5 level between pixel centres (scikit-image marching squares),
  one CLOSED_PLANAR contour per boundary, points in patient coordinates (LPS mm), each contour linked
  to its slice's SOP instance. A hole is a separate contour inside its outer one (the even-odd
  reading planning systems use), and :func:`read_rtstruct` fills contours the same way;
- patient and study tags are copied from the reference (never printed), the frame of reference and
  every slice are referenced, new series and instance UIDs are made.

Structures (:func:`plan_structures`): ``Target standard`` and ``Target model`` (CTV), ``Whole tumour``,
``Tumour core``, ``Enhancing``, ``Necrosis`` (GTV), ``Edema`` and ``Density 1% / 10% / 30%`` (CONTROL).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gliofit._version import __version__
from gliofit.common.errors import InputError
from gliofit.common.grids import resample_linear
from gliofit.common.io import atomic_write

__all__ = [
    "Reference",
    "Structure",
    "load_reference",
    "plan_structures",
    "write_rtstruct",
    "read_rtstruct",
    "write_seg",
    "read_seg",
    "on_reference",
    "ISO_DENSITY_LEVELS",
    "RTSTRUCT_NAME",
    "SEG_NAME",
    "export_plan",
]

ISO_DENSITY_LEVELS = (0.01, 0.10, 0.30)
"""Iso-density contours, fraction of carrying capacity."""
RTSTRUCT_NAME, SEG_NAME = "rtstruct.dcm", "seg.dcm"
_RTSTRUCT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
_STUDY_COMPONENT_CLASS = "1.2.840.10008.3.1.2.3.1"
_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
_COLOURS = [
    (255, 0, 0),
    (0, 128, 255),
    (255, 255, 0),
    (255, 128, 0),
    (255, 0, 255),
    (128, 64, 0),
    (0, 255, 0),
    (0, 255, 255),
    (128, 128, 255),
    (255, 128, 128),
    (128, 255, 128),
]


@dataclass
class Reference:
    """The reference image series: headers sorted along the slice normal and its grid.

    ``affine`` maps voxel (column, row, slice) to RAS mm; ``shape`` is (columns, rows, slices).
    """

    datasets: list
    affine: np.ndarray
    shape: tuple[int, int, int]

    @property
    def header(self):
        return self.datasets[0]


@dataclass
class Structure:
    """One structure: a volume on ``affine`` kept where it is >= ``level`` after linear sampling."""

    name: str
    volume: np.ndarray
    affine: np.ndarray
    level: float = 0.5
    kind: str = "CONTROL"


def load_reference(source: str | Path | list) -> Reference:
    """The single image series in a folder (or a list of its files), checked and sorted."""
    from gliofit.pipelines.dicom_series import Series, check_geometry, header_affine, read_image_slices

    files = sorted(p for p in Path(source).rglob("*") if p.is_file()) if not isinstance(source, list) else source
    if not files:
        raise InputError(f"{source}: no files in the reference series folder")
    slices = read_image_slices([Path(f) for f in files])
    uids = {s.series_uid for s in slices}
    where = source if not isinstance(source, list) else Path(files[0]).parent
    if not slices:
        raise InputError(f"{where}: no DICOM image files in the reference series")
    if len(uids) > 1:
        raise InputError(f"{where}: holds {len(uids)} image series; --dicom-ref must name one series folder")
    ordered, step = check_geometry(Series(uids.pop(), slices), Path(where))
    affine = header_affine(ordered, step)
    h = ordered[0].header
    return Reference([s.header for s in ordered], affine, (int(h.Columns), int(h.Rows), len(ordered)))


def on_reference(structure: Structure, ref: Reference) -> np.ndarray:
    """Bool (columns, rows, slices): the structure sampled on the reference grid."""
    v = resample_linear(np.asarray(structure.volume, dtype=np.float32), structure.affine, ref.affine, ref.shape)
    return v >= structure.level - 1e-6


def _contours(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed polygons (N, 2) in (column, row) pixel coordinates around a 2-D (columns, rows) mask."""
    from skimage import measure

    if not mask2d.any():
        return []
    padded = np.pad(mask2d.astype(np.float32), 1)
    out = []
    for c in measure.find_contours(padded, 0.5):
        c = c[:-1] - 1.0 if np.allclose(c[0], c[-1]) else c - 1.0
        if len(c) >= 3:
            out.append(c)
    return out


def _now() -> tuple[str, str]:
    t = datetime.datetime.now()
    return t.strftime("%Y%m%d"), t.strftime("%H%M%S")


def _copy_patient_and_study(ds, ref) -> None:
    for key in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "StudyID",
        "AccessionNumber",
    ):
        setattr(ds, key, getattr(ref, key, "") or "")


def _contour_item(points_cr: np.ndarray, k: int, ref: Reference, number: int):
    from pydicom.dataset import Dataset

    n = len(points_cr)
    vox = np.c_[points_cr, np.full(n, float(k)), np.ones(n)]
    lps = (_FLIP @ ref.affine @ vox.T)[:3].T
    item = Dataset()
    img = Dataset()
    img.ReferencedSOPClassUID = ref.datasets[k].SOPClassUID
    img.ReferencedSOPInstanceUID = ref.datasets[k].SOPInstanceUID
    item.ContourImageSequence = [img]
    item.ContourGeometricType = "CLOSED_PLANAR"
    item.NumberOfContourPoints = n
    item.ContourNumber = number
    item.ContourData = [f"{v:.3f}" for v in lps.ravel()]
    return item


def write_rtstruct(structures: list[Structure], ref: Reference, path: str | Path, *, label: str = "gliofit") -> Path:
    """Write one RTSTRUCT of ``structures`` referencing the series ``ref``; returns the path."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    h = ref.header
    date, time_ = _now()
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _RTSTRUCT_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = _RTSTRUCT_CLASS, meta.MediaStorageSOPInstanceUID
    _copy_patient_and_study(ds, h)
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 9901
    ds.SeriesDescription = "gliofit target volumes"
    ds.Manufacturer = "gliofit"
    ds.SoftwareVersions = __version__
    ds.InstanceNumber = 1
    ds.StructureSetLabel = label
    ds.StructureSetName = "gliofit"
    ds.StructureSetDate, ds.StructureSetTime = date, time_
    ds.SeriesDate, ds.SeriesTime = date, time_
    ds.OperatorsName = ""
    for_uid = h.FrameOfReferenceUID
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = getattr(h, "PositionReferenceIndicator", "") or ""
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = h.SeriesInstanceUID
    series_ref.ContourImageSequence = []
    for d in ref.datasets:
        img = Dataset()
        img.ReferencedSOPClassUID, img.ReferencedSOPInstanceUID = d.SOPClassUID, d.SOPInstanceUID
        series_ref.ContourImageSequence.append(img)
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = _STUDY_COMPONENT_CLASS
    study_ref.ReferencedSOPInstanceUID = h.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = [series_ref]
    frame = Dataset()
    frame.FrameOfReferenceUID = for_uid
    frame.RTReferencedStudySequence = [study_ref]
    ds.ReferencedFrameOfReferenceSequence = [frame]
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = [], [], []
    for number, s in enumerate(structures, start=1):
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = number, for_uid, s.name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        ds.StructureSetROISequence.append(roi)
        mask = on_reference(s, ref)
        contours = []
        for k in range(ref.shape[2]):
            for c in _contours(mask[:, :, k]):
                contours.append(_contour_item(c, k, ref, len(contours) + 1))
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ROIDisplayColor = list(_COLOURS[(number - 1) % len(_COLOURS)])
        if contours:
            rc.ContourSequence = contours
        ds.ROIContourSequence.append(rc)
        obs = Dataset()
        obs.ObservationNumber, obs.ReferencedROINumber = number, number
        obs.RTROIInterpretedType, obs.ROIInterpreter = s.kind, ""
        ds.RTROIObservationsSequence.append(obs)
    ds.ApprovalStatus = "UNAPPROVED"
    p = Path(path)
    with atomic_write(p) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return p


def read_rtstruct(path: str | Path, ref: Reference) -> dict[str, np.ndarray]:
    """{ROI name: bool (columns, rows, slices) mask on ``ref``}: contours filled even-odd per slice."""
    import pydicom
    from skimage.draw import polygon2mask

    ds = pydicom.dcmread(path)
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    inv = np.linalg.inv(ref.affine) @ _FLIP
    out = {}
    for rc in ds.ROIContourSequence:
        mask = np.zeros(ref.shape, bool)
        for c in getattr(rc, "ContourSequence", []):
            pts = np.asarray(c.ContourData, dtype=np.float64).reshape(-1, 3)
            vox = (inv @ np.c_[pts, np.ones(len(pts))].T)[:3].T
            k = int(round(float(vox[:, 2].mean())))
            if np.abs(vox[:, 2] - k).max() > 1e-2 or not 0 <= k < ref.shape[2]:
                raise InputError(
                    f"{path}: a contour of {names[int(rc.ReferencedROINumber)]} is off the reference slices"
                )
            mask[:, :, k] ^= polygon2mask(ref.shape[:2], vox[:, :2])
        out[names[int(rc.ReferencedROINumber)]] = mask
    return out


_SEG_CODES = {"Necrosis": "Necrosis", "Edema": "Edema", "Enhancing": "Neoplasm"}


def write_seg(regions: dict[str, Structure], ref_files: list[Path], ref: Reference, path: str | Path) -> Path:
    """A binary DICOM SEG (highdicom) of the tumour regions on the reference series; returns the path."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    sources = {str(d.SOPInstanceUID): None for d in ref.datasets}
    for f in ref_files:
        d = pydicom.dcmread(f)
        if str(d.SOPInstanceUID) in sources:
            sources[str(d.SOPInstanceUID)] = d
    images = [sources[str(d.SOPInstanceUID)] for d in ref.datasets]
    algo = hd.AlgorithmIdentificationSequence(
        name="gliofit", version=__version__, family=codes.DCM.ArtificialIntelligence
    )
    descriptions, planes = [], []
    for i, (name, s) in enumerate(regions.items(), start=1):
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=i,
                segment_label=name,
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=getattr(codes.SCT, _SEG_CODES.get(name, "Neoplasm")),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algo,
            )
        )
        planes.append(np.transpose(on_reference(s, ref), (2, 1, 0)))  # (slices, rows, columns)
    pixels = np.stack(planes, axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=9902,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="gliofit",
        manufacturer_model_name="gliofit",
        software_versions=__version__,
        device_serial_number="none",
        series_description="gliofit tumour regions",
        omit_empty_frames=False,
    )
    p = Path(path)
    with atomic_write(p) as tmp:
        seg.save_as(tmp)
    return p


def read_seg(path: str | Path, ref: Reference) -> dict[str, np.ndarray]:
    """{segment label: bool (columns, rows, slices) mask on ``ref``} from a DICOM SEG."""
    import highdicom as hd

    seg = hd.seg.segread(str(path))
    uids = [str(d.SOPInstanceUID) for d in ref.datasets]
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    arr = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=sorted(labels))
    return {labels[n]: np.transpose(arr[..., i] > 0, (2, 1, 0)) for i, n in enumerate(sorted(labels))}


def plan_structures(
    density: np.ndarray, labels: np.ndarray, affine: np.ndarray, standard: np.ndarray, model: np.ndarray, convention
) -> tuple[list[Structure], dict[str, Structure]]:
    """The RTSTRUCT structures and the SEG regions of one plan (all on ``affine``; a LabelConvention)."""
    lab = np.rint(labels).astype(np.int64)
    regions = {
        "Necrosis": lab == convention.necrosis,
        "Edema": lab == convention.edema,
        "Enhancing": lab == convention.enhancing,
    }
    f = lambda m: m.astype(np.float32)  # noqa: E731
    structures = [
        Structure("Target standard", f(standard), affine, kind="CTV"),
        Structure("Target model", f(model), affine, kind="CTV"),
        Structure("Whole tumour", f(lab > 0), affine, kind="GTV"),
        Structure("Tumour core", f(regions["Necrosis"] | regions["Enhancing"]), affine, kind="GTV"),
        Structure("Enhancing", f(regions["Enhancing"]), affine, kind="GTV"),
        Structure("Necrosis", f(regions["Necrosis"]), affine, kind="GTV"),
        Structure("Edema", f(regions["Edema"]), affine, kind="CONTROL"),
    ]
    structures += [
        Structure(f"Density {round(100 * lv)}%", density.astype(np.float32), affine, level=lv)
        for lv in ISO_DENSITY_LEVELS
    ]
    return structures, {k: Structure(k, f(v), affine) for k, v in regions.items()}


def export_plan(
    folder: str | Path,
    reference: str | Path | list,
    *,
    density: str | Path,
    seg: str | Path,
    standard: str | Path,
    model: str | Path,
    labels: str = "auto",
) -> dict[str, Path]:
    """Write ``rtstruct.dcm`` and ``seg.dcm`` into ``folder`` for a plan's NIfTI files (all on one grid).

    ``reference`` is the T1c series (a folder or its files); ``labels``: auto, brats2021 or brats2023.
    """
    from gliofit.common.grids import check_same_grid
    from gliofit.common.labels import CONVENTIONS, detect_convention
    from gliofit.common.nifti import load_volume

    ref = load_reference(reference)
    ref_files = reference if isinstance(reference, list) else [p for p in Path(reference).rglob("*") if p.is_file()]
    dens, affine = load_volume(density, "tumour density")
    lab, lab_aff = load_volume(seg, "segmentation")
    std, std_aff = load_volume(standard, "standard target")
    mod, mod_aff = load_volume(model, "model target")
    for path, data, aff in ((seg, lab, lab_aff), (standard, std, std_aff), (model, mod, mod_aff)):
        check_same_grid(path, data.shape, aff, dens.shape, affine, ref=str(density))
    conv = detect_convention(np.rint(lab), str(seg)) if labels == "auto" else CONVENTIONS[labels]
    structures, regions = plan_structures(dens, lab, affine, std > 0, mod > 0, conv)
    f = Path(folder)
    return {
        "rtstruct": write_rtstruct(structures, ref, f / RTSTRUCT_NAME),
        "seg": write_seg(regions, [Path(p) for p in ref_files], ref, f / SEG_NAME),
    }
