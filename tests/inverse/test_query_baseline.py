"""The index query and the exhaustive baseline: known answers by construction, brute-force equality."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from gliofit.inverse.baseline import exhaustive_query, soft_agreement, soft_scores
from gliofit.inverse.query import CORE_GRID, EDEMA_GRID, query, score_candidates
from gliofit.simulations_db.dice import dice, volume_window
from gliofit.simulations_db.features import FeatureSpec, entry_features
from gliofit.simulations_db.index import build_index
from gliofit.simulations_db.store import QUANT_SCALE, threshold_level


def _entry_masks(db, entry_id, te=0.25, tc=0.675):
    u = db.density(entry_id)
    return u >= te - 1e-7, u >= tc - 1e-7


def _big_entries(db, n, min_core=20):
    e = db.entries
    ok = np.flatnonzero((e["wt_voxels"] >= 60) & (e["core_voxels"] >= min_core))
    return e["id"][ok[np.linspace(0, len(ok) - 1, n).astype(int)]]


# ----------------------------------------------------------------------------- soft score


def test_soft_agreement_values():
    assert soft_agreement(0.25, 0.25) == pytest.approx(0.5)
    x = np.linspace(0, 0.7, 8)
    assert np.allclose(soft_agreement(0.25 + x, 0.25) + soft_agreement(0.25 - x, 0.25), 1.0)
    assert soft_agreement(1.0, 0.25) == pytest.approx(0.5 + 0.5 * (1 - np.exp(-(0.75**2))))
    assert soft_agreement(0.0, 0.675) == pytest.approx(0.5 - 0.5 * (1 - np.exp(-(0.675**2))))


def test_soft_scores_equal_the_full_grid_sum(small_db):
    ids = small_db.entries["id"][::7]
    wt, core = _entry_masks(small_db, int(_big_entries(small_db, 1)[0]))
    got = soft_scores(wt, core, small_db.read_entries(ids), (0.25, 0.675))
    for i, s in zip(ids, got):
        u = small_db.density(int(i)).astype(np.float64)
        want = soft_agreement(u[wt], 0.25).sum() + soft_agreement(u[core], 0.675).sum()
        assert s == pytest.approx(want, rel=1e-9)


# ----------------------------------------------------------------------------- exact Dice


def test_score_candidates_equal_full_grid_dice_at_every_threshold(small_db):
    ids = small_db.entries["id"][::5]
    wt, core = _entry_masks(small_db, int(_big_entries(small_db, 2)[1]), 0.15, 0.8)
    d, th = score_candidates(small_db, wt, core, ids, EDEMA_GRID, CORE_GRID)
    for i, (dw, dc), (te, tc) in zip(ids, d, th):
        u = small_db.density(int(i))
        q = np.round(u * QUANT_SCALE)
        best_w = max(dice(wt, q >= threshold_level(t)) for t in EDEMA_GRID)
        best_c = max(dice(core, q >= threshold_level(t)) for t in CORE_GRID)
        assert dw == pytest.approx(best_w, abs=1e-6) and dc == pytest.approx(best_c, abs=1e-6)
        assert dice(wt, q >= threshold_level(te)) == pytest.approx(dw, abs=1e-6)
        assert dice(core, q >= threshold_level(tc)) == pytest.approx(dc, abs=1e-6)


@pytest.mark.parametrize("search", [False, True])
def test_an_entrys_own_masks_rank_it_first(small_db, search):
    for eid in _big_entries(small_db, 4):
        wt, core = _entry_masks(small_db, int(eid))
        m = query(small_db, wt, core, thresholds_search=search)
        assert m.ids[0] == eid and m.dice[0].tolist() == [1.0, 1.0]
        assert list(m.thresholds[0]) == [0.25, 0.675]
        assert np.all(np.diff(m.score) <= 0)


def test_threshold_search_recovers_the_thresholds_of_the_query(small_db):
    eid = int(_big_entries(small_db, 3)[2])
    wt, core = _entry_masks(small_db, eid, 0.15, 0.8)
    m = query(small_db, wt, core)
    assert m.ids[0] == eid and m.dice[0].tolist() == [1.0, 1.0]
    assert m.thresholds[0].tolist() == [0.15, 0.8]
    plain = query(small_db, wt, core, thresholds_search=False)
    assert plain.score[0] < 1.0


def test_volume_prefilter_keeps_only_reachable_entries(small_db):
    eid = int(_big_entries(small_db, 3)[1])
    wt, core = _entry_masks(small_db, eid)
    m = query(small_db, wt, core, min_dice=0.8)
    lo, hi = volume_window(int(wt.sum()), 0.8)
    vol = small_db.entries["wt_voxels"][small_db.rows_of(m.ids)]
    assert np.all((vol >= lo) & (vol <= hi)) and eid in m.ids
    assert len(m.ids) < m.n_candidates


# ----------------------------------------------------------------------------- toy database


def _toy_db():
    """Eight blobs on a 32³ grid, each in its own octant, none touching another: a query equal to
    one blob's masks overlaps that blob only."""
    shape = (32, 32, 32)
    idx = np.indices(shape).transpose(1, 2, 3, 0).astype(np.float64)
    spec = FeatureSpec.for_grid(shape, 2.0, cell_mm=8.0)
    crops, feats, ids = [], [], []
    for n, corner in enumerate(np.ndindex(2, 2, 2)):
        centre = 8 + 16 * np.asarray(corner) + (n % 3 - 1)
        r = 3.0 + 0.5 * n
        u = np.clip(1.2 - np.linalg.norm(idx - centre, axis=-1) / (r * 1.6), 0, 1)
        q = np.rint(u * QUANT_SCALE).astype(np.uint8)
        nz = np.argwhere(q > 0)
        lo, hi = nz.min(0), nz.max(0) + 1
        crop = q[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        crops.append((tuple(lo) + tuple(hi), crop))
        feats.append(entry_features(spec, crop >= threshold_level(0.25), crop >= threshold_level(0.675), tuple(lo)))
        ids.append(100 + n)
    ids = np.asarray(ids, dtype=np.int64)
    entries = {"id": ids, "wt_voxels": np.array([(c >= threshold_level(0.25)).sum() for _, c in crops])}
    by_id = dict(zip(ids.tolist(), crops))

    def read(sel):
        return [by_id[int(i)] for i in sel]

    return SimpleNamespace(
        manifest=SimpleNamespace(features=spec.to_dict(), thresholds={"edema": 0.25, "core": 0.675}),
        index=build_index(np.stack(feats), ids, kind="flat"),
        entries=entries,
        rows_of=lambda sel: np.searchsorted(ids, np.asarray(sel)),
        read_entries=read,
        read_visible=read,
        shape=shape,
    )


def test_toy_database_both_methods_rank_the_true_entry_first():
    db = _toy_db()
    for eid in db.entries["id"]:
        ((bbox, crop),) = db.read_entries([eid])
        wt = np.zeros(db.shape, bool)
        core = np.zeros(db.shape, bool)
        box = tuple(slice(bbox[i], bbox[i + 3]) for i in range(3))
        wt[box], core[box] = crop >= threshold_level(0.25), crop >= threshold_level(0.675)
        fast = query(db, wt, core, top_k=8, shift=False)  # a toy database has no grid to shift on
        slow = exhaustive_query(db, wt, core, top_k=8)
        assert fast.ids[0] == eid and slow.ids[0] == eid
        assert fast.dice[0].tolist() == [1.0, 1.0] and slow.dice[0].tolist() == [1.0, 1.0]
        assert slow.n_candidates == 8 and np.all(np.diff(slow.score) <= 0)


def test_exhaustive_visits_every_entry_of_the_real_database(small_db):
    eid = int(_big_entries(small_db, 3)[0])
    wt, core = _entry_masks(small_db, eid)
    m = exhaustive_query(small_db, wt, core, top_k=5)
    assert m.n_candidates == len(small_db.entries["id"]) and len(m.ids) == 5
    all_scores = soft_scores(wt, core, small_db.read_entries(small_db.entries["id"]), (0.25, 0.675))
    assert m.score[0] == pytest.approx(all_scores.max())
