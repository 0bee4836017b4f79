"""The observation model: label conventions, resampling onto the database grid, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from inversehelpers import write_labels

from gliofit.common.errors import InputError
from gliofit.common.grids import world_to_voxel
from gliofit.common.nifti import save_volume
from gliofit.inverse.observation import is_atlas_space, masks_from_file, observe


def _db_voxel_box_on_atlas(db, atlas, lo, hi):
    """1 mm atlas index slices covering database voxels lo..hi-1 exactly (each 6 mm voxel = 6 atlas voxels)."""
    g = db.grid
    first = world_to_voxel(atlas.affine, g.affine[:3, :3] @ (np.asarray(lo) - 0.5) + g.affine[:3, 3])
    last = world_to_voxel(atlas.affine, g.affine[:3, :3] @ (np.asarray(hi) - 0.5) + g.affine[:3, 3])
    first, last = np.rint(first + 0.5).astype(int), np.rint(last + 0.5).astype(int)
    return tuple(slice(a, b) for a, b in zip(first, last))


def test_box_on_1mm_atlas_grid_maps_exactly_to_database_voxels(tmp_path, small_db, atlas1):
    lo, hi = np.array([10, 14, 12]), np.array([14, 17, 15])
    sl = _db_voxel_box_on_atlas(small_db, atlas1, lo, hi)
    assert all(s.stop - s.start == 6 * (b - a) for s, a, b in zip(sl, lo, hi))
    lab = np.zeros(atlas1.shape, np.uint8)
    lab[sl] = 2
    core_sl = _db_voxel_box_on_atlas(small_db, atlas1, lo + 1, hi - 1)
    lab[core_sl] = 1
    obs = observe(write_labels(tmp_path / "seg.nii.gz", lab, atlas1.affine), grid=small_db.grid, atlas=atlas1)
    want = np.zeros(small_db.grid.shape, bool)
    want[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    want_core = np.zeros_like(want)
    want_core[tuple(slice(a, b) for a, b in zip(lo + 1, hi - 1))] = True
    assert np.array_equal(obs.wt, want) and np.array_equal(obs.core, want_core)
    assert np.array_equal(obs.wt_atlas, lab > 0) and obs.space == "atlas" and obs.convention == "brats2023"


@pytest.mark.parametrize("covered, inside", [(3, True), (2, False)])
def test_partly_covered_database_voxel_needs_half_its_volume(tmp_path, small_db, atlas1, covered, inside):
    """On a 1 mm crop of the atlas grid (declared atlas space: only the atlas's own grid is detected)."""
    lo, hi = np.array([10, 14, 12]), np.array([13, 16, 14])
    sl = list(_db_voxel_box_on_atlas(small_db, atlas1, lo, hi))
    sl[0] = slice(sl[0].start, sl[0].stop + covered)  # extend into the next database voxel along x
    start = np.array([s.start for s in sl]) - 5
    crop_affine = atlas1.affine.copy()
    crop_affine[:3, 3] = atlas1.affine[:3, :3] @ start + atlas1.affine[:3, 3]
    lab = np.zeros((40, 40, 40), np.uint8)
    lab[tuple(slice(s.start - b, s.stop - b) for s, b in zip(sl, start))] = 2
    obs = observe(
        write_labels(tmp_path / "seg.nii.gz", lab, crop_affine), grid=small_db.grid, atlas=atlas1, in_atlas_space=True
    )
    assert obs.wt[hi[0], lo[1] : hi[1], lo[2] : hi[2]].all() == inside
    assert obs.wt[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].all()
    assert obs.wt.sum() == np.prod(hi - lo) + (np.prod(hi[1:] - lo[1:]) if inside else 0)


def _labels(shape=(20, 22, 24)):
    lab = np.zeros(shape, np.uint8)
    lab[5:15, 6:16, 7:17] = 2
    lab[8:12, 9:13, 10:14] = 1
    lab[9:11, 10:12, 11:13] = 4
    return lab


def test_label_conventions_and_masks_give_the_same_masks(tmp_path, small_db, atlas1):
    g = small_db.grid
    lab21 = _labels(g.shape)
    lab23 = np.where(lab21 == 4, 3, lab21).astype(np.uint8)
    p21 = write_labels(tmp_path / "s21.nii.gz", lab21, g.affine)
    p23 = write_labels(tmp_path / "s23.nii.gz", lab23, g.affine)
    pwt = write_labels(tmp_path / "wt.nii.gz", (lab21 > 0).astype(np.uint8), g.affine)
    pco = write_labels(tmp_path / "core.nii.gz", np.isin(lab21, (1, 4)).astype(np.uint8), g.affine)
    outs = [
        observe(p21, grid=g, atlas=atlas1),
        observe(p23, grid=g, atlas=atlas1),
        observe(p21, grid=g, atlas=atlas1, labels="brats2021"),
        observe(pwt, grid=g, atlas=atlas1, labels="masks", core=pco),
    ]
    assert [o.convention for o in outs] == ["brats2021", "brats2023", "brats2021", "masks"]
    for o in outs:
        assert np.array_equal(o.wt, lab21 > 0) and np.array_equal(o.core, np.isin(lab21, (1, 4)))


def test_atlas_space_rule(small_db, atlas1):
    assert is_atlas_space(atlas1.affine, atlas1.shape, atlas1)
    assert is_atlas_space(small_db.grid.affine, small_db.grid.shape, atlas1)
    flipped = atlas1.affine @ np.diag([-1.0, 1, 1, 1])
    flipped[0, 3] += atlas1.shape[0] - 1
    assert not is_atlas_space(flipped, atlas1.shape, atlas1)
    far = atlas1.affine.copy()
    far[:3, 3] += 1000.0
    assert not is_atlas_space(far, atlas1.shape, atlas1)


def _write(path, data, affine, dtype=np.uint8):
    return save_volume(data, affine, path, dtype=dtype)


@pytest.mark.parametrize(
    "problem",
    ["4d", "unknown", "empty", "patient", "ambiguous", "float", "wrong-convention", "masks-without-core", "not-binary"],
)
def test_bad_input_is_an_input_error_naming_the_file(tmp_path, small_db, atlas1, problem):
    g = small_db.grid
    lab = _labels(g.shape)
    kwargs = {}
    if problem == "4d":
        p = _write(tmp_path / "seg.nii.gz", np.stack([lab, lab], axis=-1), g.affine)
    elif problem == "unknown":
        lab[lab == 1] = 7
        p = _write(tmp_path / "seg.nii.gz", lab, g.affine)
    elif problem == "empty":
        p = _write(tmp_path / "seg.nii.gz", np.zeros_like(lab), g.affine)
    elif problem == "patient":
        flipped = g.affine @ np.diag([-1.0, -1, 1, 1])
        p = _write(tmp_path / "seg.nii.gz", lab, flipped)
    elif problem == "ambiguous":
        lab[lab == 1] = 3
        p = _write(tmp_path / "seg.nii.gz", lab, g.affine)
    elif problem == "float":
        p = _write(tmp_path / "seg.nii.gz", lab + 0.5, g.affine, np.float32)
    elif problem == "wrong-convention":
        p = _write(tmp_path / "seg.nii.gz", lab, g.affine)
        kwargs = {"labels": "brats2023"}
    elif problem == "masks-without-core":
        p = _write(tmp_path / "seg.nii.gz", (lab > 0).astype(np.uint8), g.affine)
        kwargs = {"labels": "masks"}
    else:
        p = _write(tmp_path / "seg.nii.gz", lab, g.affine)
        kwargs = {"labels": "masks", "core": _write(tmp_path / "c.nii.gz", (lab > 0).astype(np.uint8), g.affine)}
    with pytest.raises(InputError) as err:
        observe(p, grid=g, atlas=atlas1, **kwargs)
    msg = str(err.value)
    assert "\n" not in msg and "seg.nii.gz" in msg


def test_patient_space_input_is_accepted_when_declared_in_atlas_space(tmp_path, small_db, atlas1):
    g = small_db.grid
    lab = _labels(g.shape)
    flipped = g.affine @ np.diag([-1.0, 1, 1, 1])
    flipped[:3, 3] = g.affine[:3, 3] + g.affine[:3, 0] * (g.shape[0] - 1)  # the same voxels, x stored backwards
    p = _write(tmp_path / "seg.nii.gz", lab[::-1], flipped)
    obs = observe(p, grid=g, atlas=atlas1, in_atlas_space=True)
    assert np.array_equal(obs.wt, lab > 0)
    wt, _, _, _ = masks_from_file(p)
    assert np.array_equal(obs.to_input_grid(obs.wt_atlas.astype(np.float32), atlas1) >= 0.5, wt)
