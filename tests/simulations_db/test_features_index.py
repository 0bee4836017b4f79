"""Feature vectors (crop == full grid, analytic cosine) and the FAISS index (kinds, recall, save/load)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gliofit.common.errors import InputError
from gliofit.simulations_db import index as index_mod
from gliofit.simulations_db.features import FeatureSpec, entry_features, query_features
from gliofit.simulations_db.index import FaissIndex, build_index, train_index

GRID = (40, 44, 36)


def blob(rng: np.random.Generator, shape=GRID) -> tuple[np.ndarray, np.ndarray]:
    c = rng.uniform(8, np.array(shape) - 8)
    r = rng.uniform(2, 7)
    g = np.indices(shape).astype(float)
    d2 = sum((g[i] - c[i]) ** 2 for i in range(3))
    return d2 <= r * r, d2 <= (0.5 * r) ** 2


def test_spec_for_grid_round_trip_and_validation():
    spec = FeatureSpec.for_grid((77, 95, 82), 2.0)
    assert spec.cell_voxels == 8 and spec.coarse_shape == (10, 12, 11)
    assert spec.fine_cell_voxels == 6 and spec.fine_shape == (13, 16, 14)
    assert spec.dim == 2 * 10 * 12 * 11 + 2 * 13 * 16 * 14 + 2
    v1 = FeatureSpec.for_grid((77, 95, 82), 2.0, version=1)
    assert v1.dim == 2 * 10 * 12 * 11 + 2 and v1.current() == spec
    old = {k: v for k, v in v1.to_dict().items() if not k.startswith("fine")}  # as version 1 wrote it
    assert FeatureSpec.from_dict(old) == v1
    assert FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert FeatureSpec.for_grid(GRID, 6.0).cell_voxels == 3
    with pytest.raises(InputError, match="spacing_mm"):
        FeatureSpec.for_grid(GRID, 0.0)
    with pytest.raises(InputError, match="grid_shape"):
        FeatureSpec((3, 4), 2.0, 4)
    with pytest.raises(InputError, match="version"):
        FeatureSpec.from_dict(spec.to_dict() | {"version": 99})
    with pytest.raises(InputError, match="malformed"):
        FeatureSpec.from_dict({"grid_shape": [3, 3, 3]})


def test_crop_features_equal_full_grid_features():
    rng = np.random.default_rng(0)
    spec = FeatureSpec.for_grid(GRID, 2.0, cell_mm=10.0)
    for _ in range(5):
        wt, core = blob(rng)
        full = query_features(spec, wt, core)
        idx = np.argwhere(wt)
        lo, hi = np.maximum(idx.min(0) - 3, 0), np.minimum(idx.max(0) + 4, GRID)
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        crop = entry_features(spec, wt[sl], core[sl], tuple(int(v) for v in lo))
        assert full.dtype == np.float32 and full.shape == (spec.dim,)
        np.testing.assert_array_equal(crop, full)


def test_features_are_unit_occupancy_and_log_volumes():
    spec = FeatureSpec(GRID, 2.0, cell_voxels=4, smooth=False)
    wt = np.zeros(GRID, bool)
    wt[0:4, 0:4, 0:4] = True  # exactly one cell
    wt[4:8, 0:4, 0:2] = True  # half of the next cell along x
    f = query_features(spec, wt, np.zeros(GRID, bool))
    n = spec.n_cells
    cells = f[:n].reshape(spec.coarse_shape)
    expected = np.array([64.0, 32.0]) / np.hypot(64.0, 32.0)
    np.testing.assert_allclose(cells[0:2, 0, 0], expected, rtol=1e-6)
    assert np.count_nonzero(cells) == 2 and not f[n : 2 * n].any()
    assert f[2 * n] == pytest.approx(spec.volume_weight * np.log1p(96)) and f[2 * n + 1] == 0.0
    # smoothing keeps mass inside the grid and spreads it to neighbours
    smooth = query_features(FeatureSpec(GRID, 2.0, cell_voxels=4), wt, wt)[:n].reshape(spec.coarse_shape)
    assert np.count_nonzero(smooth) > 2


def test_cosine_of_features_is_ochiai_without_smoothing():
    """With cell-aligned boxes and no smoothing, the occupancy dot product is the masks' cosine."""
    spec = FeatureSpec(GRID, 2.0, cell_voxels=4, smooth=False)
    a, b = np.zeros(GRID, bool), np.zeros(GRID, bool)
    a[0:8, 0:8, 0:4] = True  # cells (0..1, 0..1, 0)
    b[4:12, 0:8, 0:4] = True  # cells (1..2, 0..1, 0): shares half
    fa, fb = (query_features(spec, m, m)[: spec.n_cells] for m in (a, b))
    ochiai = (a & b).sum() / np.sqrt(a.sum() * b.sum())
    assert float(fa @ fb) == pytest.approx(ochiai, rel=1e-6)


def test_bad_feature_input():
    spec = FeatureSpec.for_grid(GRID, 2.0)
    m = np.zeros(GRID, bool)
    with pytest.raises(InputError, match="database grid"):
        query_features(spec, m[:-1], m[:-1])
    with pytest.raises(InputError, match="boolean"):
        query_features(spec, m.astype(np.uint8), m)
    with pytest.raises(InputError, match="does not fit"):
        entry_features(spec, np.ones((4, 4, 4), bool), np.ones((4, 4, 4), bool), (38, 0, 0))
    with pytest.raises(InputError, match="differ in shape"):
        entry_features(spec, np.ones((4, 4, 4), bool), np.ones((4, 4, 3), bool), (0, 0, 0))


def test_flat_search_is_exact_and_ids_are_entry_ids():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 32)).astype(np.float32)
    ids = np.arange(1000, 1500, dtype=np.int64)
    idx = build_index(x, ids)
    assert idx.kind == "flat" and idx.ntotal == 500 and idx.dim == 32
    q = rng.normal(size=(7, 32)).astype(np.float32)
    got = idx.search(q, 5)
    d2 = ((q[:, None, :] - x[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(got, ids[np.argsort(d2, axis=1)[:, :5]])
    assert got.dtype == np.int64 and idx.search(q[0], 5).shape == (1, 5)
    padded = build_index(x[:3], ids[:3]).search(q[0], 5)  # fewer entries than k
    assert padded[0, 3:].tolist() == [-1, -1] and set(padded[0, :3]) == set(ids[:3])


def test_auto_kind_and_extension(monkeypatch):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 16)).astype(np.float32)
    ids = np.arange(2000)
    assert build_index(x, ids, "auto").kind == "flat"
    monkeypatch.setattr(index_mod, "AUTO_FLAT_MAX", 1000)
    big = build_index(x, ids, "auto")
    assert big.kind == "ivf"
    big.add(x[:10] + 100.0, np.arange(5000, 5010))
    assert big.ntotal == 2010 and big.search(x[3] + 100.0, 1)[0, 0] == 5003
    assert build_index(x, ids, "hnsw").search(x[42], 1)[0, 0] == 42


def clustered(rng, n_clusters: int, per: int, d: int = 64):
    centres = rng.normal(size=(n_clusters, d)) * 4.0
    x = centres.repeat(per, 0) + rng.normal(size=(n_clusters * per, d))
    return x.astype(np.float32)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_recall_on_clustered_data(kind):
    rng = np.random.default_rng(4)
    x = clustered(rng, 50, 200)
    q = x[rng.choice(len(x), 100, replace=False)] + 0.3 * rng.normal(size=(100, 64)).astype(np.float32)
    idx = build_index(x, np.arange(len(x)), kind)
    exact = build_index(x, np.arange(len(x)), "flat").search(q, 10)
    got = idx.search(q, 200)
    top10 = np.mean([set(e) <= set(g) for e, g in zip(exact, got)])
    best = np.mean([e[0] in set(g) for e, g in zip(exact, got)])
    assert best >= 0.99 and top10 >= 0.95


def test_pca_stage_for_long_vectors():
    rng = np.random.default_rng(5)
    x = clustered(rng, 20, 30, d=index_mod.PCA_DIM + 40)
    idx = build_index(x, np.arange(len(x)), "flat")
    assert idx.dim == x.shape[1]
    assert idx.search(x[17], 1)[0, 0] == 17


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_pca_index_keeps_only_its_projection_and_searches_the_same_after_mmap_load(tmp_path, kind):
    rng = np.random.default_rng(8)
    x = clustered(rng, 10, 40, d=index_mod.PCA_DIM + 40)
    idx = build_index(x, np.arange(len(x)), kind)
    pca = index_mod.faiss.downcast_VectorTransform(index_mod.faiss.downcast_index(idx.index.index).chain.at(0))
    assert pca.PCAMat.size() == 0 and pca.A.size() == index_mod.PCA_DIM * x.shape[1]
    back = FaissIndex.load(idx.save(tmp_path / "index.faiss"), verify=True, mmap=True)
    np.testing.assert_array_equal(back.search(x[:25], 10), idx.search(x[:25], 10))


def test_save_load_round_trip_is_atomic_and_checked(tmp_path):
    rng = np.random.default_rng(6)
    x = clustered(rng, 10, 300, d=24)
    idx = build_index(x, np.arange(100, 100 + len(x)), "ivf", seed=3)
    path = idx.save(tmp_path / "sub" / "index.faiss")
    assert sorted(p.name for p in path.parent.iterdir()) == ["index.faiss", "index.faiss.json"]
    meta = json.loads((tmp_path / "sub" / "index.faiss.json").read_text())
    assert meta["kind"] == "ivf" and meta["dim"] == 24 and meta["ntotal"] == len(x)
    back = FaissIndex.load(path, verify=True)
    assert (back.kind, back.ntotal, back.dim) == ("ivf", idx.ntotal, 24)
    np.testing.assert_array_equal(back.search(x[:20], 10), idx.search(x[:20], 10))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(InputError, match="checksum"):
        FaissIndex.load(path, verify=True)
    with pytest.raises(InputError, match="does not exist"):
        FaissIndex.load(tmp_path / "missing.faiss")


def test_bad_index_input():
    x = np.ones((4, 3), np.float32)
    with pytest.raises(InputError, match="unknown index kind"):
        build_index(x, np.arange(4), "lsh")
    with pytest.raises(InputError, match="empty"):
        build_index(np.zeros((0, 3), np.float32), np.zeros(0, np.int64))
    with pytest.raises(InputError, match="2-D"):
        build_index(np.ones(3, np.float32), np.arange(3))
    with pytest.raises(InputError, match="ids"):
        build_index(x, np.arange(5))
    with pytest.raises(InputError, match="NaN"):
        build_index(x * np.nan, np.arange(4))
    idx = build_index(x, np.arange(4))
    with pytest.raises(InputError, match="dimensions"):
        idx.search(np.ones(5, np.float32), 1)
    with pytest.raises(InputError, match="k must be"):
        idx.search(np.ones(3, np.float32), 0)
    with pytest.raises(InputError, match="dimensions"):
        idx.add(np.ones((2, 5), np.float32), np.arange(2))
    with pytest.raises(InputError, match="unknown index kind"):
        train_index(x, "pq")
