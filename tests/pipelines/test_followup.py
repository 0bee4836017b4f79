"""A second time point in a patient folder: ``followup/`` + ``timepoints.json`` read, checked and run."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pipelinehelpers import GLIOFIT
from scipy import ndimage

from gliofit.common.errors import InputError
from gliofit.pipelines.patient import find_followup, read_timepoints


def _tp(tmp_path: Path, content) -> Path:
    p = tmp_path / "timepoints.json"
    p.write_text(content if isinstance(content, str) else json.dumps(content))
    return p


def test_timepoints_from_days_or_dates(tmp_path):
    assert read_timepoints(_tp(tmp_path, {"days_between": 42})) == 42
    assert read_timepoints(_tp(tmp_path, {"earlier_date": "2024-01-10", "later_date": "2024-03-01"})) == 51
    assert (
        read_timepoints(_tp(tmp_path, {"days_between": 51, "earlier_date": "2024-01-10", "later_date": "2024-03-01"}))
        == 51
    )


@pytest.mark.parametrize(
    "content, needle",
    [
        ({"days_between": 0}, "after the earlier"),
        ({"days_between": -4}, "after the earlier"),
        ({"earlier_date": "2024-03-01", "later_date": "2024-01-10"}, "after the earlier"),
        ({"earlier_date": "2024-13-01", "later_date": "2024-01-10"}, "not a date"),
        ({"days_between": 10, "earlier_date": "2024-01-10", "later_date": "2024-03-01"}, "disagrees"),
        ({"days": 10}, "days_between"),
        ("{not json", "not valid JSON"),
        ({"days_between": "soon"}, "a number"),
    ],
)
def test_bad_timepoints_one_line_naming_the_file(tmp_path, content, needle):
    with pytest.raises(InputError, match=needle) as err:
        read_timepoints(_tp(tmp_path, content))
    assert "timepoints.json" in str(err.value) and "\n" not in str(err.value)


def _with_followup(src: Path, dst: Path, days: float | None = 45.0, grow_voxels: int = 1) -> Path:
    """A copy of a phantom folder whose followup/ holds the same MRI and the tumour grown by a few voxels."""
    folder = dst / src.name
    shutil.copytree(src, folder)
    sub = folder / "followup"
    sub.mkdir()
    for f in src.glob(f"{src.name}-*.nii*"):
        shutil.copy(f, sub / f.name)
    seg_file = next(sub.glob("*-seg.nii*"))
    img = nib.load(seg_file)
    lab = np.asarray(img.dataobj).astype(np.uint8)
    grown = ndimage.binary_dilation(lab > 0, iterations=grow_voxels) & (lab == 0)
    lab[grown] = 2
    nib.save(nib.Nifti1Image(lab, img.affine), seg_file)
    if days is not None:
        (folder / "timepoints.json").write_text(json.dumps({"days_between": days}))
    return folder


def test_find_followup_and_its_errors(tmp_path, phantom_cohort):
    folder = _with_followup(phantom_cohort[0], tmp_path / "a")
    f = find_followup(folder)
    assert f.days_between == 45 and f.case.seg is not None and f.case.images[0].parent.name == "followup"
    assert find_followup(phantom_cohort[0]) is None
    no_tp = _with_followup(phantom_cohort[0], tmp_path / "b", days=None)
    with pytest.raises(InputError, match="timepoints.json: missing"):
        find_followup(no_tp)
    lone = tmp_path / "c" / phantom_cohort[0].name
    shutil.copytree(phantom_cohort[0], lone)
    (lone / "timepoints.json").write_text('{"days_between": 3}')
    with pytest.raises(InputError, match="no followup/ folder"):
        find_followup(lone)


@pytest.mark.slow
def test_run_with_a_followup_fits_both_scans(tmp_path, phantom_cohort, pipeline_db):
    folder = _with_followup(phantom_cohort[0], tmp_path / "in")
    out = tmp_path / "OUT"
    p = subprocess.run(
        [GLIOFIT, "run", str(folder), "--db", str(pipeline_db), "-o", str(out), "--registration", "none"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    res = json.loads((out / "result.json").read_text())
    assert [t["scan"] for t in res["timepoints"]] == ["earlier", "later"] and res["days_between"] == 45
    assert res["parameters"]["T_days"] == pytest.approx(res["timepoints"][1]["T_days"])
    assert (out / "segmentation_followup.nii.gz").is_file() and (out / "tumor_density.nii.gz").is_file()


def test_run_with_a_negative_interval_exit_2(tmp_path, phantom_cohort, pipeline_db):
    folder = _with_followup(phantom_cohort[0], tmp_path / "in", days=-3)
    out = tmp_path / "OUT"
    p = subprocess.run(
        [GLIOFIT, "run", str(folder), "--db", str(pipeline_db), "-o", str(out), "--registration", "none"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "timepoints.json" in p.stderr
    assert not out.exists()
