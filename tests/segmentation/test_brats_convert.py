"""BraTS 2021/2023 folders -> nnU-Net v2 raw dataset; checked by nnU-Net's own integrity check."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from gliofit.common.errors import InputError
from gliofit.common.nifti import save_volume
from gliofit.segmentation.brats_convert import LAYOUTS, MODALITIES, convert_brats, find_cases, to_nnunet_labels

AFF = np.diag([1.0, 1.0, 1.0, 1.0])


def _case(root, name, layout, *, seg_values=(1, 2, 3), skip=None, shape=(16, 16, 12)):
    d = root / name
    rng = np.random.default_rng(len(name))
    for i, m in enumerate(MODALITIES):
        if m != skip:
            save_volume(rng.random(shape) * 100 + i, AFF, d / f"{name}{LAYOUTS[layout][m]}.nii.gz")
    seg = np.zeros(shape, np.uint8)
    seg[3:12, 3:12, 3:9] = seg_values[1]  # edema
    seg[5:10, 5:10, 4:8] = seg_values[2]  # enhancing
    seg[6:8, 6:8, 5:7] = seg_values[0]  # necrosis
    save_volume(seg, AFF, d / f"{name}{LAYOUTS[layout]['seg']}.nii.gz", dtype=np.uint8)
    return seg


def test_label_remap_both_conventions():
    lab23 = np.array([0, 1, 2, 3])
    lab21 = np.array([0, 1, 2, 4])
    np.testing.assert_array_equal(to_nnunet_labels(lab23), [0, 2, 1, 3])
    np.testing.assert_array_equal(to_nnunet_labels(lab21), [0, 2, 1, 3])


def test_convert_mixed_years_and_nnunet_integrity(tmp_path, monkeypatch):
    src = tmp_path / "brats"
    seg23 = _case(src, "BraTS-GLI-00001-000", "brats2023")
    seg21 = _case(src, "BraTS2021_00002", "brats2021", seg_values=(1, 2, 4))
    ds = convert_brats(src, tmp_path / "raw", dataset_id=7, name="Test")
    assert ds.name == "Dataset007_Test"
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3}
    assert meta["regions_class_order"] == [1, 2, 3] and meta["numTraining"] == 2
    assert meta["channel_names"] == {"0": "T1", "1": "T1c", "2": "T2", "3": "FLAIR"}
    for name, seg in (("BraTS-GLI-00001-000", seg23), ("BraTS2021_00002", seg21)):
        lab = np.asarray(nib.load(ds / "labelsTr" / f"{name}.nii.gz").dataobj)
        assert int((lab == 1).sum()) == int((seg == 2).sum())  # edema
        assert int((lab == 2).sum()) == int((seg == 1).sum())  # necrosis
        assert int((lab == 3).sum()) == int(np.isin(seg, (3, 4)).sum())  # enhancing
        for ch in range(4):
            img = np.asarray(nib.load(ds / "imagesTr" / f"{name}_{ch:04d}.nii.gz").dataobj)
            assert img.shape == seg.shape and float(img.min()) >= ch  # channel order kept (offset +ch)
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(ds), num_processes=1)  # raises on any format problem


def test_bad_inputs_name_the_file(tmp_path):
    _case(tmp_path / "a", "c1", "brats2023", skip="flair")
    with pytest.raises(InputError, match=r"c1-t2f\.nii\.gz.*missing flair"):
        find_cases(tmp_path / "a")
    _case(tmp_path / "b", "c2", "brats2023")
    (tmp_path / "b" / "c2" / "c2-t1n.nii.gz").rename(tmp_path / "b" / "c2" / "c2_t1.nii.gz")
    with pytest.raises(InputError, match=r"c2_t1\.nii\.gz.*mixed"):
        find_cases(tmp_path / "b")
    _case(tmp_path / "c", "c3", "brats2021", seg_values=(1, 2, 4))
    (tmp_path / "c" / "c3" / "c3_t2.nii.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(InputError, match=r"c3_t2\.nii\.gz.*cannot read"):
        convert_brats(tmp_path / "c", tmp_path / "raw")
    assert not list((tmp_path / "raw").iterdir())  # nothing half-written
    _case(tmp_path / "d", "c4", "brats2023")
    save_volume(np.zeros((8, 8, 8)), AFF, tmp_path / "d" / "c4" / "c4-t1c.nii.gz")
    with pytest.raises(InputError, match=r"c4-t1c\.nii\.gz.*differs"):
        convert_brats(tmp_path / "d", tmp_path / "raw")
