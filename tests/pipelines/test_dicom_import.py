"""``gliofit import-dicom``: modalities from headers, geometry kept, bad studies refused in one line."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomhelpers import PATIENT_ID, PATIENT_NAME, copy_study, gliofit, series_files

from gliofit.common.errors import InputError
from gliofit.common.grids import voxel_to_world
from gliofit.pipelines.dicom_import import import_dicom, source_series
from gliofit.pipelines.dicom_rules import classify

SUFFIX = {"t1": "t1n", "t1c": "t1c", "t2": "t2w", "flair": "t2f"}


@pytest.fixture(scope="module")
def imported(tmp_path_factory, dicom_study):
    out = tmp_path_factory.mktemp("imp") / "P001"
    proc = gliofit("import-dicom", dicom_study.folder, "-o", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def _assert_refused(proc, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gliofit: error:"), proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_import_names_modalities_and_skips_the_localiser(imported, dicom_study) -> None:
    out, proc = imported
    rec = json.loads((out / "import.json").read_text())
    assert {m: r["series_instance_uid"] for m, r in rec["series"].items()} == dicom_study.series_uid
    assert "contrast-agent" in rec["series"]["t1c"]["rule"]
    assert [s["reason"] for s in rec["skipped_series"]] == ["localiser"]
    summary = json.loads(proc.stdout)
    assert set(summary["series"]) == {"t1", "t1c", "t2", "flair"}
    for m in ("t1", "t1c", "t2", "flair"):
        assert (out / f"P001-{SUFFIX[m]}.nii.gz").is_file()


def test_import_keeps_world_coordinates_and_voxels(imported, dicom_study) -> None:
    """Every voxel of every NIfTI lies where the DICOM headers put it (to 0.01 mm), with its pixel value."""
    out, _ = imported
    for m, grid in dicom_study.affines.items():
        img = nib.load(out / f"P001-{SUFFIX[m]}.nii.gz")
        corners = np.array(
            [[i, j, k] for i in (0, img.shape[0] - 1) for j in (0, img.shape[1] - 1) for k in (0, img.shape[2] - 1)],
            dtype=float,
        )
        assert np.abs(voxel_to_world(img.affine, corners) - voxel_to_world(grid, corners)).max() < 0.01, m
        files = series_files(dicom_study.series[m])
        k = len(files) // 2
        ds = pydicom.dcmread(files[k])
        data = np.asarray(img.dataobj)
        assert np.array_equal(data[:, :, k].T, ds.pixel_array.astype(data.dtype)), m
    flair = nib.load(out / "P001-t2f.nii.gz")
    assert nib.affines.voxel_sizes(flair.affine)[2] == pytest.approx(6.0)


def test_no_patient_identifiers_are_written(imported) -> None:
    out, proc = imported
    text = proc.stdout + proc.stderr + "".join(p.read_text() for p in out.glob("*.json"))
    names = " ".join(p.name for p in out.iterdir())
    for ident in (PATIENT_ID, PATIENT_NAME, "Phantom", "19700101"):
        assert ident not in text and ident not in names


def test_source_series_finds_the_t1c_files(imported, dicom_study) -> None:
    out, _ = imported
    files = source_series(out, "t1c")
    assert sorted(files) == sorted(dicom_study.series["t1c"].glob("*.dcm"))


def test_rule_table_on_common_descriptions() -> None:
    def ds(desc, agent="", seq="SE", te=10.0, tr=500.0, ti=None):
        d = pydicom.Dataset()
        d.SeriesDescription, d.ScanningSequence, d.EchoTime, d.RepetitionTime = desc, seq, te, tr
        if agent:
            d.ContrastBolusAgent = agent
        if ti is not None:
            d.InversionTime = ti
        return d

    assert classify(ds("t1_mprage_sag_p2_iso"))[0] == "t1"
    assert classify(ds("t1_mprage_sag_p2_iso", agent="Gadovist"))[0] == "t1c"
    assert classify(ds("T1 AX POST GD"))[0] == "t1c"
    assert classify(ds("T1 AX PRE", agent="Gadovist"))[0] == "t1"
    assert classify(ds("t2_tse_tra", te=100.0, tr=5000.0))[0] == "t2"
    assert classify(ds("t2_tirm_tra_dark-fluid", seq="IR", te=90.0, tr=9000.0, ti=2500.0))[0] == "flair"
    assert classify(ds("AX 3", seq="IR", te=120.0, tr=9000.0, ti=2500.0))[0] == "flair"
    assert classify(ds("DWI b1000", te=90.0, tr=800.0))[0] is None


def _edit(files, **tags) -> None:
    for f in files:
        d = pydicom.dcmread(f)
        for k, v in tags.items():
            setattr(d, k, v)
        d.save_as(f)


def test_duplicate_series_is_skipped_and_a_second_flair_is_ambiguous(tmp_path, dicom_study) -> None:
    study = copy_study(dicom_study, tmp_path / "S")
    dup = tmp_path / "S" / "s09"
    shutil.copytree(study / "s05", dup)
    uid = generate_uid()
    _edit(sorted(dup.glob("*.dcm")), SeriesInstanceUID=uid, SeriesNumber=9)
    for f in sorted(dup.glob("*.dcm")):
        d = pydicom.dcmread(f)
        d.SOPInstanceUID = generate_uid()
        d.save_as(f)
    rec = import_dicom(study, tmp_path / "A", progress=False)
    assert any("duplicate of series 5" in s["reason"] for s in rec["skipped_series"])
    for f in sorted(dup.glob("*.dcm")):  # now a different FLAIR: ambiguous
        d = pydicom.dcmread(f)
        d.PixelData = (d.pixel_array // 2).astype(np.uint16).tobytes()
        d.SeriesDescription = "FLAIR AX repeat"
        d.save_as(f)
    _assert_refused(
        gliofit("import-dicom", study, "-o", tmp_path / "B", "--no-progress"),
        "2 candidate FLAIR series",
        "series 5 'FLAIR AX'",
        "series 9 'FLAIR AX repeat'",
        "--series",
    )
    assert not (tmp_path / "B").exists()
    (tmp_path / "map.json").write_text(json.dumps({"flair": 9}))
    rec = import_dicom(study, tmp_path / "C", series_map=tmp_path / "map.json", progress=False)
    assert rec["series"]["flair"]["series_number"] == 9 and rec["series"]["flair"]["rule"] == "--series map"


def test_corrupt_and_non_image_files_are_skipped_and_listed(tmp_path, dicom_study) -> None:
    study = copy_study(dicom_study, tmp_path / "S")
    good = series_files(study / "s03")[3]
    (study / "s03" / "IMtruncated.dcm").write_bytes(good.read_bytes()[:-5000])
    (study / "junk.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 10)
    (study / "notes.txt").write_text("not dicom")
    sr = pydicom.dcmread(good)
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sr.SeriesInstanceUID = generate_uid()
    del sr.PixelData
    sr.save_as(study / "report.dcm")
    proc = gliofit("import-dicom", study, "-o", tmp_path / "P", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    rec = json.loads((tmp_path / "P" / "import.json").read_text())
    reasons = {s["file"]: s["reason"] for s in rec["skipped_files"]}
    assert "truncated" in reasons["s03/IMtruncated.dcm"]
    assert reasons["junk.dcm"].startswith("corrupt DICOM")
    assert reasons["notes.txt"] == "not DICOM"
    assert "not a single-frame image" in reasons["report.dcm"]
    assert "skipped file s03/IMtruncated.dcm" in proc.stderr


def test_bad_studies_exit_2_in_one_line_and_write_nothing(tmp_path, dicom_study) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    _assert_refused(gliofit("import-dicom", empty, "-o", tmp_path / "o1", "--no-progress"), "no DICOM files")

    gap = copy_study(dicom_study, tmp_path / "gap")
    files = series_files(gap / "s03")
    files[len(files) // 2].unlink()
    _assert_refused(
        gliofit("import-dicom", gap, "-o", tmp_path / "o2", "--no-progress"), "missing slice", "T1 SE AX +C"
    )

    mixed = copy_study(dicom_study, tmp_path / "mixed")
    f = series_files(mixed / "s05")[2]
    _edit([f], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    _assert_refused(
        gliofit("import-dicom", mixed, "-o", tmp_path / "o3", "--no-progress"), "mixes slice orientations", f.name
    )

    other = copy_study(dicom_study, tmp_path / "other")
    f = series_files(other / "s04")[1]
    _edit([f], PatientID="SOMEONE-ELSE")
    proc = gliofit("import-dicom", other, "-o", tmp_path / "o4", "--no-progress")
    _assert_refused(proc, "different patient", f.name)
    assert "SOMEONE-ELSE" not in proc.stderr and PATIENT_ID not in proc.stderr

    only_rt = tmp_path / "rt"
    only_rt.mkdir()
    d = pydicom.dcmread(series_files(dicom_study.series["t1"])[0])
    d.SOPClassUID = d.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    del d.PixelData
    d.save_as(only_rt / "rt.dcm")
    _assert_refused(gliofit("import-dicom", only_rt, "-o", tmp_path / "o5", "--no-progress"), "no image series")

    no_flair = copy_study(dicom_study, tmp_path / "noflair")
    shutil.rmtree(no_flair / "s05")
    _assert_refused(gliofit("import-dicom", no_flair, "-o", tmp_path / "o6", "--no-progress"), "no FLAIR series")
    for i in range(1, 7):
        assert not (tmp_path / f"o{i}").exists()
    assert not list(tmp_path.glob(".o*"))


def test_a_bad_series_map_is_refused(tmp_path, dicom_study) -> None:
    (tmp_path / "m.json").write_text(json.dumps({"pd": 3}))
    with pytest.raises(InputError, match="unknown modality 'pd'"):
        import_dicom(dicom_study.folder, tmp_path / "P", series_map=tmp_path / "m.json", progress=False)
    (tmp_path / "m.json").write_text(json.dumps({"flair": 42}))
    with pytest.raises(InputError, match="matches 0 series"):
        import_dicom(dicom_study.folder, tmp_path / "P", series_map=tmp_path / "m.json", progress=False)
