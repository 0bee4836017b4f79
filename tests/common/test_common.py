"""Shared conventions: resampling, NIfTI I/O, labels, units."""

from __future__ import annotations

import numpy as np
import pytest

from gliofit.common.errors import InputError
from gliofit.common.grids import resample_area, resample_linear
from gliofit.common.labels import CONVENTIONS, convert_labels, detect_convention, label_values, tumour_masks
from gliofit.common.nifti import load_volume, save_volume
from gliofit.common.units import derived_parameters


def test_area_resampling_averages_blocks_and_keeps_mass():
    rng = np.random.default_rng(0)
    data = rng.random((12, 10, 8))
    src = np.eye(4)
    dst = np.diag([2.0, 2.0, 2.0, 1.0])
    dst[:3, 3] = 0.5  # coarse voxel 0 covers fine voxels 0 and 1
    out = resample_area(data, src, dst, (6, 5, 4))
    np.testing.assert_allclose(out[1, 2, 3], data[2:4, 4:6, 6:8].mean())
    assert out.sum() * 8 == pytest.approx(data.sum())


def test_area_resampling_at_non_integer_ratio_keeps_mass():
    data = np.ones((9, 9, 9))
    dst = np.diag([1.5, 1.5, 1.5, 1.0])
    dst[:3, 3] = 0.25
    out = resample_area(data, np.eye(4), dst, (6, 6, 6))
    assert out.sum() * 1.5**3 == pytest.approx(data.sum())


def test_linear_resampling_nearest_keeps_labels():
    lab = np.zeros((6, 6, 6), np.uint8)
    lab[2:4, 2:4, 2:4] = 3
    out = resample_linear(lab, np.eye(4), np.eye(4), lab.shape, order=0)
    np.testing.assert_array_equal(out, lab)


def test_nifti_round_trip_and_errors(tmp_path):
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    aff = np.diag([1.0, 2.0, 3.0, 1.0])
    save_volume(a, aff, tmp_path / "x.nii.gz")
    data, affine = load_volume(tmp_path / "x.nii.gz")
    np.testing.assert_array_equal(data, a)
    np.testing.assert_allclose(affine, aff)
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(InputError, match="broken.nii.gz: cannot read"):
        load_volume(tmp_path / "broken.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.nii.gz", "x.nii.gz"]


def test_label_conventions():
    lab21 = np.array([0, 1, 2, 4])
    lab23 = np.array([0, 1, 2, 3])
    assert detect_convention(lab21).name == "brats2021"
    assert detect_convention(lab23).name == "brats2023"
    m = tumour_masks(lab21)
    np.testing.assert_array_equal(m["whole_tumor"], [False, True, True, True])
    np.testing.assert_array_equal(m["core"], [False, True, False, True])
    np.testing.assert_array_equal(convert_labels(lab21, "brats2021", "brats2023"), lab23)
    with pytest.raises(InputError, match="ambiguous"):
        detect_convention(np.array([3, 4]))
    with pytest.raises(InputError, match=r"\[7\]"):
        detect_convention(np.array([0, 7]))


def test_derived_parameters():
    d = derived_parameters(0.5, 0.02, 200.0)
    assert d["mu_D_mm"] == pytest.approx(10.0)
    assert d["mu_rho"] == pytest.approx(2.0)
    assert d["infiltration_length_mm"] == pytest.approx(5.0)
    assert d["velocity_mm_per_day"] == pytest.approx(0.2)


def test_resample_linear_on_axis_aligned_grids_equals_the_general_transform():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    data = rng.random((9, 11, 7)).astype(np.float32)
    src = np.diag([4.0, 4.0, 4.0, 1.0])
    src[:3, 3] = (-20.0, -30.0, -10.0)
    dst = np.eye(4)
    dst[:3, 3] = (-22.0, -31.0, -12.0)
    m = np.linalg.inv(src) @ dst
    for order, volume in ((1, data), (0, (data > 0.5).astype(np.uint8))):
        general = ndimage.affine_transform(
            volume, m[:3, :3], offset=m[:3, 3], output_shape=(40, 45, 30), order=order, prefilter=False
        )
        np.testing.assert_array_equal(resample_linear(volume, src, dst, (40, 45, 30), order=order), general)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64, np.float32])
@pytest.mark.parametrize("order", ["C", "F"])
def test_label_values_equal_np_unique(dtype, order):
    rng = np.random.default_rng(3)
    for values in ([0], [0, 2], [1, 3, 4], [0, 63], [0, 64, 200], [-1, 0, 2]):
        if np.dtype(dtype).kind == "u" and min(values) < 0:
            continue
        a = np.asarray(rng.choice(values, size=(7, 5, 6)), dtype=dtype, order=order)
        got = label_values(a)
        assert got.dtype == a.dtype
        np.testing.assert_array_equal(got, np.unique(a))


def test_tumour_masks_of_both_conventions():
    for name, conv in CONVENTIONS.items():
        lab = np.array([0, conv.necrosis, conv.edema, conv.enhancing], dtype=np.uint8)
        m = tumour_masks(lab, name)
        assert m["whole_tumor"].tolist() == [False, True, True, True]
        assert m["core"].tolist() == [False, True, False, True]
        assert m["enhancing"].tolist() == [False, False, False, True]


def test_area_resampling_of_a_fortran_ordered_volume_equals_the_c_ordered_one():
    """NIfTI volumes arrive in Fortran order; the area average works on the transpose then (no copy)."""
    rng = np.random.default_rng(5)
    a = np.asfortranarray(rng.random((23, 17, 19)) > 0.6)
    src = np.eye(4)
    src[:3, 3] = [-1.5, 0.5, 2.0]
    dst = np.diag([4.0, 3.5, 2.0, 1.0])
    f = resample_area(a, src, dst, (6, 5, 10))
    c = resample_area(np.ascontiguousarray(a), src, dst, (6, 5, 10))
    assert f.flags.c_contiguous and f.shape == (6, 5, 10)
    np.testing.assert_allclose(f, c, atol=1e-12)
    assert 0.0 < f.max() <= 1.0
