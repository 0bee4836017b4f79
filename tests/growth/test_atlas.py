"""Atlases: the default template, custom atlases from files, simulation grids and the way back."""

from __future__ import annotations

import numpy as np
import pytest

from gliofit.common.errors import InputError
from gliofit.common.nifti import save_volume
from gliofit.growth.atlas import (
    atlas_from_tissue_maps,
    load_atlas,
    resample_atlas,
    to_atlas_grid,
)


@pytest.fixture(scope="module")
def icbm():
    return load_atlas("icbm152")


def test_default_atlas_is_icbm152_1mm_with_plausible_tissue(icbm):
    assert icbm.name == "icbm152-2009a"
    assert icbm.spacing_mm == (1.0, 1.0, 1.0)
    v = icbm.volumes_cm3()
    assert 600 < v["gm"] < 1200 and 400 < v["wm"] < 900 and v["csf"] > 50
    assert icbm.t1 is not None and icbm.t1.shape == icbm.shape
    total = icbm.gm + icbm.wm + icbm.csf
    assert total.max() <= 1.0 + 1e-5


@pytest.mark.parametrize("spacing", [1.5, 2.0, 3.0])
def test_resampled_grid_keeps_tissue_volumes_and_world_coordinates(icbm, spacing):
    grid = resample_atlas(icbm, spacing)
    assert grid.spacing_mm == pytest.approx((spacing,) * 3)
    for key, vol in icbm.volumes_cm3().items():
        if key != "domain":
            assert grid.volumes_cm3()[key] == pytest.approx(vol, rel=1e-6)  # exact overlap averaging
    # the coarse voxel centred on a world point averages the fine voxels around that point
    ijk = np.array(grid.shape) // 2
    xyz = grid.affine[:3, :3] @ ijk + grid.affine[:3, 3]
    fine = np.linalg.solve(icbm.affine[:3, :3], xyz - icbm.affine[:3, 3])
    lo = np.floor(fine - spacing / 2 + 0.5).astype(int)
    hi = np.floor(fine + spacing / 2 + 0.5).astype(int)
    if float(spacing).is_integer() and spacing % 2 == 0:
        block = icbm.wm[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        assert grid.wm[tuple(ijk)] == pytest.approx(block.mean(), abs=1e-5)


def test_back_to_atlas_grid_reproduces_a_linear_field_exactly(icbm):
    grid = resample_atlas(icbm, 2.0)
    ijk = np.indices(grid.shape).reshape(3, -1).T
    xyz = ijk @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    field = (0.01 * xyz[:, 0] + 0.02 * xyz[:, 1] - 0.005 * xyz[:, 2] + 3).reshape(grid.shape)
    back = to_atlas_grid(field, grid, icbm)
    # inside the grid (away from its border) trilinear interpolation of a linear field is exact
    fine = np.indices(icbm.shape).reshape(3, -1).T
    fxyz = fine @ icbm.affine[:3, :3].T + icbm.affine[:3, 3]
    expected = (0.01 * fxyz[:, 0] + 0.02 * fxyz[:, 1] - 0.005 * fxyz[:, 2] + 3).reshape(icbm.shape)
    inner = icbm.domain & (back > 0)
    np.testing.assert_allclose(back[inner], expected[inner], atol=1e-4)


def test_custom_atlas_from_files_and_label_map(tmp_path):
    shape, affine = (20, 22, 18), np.diag([2.0, 2.0, 2.0, 1.0])
    labels = np.zeros(shape, np.int16)
    labels[3:-3, 3:-3, 3:-3] = 2
    labels[6:-6, 6:-6, 6:-6] = 3
    labels[9:11, 9:11, 9:11] = 1
    save_volume(labels, affine, tmp_path / "labels.nii.gz", dtype=np.int16)
    lab_atlas = load_atlas(tmp_path / "labels.nii.gz")
    assert lab_atlas.wm.sum() == (labels == 3).sum() and lab_atlas.csf.sum() == 8
    folder = tmp_path / "atlas"
    for key, arr in (("gm", lab_atlas.gm), ("wm", lab_atlas.wm), ("csf", lab_atlas.csf)):
        save_volume(arr, affine, folder / f"{key}.nii.gz")
    maps = load_atlas(folder)
    np.testing.assert_array_equal(maps.wm, lab_atlas.wm)
    np.testing.assert_allclose(maps.affine, affine)


def test_custom_atlas_errors_name_the_file(tmp_path):
    affine = np.eye(4)
    save_volume(np.zeros((5, 5, 5)), affine, tmp_path / "gm.nii.gz")
    save_volume(np.zeros((5, 5, 6)), affine, tmp_path / "wm.nii.gz")
    save_volume(np.zeros((5, 5, 5)), affine, tmp_path / "csf.nii.gz")
    with pytest.raises(InputError, match=r"wm.nii.gz: tissue map grid differs.*shape \(5, 5, 6\)"):
        atlas_from_tissue_maps(tmp_path / "gm.nii.gz", tmp_path / "wm.nii.gz", tmp_path / "csf.nii.gz")
    save_volume(np.zeros((5, 5, 5, 2)), affine, tmp_path / "four_d.nii.gz")
    with pytest.raises(InputError, match="four_d.nii.gz.*3-D"):
        load_atlas(tmp_path / "four_d.nii.gz")
    with pytest.raises(InputError, match="missing.nii.gz.*does not exist"):
        load_atlas(tmp_path / "missing.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="lacks gm.nii.gz"):
        load_atlas(tmp_path / "empty")
