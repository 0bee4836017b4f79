"""The later scan onto the earlier scan's grid: the rigid ANTs registration undoes a known misalignment."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ants")

from gliofit.common.errors import InputError  # noqa: E402
from gliofit.common.grids import resample_linear, voxel_to_world  # noqa: E402
from gliofit.growth.atlas import load_atlas, resample_atlas  # noqa: E402
from gliofit.pipelines.followup import followup_on_first_grid  # noqa: E402
from gliofit.simulations_db.dice import dice  # noqa: E402

CENTRE_MM = np.array([-28.0, -12.0, 22.0])
"""The tumour's anatomical centre (atlas world mm)."""
RADIUS_EARLY_MM, RADIUS_LATER_MM, CORE_MM = 10.0, 14.0, 6.0


def _rotation(deg: float, axis: int) -> np.ndarray:
    a = np.deg2rad(deg)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
    return r


def _scan(atlas, affine: np.ndarray, shape, move: np.ndarray, radius_mm: float):
    """T1 and BraTS labels of a scan whose world point x is the atlas point ``move @ x``; the tumour is a
    sphere of ``radius_mm`` (a core of CORE_MM) at CENTRE_MM in the atlas, darker in the T1."""
    t1 = resample_linear(atlas.t1, atlas.affine, move @ affine, shape)
    world = voxel_to_world(affine, np.indices(shape).transpose(1, 2, 3, 0))
    anatomy = world @ move[:3, :3].T + move[:3, 3]
    r = np.linalg.norm(anatomy - CENTRE_MM, axis=-1)
    labels = np.where(r <= radius_mm, 2, 0).astype(np.uint8)
    labels[r <= CORE_MM] = 1
    t1 = np.where(labels > 0, 0.3 * t1 + 0.4 * (labels == 1), t1)
    return t1.astype(np.float32), labels


@pytest.fixture(scope="module")
def scans():
    """The earlier scan on the atlas's 2 mm grid; the later one on an LPS-style grid, its world rotated by
    6 degrees about z and -4 about x and shifted by (5, -4, 6) mm against the earlier's, the tumour grown."""
    atlas = resample_atlas(load_atlas(), 2.0)
    move = np.eye(4)  # later world -> earlier (atlas) world
    move[:3, :3] = _rotation(6.0, 2) @ _rotation(-4.0, 0)
    move[:3, 3] = [5.0, -4.0, 6.0]
    later_affine = np.diag([-2.0, -2.0, 2.0, 1.0])
    later_affine[:3, 3] = [99.0, 119.0, -80.0]
    early = _scan(atlas, atlas.affine, atlas.shape, np.eye(4), RADIUS_EARLY_MM)
    later = _scan(atlas, later_affine, (100, 120, 90), move, RADIUS_LATER_MM)
    truth = _scan(atlas, atlas.affine, atlas.shape, np.eye(4), RADIUS_LATER_MM)[1]  # later tumour, earlier grid
    return {"atlas": atlas, "early": early, "later": later, "later_affine": later_affine, "truth": truth}


def _carry(scans, registration: str = "syn") -> np.ndarray:
    atlas, (t1_l, lab_l) = scans["atlas"], scans["later"]
    return followup_on_first_grid(
        lab_l,
        scans["later_affine"],
        t1_l,
        scans["later_affine"],
        scans["early"][0],
        atlas.affine,
        registration=registration,
        tumour=lab_l > 0,
        source="followup-t1n.nii.gz",
    )


def _centre_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return voxel_to_world(affine, np.argwhere(mask).mean(axis=0))


def test_the_rigid_registration_undoes_a_known_misalignment(scans):
    atlas, truth = scans["atlas"], scans["truth"]
    got = _carry(scans)
    assert got.dtype == np.uint8 and got.shape == atlas.shape and set(np.unique(got)) <= {0, 1, 2}
    naive = np.rint(resample_linear(scans["later"][1], scans["later_affine"], atlas.affine, atlas.shape, order=0))
    assert dice(naive > 0, truth > 0) < 0.75  # the misalignment matters
    assert dice(got > 0, truth > 0) >= 0.92 and dice(got == 1, truth == 1) >= 0.75
    err = np.linalg.norm(_centre_mm(got > 0, atlas.affine) - _centre_mm(truth > 0, atlas.affine))
    assert err < 1.0
    again = _carry(scans)
    assert np.array_equal(got, again)  # seeded: repeatable


def test_no_registration_needs_one_grid(scans):
    with pytest.raises(InputError, match="followup-t1n.nii.gz: grid"):
        _carry(scans, registration="none")
