"""Exact Dice on bounding-box crops against closed forms (boxes, spheres) and the volume window."""

from __future__ import annotations

import numpy as np
import pytest

from gliofit.common.errors import InputError
from gliofit.simulations_db.dice import dice, dice_scores, volume_window

GRID = (40, 36, 30)


def box(lo, hi, shape=GRID) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def crop_of(mask: np.ndarray, pad: int = 1):
    """(offset, crop) of a mask's bounding box grown by ``pad`` voxels (clipped to the grid)."""
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + 1 + pad, mask.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    return tuple(int(v) for v in lo), sl


def as_candidate(wt: np.ndarray, core: np.ndarray, pad: int = 1):
    off, sl = crop_of(wt | core, pad)
    return off, wt[sl], core[sl]


def test_boxes_match_closed_form():
    a = box((5, 5, 5), (15, 13, 11))  # 10 x 8 x 6 = 480
    b = box((10, 7, 5), (22, 13, 14))  # 12 x 6 x 9 = 648; overlap 5 x 6 x 6 = 180
    expected = 2 * 180 / (480 + 648)
    core_a, core_b = box((6, 6, 6), (8, 8, 8)), box((7, 6, 6), (9, 8, 8))  # 8 each, overlap 4
    got = dice_scores(a, core_a, [as_candidate(b, core_b)])
    assert got.shape == (1, 2) and got.dtype == np.float32
    assert got[0, 0] == pytest.approx(expected, rel=1e-6)
    assert got[0, 1] == pytest.approx(2 * 4 / 16, rel=1e-6)
    assert dice(a, b) == pytest.approx(expected)


def sphere(centre, radius: float, shape=GRID) -> np.ndarray:
    g = np.indices(shape).astype(float)
    return sum((g[i] - centre[i]) ** 2 for i in range(3)) <= radius**2


def lens_volume(r: float, d: float) -> float:
    """Closed-form volume of the intersection of two balls of radius r whose centres are d apart."""
    return np.pi * (4 * r + d) * (2 * r - d) ** 2 / 12


def test_offset_spheres_approach_the_lens_formula():
    r, d = 9.0, 6.0
    a, b = sphere((20, 18, 15), r), sphere((26, 18, 15), r)
    got = float(dice_scores(a, a, [as_candidate(b, b)])[0, 0])
    assert got == pytest.approx(dice(a, b), abs=1e-6)  # crop path == full-grid count
    analytic = lens_volume(r, d) / (4 / 3 * np.pi * r**3)  # 2|A∩B| / (|A|+|B|), equal volumes
    assert got == pytest.approx(analytic, abs=0.02)  # voxelisation error at r = 9 voxels


def test_crop_at_grid_corner_and_empty_masks():
    a = box((0, 0, 0), (4, 4, 4))
    empty = np.zeros(GRID, bool)
    corner = (0, 0, 0), np.ones((2, 4, 4), bool), np.zeros((2, 4, 4), bool)
    far = (30, 30, 20), np.ones((3, 3, 3), bool), np.ones((3, 3, 3), bool)
    got = dice_scores(a, empty, [corner, far])
    assert got[0].tolist() == [pytest.approx(2 * 32 / (64 + 32)), 1.0]  # both cores empty: agree
    assert got[1].tolist() == [0.0, 0.0]
    assert dice_scores(a, empty, []).shape == (0, 2)


def test_volume_window_formula_and_edges():
    lo, hi = volume_window(100.0, 0.8)
    assert lo == pytest.approx(100 * 0.8 / 1.2) and hi == pytest.approx(100 * 1.2 / 0.8)
    assert volume_window(50, 1.0) == (50.0, 50.0)
    assert volume_window(0, 0.5) == (0.0, 0.0)
    # the window is tight: a box nested in another reaches exactly d at the lower edge
    a_vol, d = 1000, 0.5
    lo, hi = volume_window(a_vol, d)
    assert 2 * lo / (a_vol + lo) == pytest.approx(d) and 2 * a_vol / (a_vol + hi) == pytest.approx(d)
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(InputError, match="min_dice"):
            volume_window(10, bad)
    with pytest.raises(InputError, match="query_volume"):
        volume_window(-1, 0.5)


def test_window_never_excludes_a_better_entry():
    rng = np.random.default_rng(3)
    q = sphere((20, 18, 15), 6)
    for _ in range(20):
        c, r = rng.uniform(12, 24, 3), rng.uniform(2, 10)
        b = sphere(c, r)
        if not b.any():
            continue
        d = dice(q, b)
        if d > 0:
            lo, hi = volume_window(q.sum(), d)
            assert lo - 1e-9 <= b.sum() <= hi + 1e-9


def test_bad_candidates_raise_input_error():
    a = box((5, 5, 5), (10, 10, 10))
    ok = np.ones((3, 3, 3), bool)
    with pytest.raises(InputError, match="does not fit"):
        dice_scores(a, a, [((38, 0, 0), ok, ok)])
    with pytest.raises(InputError, match="does not fit"):
        dice_scores(a, a, [((-1, 0, 0), ok, ok)])
    with pytest.raises(InputError, match="one shape"):
        dice_scores(a, a, [((0, 0, 0), ok, np.ones((2, 3, 3), bool))])
    with pytest.raises(InputError, match="boolean"):
        dice_scores(a, a, [((0, 0, 0), ok.astype(np.uint8), ok)])
    with pytest.raises(InputError, match="query_wt"):
        dice_scores(a[0], a, [])
