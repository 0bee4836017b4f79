"""Dice and HD95 against hand-computed values on boxes, slabs and spheres; the evaluate command."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gliofit.cli import app
from gliofit.common.nifti import save_volume
from gliofit.segmentation.metrics import evaluate_folders, region_metrics


def test_dice_of_overlapping_boxes():
    a = np.zeros((20, 20, 20), np.uint8)
    b = np.zeros_like(a)
    a[2:12, 2:12, 2:12] = 2  # 1000 voxels edema (WT only)
    b[4:14, 2:12, 2:12] = 2  # shifted by 2: overlap 8*10*10 = 800
    m = region_metrics(b, a, (1, 1, 1))
    assert m["WT_dice"] == pytest.approx(2 * 800 / 2000)
    assert m["TC_dice"] == 1.0 and m["TC_hd95"] == 0.0  # both empty
    assert m["ET_dice"] == 1.0 and m["ET_hd95"] == 0.0


def test_regions_from_both_conventions():
    gt = np.zeros((16, 16, 16), np.uint8)
    gt[2:10, 2:10, 2:10] = 2
    gt[4:8, 4:8, 4:8] = 3  # 64 ET
    gt[5:7, 5:7, 5:7] = 1  # 8 NETC inside: ET = 56, TC = 64
    pred21 = np.zeros_like(gt)
    pred21[2:10, 2:10, 2:10] = 2
    pred21[4:8, 4:8, 4:8] = 4  # 2021 ET on the whole core (64)
    m = region_metrics(pred21, gt, (1, 1, 1))
    assert m["WT_dice"] == 1.0 and m["TC_dice"] == 1.0
    assert m["ET_dice"] == pytest.approx(2 * 56 / (64 + 56))


def test_hd95_of_parallel_slabs_with_anisotropic_spacing():
    """Two one-voxel slabs 3 voxels apart along x at 1.5 mm: every surface distance is 4.5 mm."""
    a = np.zeros((12, 10, 10), np.uint8)
    b = np.zeros_like(a)
    a[3] = 2
    b[6] = 2
    m = region_metrics(b, a, (1.5, 0.7, 2.0))
    assert m["WT_dice"] == 0.0
    assert m["WT_hd95"] == pytest.approx(4.5, abs=1e-4)


def test_hd95_of_single_voxels_and_empty_conventions():
    a = np.zeros((240, 240, 155), np.uint8)
    b = np.zeros_like(a)
    a[10, 10, 10] = 3
    b[13, 14, 10] = 3  # 3-4-5 triangle, spacing 2 mm -> 10 mm
    m = region_metrics(b, a, (2.0, 2.0, 2.0))
    assert m["ET_hd95"] == pytest.approx(10.0, abs=1e-4)
    empty = np.zeros_like(a)
    m = region_metrics(empty, a, (1, 1, 1))
    assert m["ET_dice"] == 0.0 and m["ET_hd95"] == pytest.approx(373.13, abs=0.01)  # BraTS's value


def test_sphere_dice_matches_voxel_counts():
    x, y, z = np.mgrid[:40, :40, :40]
    r1 = np.sqrt((x - 20) ** 2 + (y - 20) ** 2 + (z - 20) ** 2)
    r2 = np.sqrt((x - 23) ** 2 + (y - 20) ** 2 + (z - 20) ** 2)
    a, b = (r1 <= 10).astype(np.uint8) * 2, (r2 <= 8).astype(np.uint8) * 2
    inter = int(((a > 0) & (b > 0)).sum())
    m = region_metrics(b, a, (1, 1, 1))
    assert m["WT_dice"] == pytest.approx(2 * inter / ((a > 0).sum() + (b > 0).sum()), rel=1e-6)
    # concentric spheres of radius 10 and 8: symmetric surface distances are about 2 mm (voxelised)
    c = (np.sqrt((x - 20) ** 2 + (y - 20) ** 2 + (z - 20) ** 2) <= 8).astype(np.uint8) * 2
    assert 1.0 <= region_metrics(c, a, (1, 1, 1))["WT_hd95"] <= 3.0


def _write_pair(root: Path, affine=np.eye(4)):
    gt = np.zeros((12, 12, 12), np.uint8)
    gt[2:8, 2:8, 2:8] = 2
    gt[3:6, 3:6, 3:6] = 3
    pred = gt.copy()
    pred[7] = 0
    (root / "gt" / "caseA").mkdir(parents=True)
    save_volume(gt, np.eye(4), root / "gt" / "caseA" / "caseA-seg.nii.gz", dtype=np.uint8)
    save_volume(gt, np.eye(4), root / "gt" / "caseB" / "caseB-seg.nii.gz", dtype=np.uint8)
    save_volume(pred, affine, root / "pred" / "caseA.nii.gz", dtype=np.uint8)
    return 2 * 180 / (216 + 180)


def test_evaluate_folders_and_cli(tmp_path):
    expected = _write_pair(tmp_path)
    rows, missing = evaluate_folders(tmp_path / "pred", tmp_path / "gt")
    assert [r["case"] for r in rows] == ["caseA"] and missing == ["caseB"]
    assert rows[0]["WT_dice"] == pytest.approx(expected)
    r = CliRunner().invoke(
        app, ["seg", "evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-o", str(tmp_path / "m.csv")]
    )
    assert r.exit_code == 0, r.output
    table = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert [t["case"] for t in table] == ["caseA", "mean"]
    assert float(table[0]["WT_dice"]) == pytest.approx(expected, rel=1e-5)
    assert float(table[0]["ET_dice"]) == 1.0


def test_evaluate_bad_input(tmp_path):
    _write_pair(tmp_path, affine=np.diag([2.0, 1, 1, 1]))
    exe = str(Path(sys.executable).with_name("gliofit"))
    res = subprocess.run(
        [exe, "seg", "evaluate", str(tmp_path / "pred"), str(tmp_path / "gt")], capture_output=True, text=True
    )
    assert res.returncode == 2 and "caseA.nii.gz" in res.stderr and "affine" in res.stderr
    (tmp_path / "pred" / "caseA.nii.gz").write_bytes(b"not a nifti")
    r = CliRunner().invoke(app, ["seg", "evaluate", str(tmp_path / "pred"), str(tmp_path / "gt")])
    assert r.exit_code == 2 and "caseA.nii.gz" in r.output
