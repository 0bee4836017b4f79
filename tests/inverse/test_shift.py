"""Shift-aware scoring: a translated entry is found with its translation, and the seed point moves with it."""

from __future__ import annotations

import numpy as np
import pytest

from gliofit.inverse.api import shifted_origins
from gliofit.inverse.query import climb, query


def _entry_masks(db, entry_id, te=0.25, tc=0.675):
    u = db.density(entry_id)
    return u >= te - 1e-7, u >= tc - 1e-7


def _translate(mask: np.ndarray, shift) -> np.ndarray:
    out = np.zeros_like(mask)
    src, dst = [], []
    for s, n in zip(shift, mask.shape):
        src.append(slice(max(0, -s), n - max(0, s)))
        dst.append(slice(max(0, s), n - max(0, -s)))
    out[tuple(dst)] = mask[tuple(src)]
    return out


def _movable_entry(db, shift):
    """A large entry whose whole tumour and seed point stay inside the grid and tissue when translated."""
    e = db.entries
    inv = np.linalg.inv(db.grid.affine)
    for r in np.argsort(-e["wt_voxels"])[:200]:
        if e["core_voxels"][r] < 10:
            continue
        o = np.array([e["origin_x_mm"][r], e["origin_y_mm"][r], e["origin_z_mm"][r]])
        v = np.rint(inv[:3, :3] @ o + inv[:3, 3]).astype(int) + np.asarray(shift)
        if np.any(v < 0) or np.any(v >= db.grid.shape) or not db.grid.domain[tuple(v)]:
            continue
        wt, _ = _entry_masks(db, int(e["id"][r]))
        if _translate(wt, shift).sum() == wt.sum() and wt.sum() < 0.02 * wt.size:
            return int(e["id"][r]), o
    pytest.skip("no entry of the small database can be translated by this shift")


@pytest.mark.parametrize("shift", [(1, -1, 2), (3, 0, -2)])
def test_a_translated_entry_is_found_with_its_translation(small_db, shift):
    """(1, -1, 2) lies in the window around no alignment; (3, 0, -2) needs the centre-of-mass alignment."""
    eid, origin = _movable_entry(small_db, shift)
    wt, core = _entry_masks(small_db, eid)
    m = query(small_db, _translate(wt, shift), _translate(core, shift))
    i = int(np.flatnonzero(m.ids == eid)[0])
    assert m.dice[i].tolist() == [1.0, 1.0] and m.shifts[i].tolist() == list(shift)
    assert m.score[0] == pytest.approx(1.0)
    moved = shifted_origins(small_db, origin[None, :], m.shifts[i][None, :])[0]
    assert np.allclose(moved, origin + np.asarray(shift) * small_db.manifest.resolution_mm)
    plain = query(small_db, _translate(wt, shift), _translate(core, shift), shift=False)
    assert plain.score[0] < 1.0  # without the shift search nothing fits exactly


def test_no_shift_needed_gives_shift_zero(small_db):
    e = small_db.entries
    eid = int(e["id"][np.argmax(e["wt_voxels"] * (e["core_voxels"] > 10))])
    wt, core = _entry_masks(small_db, eid)
    m = query(small_db, wt, core)
    assert m.ids[0] == eid and m.shifts[0].tolist() == [0, 0, 0] and m.dice[0].tolist() == [1.0, 1.0]


def _quadratic(peak, allowed=lambda s: True):
    """A smooth score over translations with its maximum at ``peak`` (the shape of Dice near its best)."""

    def at(shifts):
        shifts = np.atleast_2d(shifts)
        sc = 1.0 - 0.05 * ((shifts - np.asarray(peak)) ** 2).sum(axis=1)
        sc = np.where([allowed(s) for s in shifts], sc, -np.inf)
        z = np.zeros(len(shifts), dtype=np.int64)
        return sc, sc, sc, z, z

    return at


@pytest.mark.parametrize("peak", [(0, 0, 0), (2, -1, 1), (-2, 2, -2), (5, 0, 0)])
def test_climb_finds_the_best_translation_of_the_window(peak):
    best = climb(_quadratic(peak), np.zeros(3, dtype=np.int64), 2)
    assert best[1].tolist() == np.clip(peak, -2, 2).tolist()  # a peak outside stops at the window's edge


def test_climb_skips_forbidden_translations_and_reports_none_when_all_are():
    best = climb(_quadratic((2, 0, 0), allowed=lambda s: s[1] == 0 and s[2] == 0), np.zeros(3, dtype=np.int64), 2)
    assert best[1].tolist() == [2, 0, 0]
    assert climb(_quadratic((0, 0, 0), allowed=lambda s: False), np.zeros(3, dtype=np.int64), 2) is None
