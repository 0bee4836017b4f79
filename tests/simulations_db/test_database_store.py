"""Array records and the design, against independent computations."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from gliofit.simulations_db.design import Design, SnapshotRule, origin_weights
from gliofit.simulations_db.store import VISIBLE_LEVEL, decode, decode_visible, encode_density, threshold_level


def test_record_round_trip_and_visible_box():
    rng = np.random.default_rng(1)
    x, y, z = np.meshgrid(*(np.arange(30.0),) * 3, indexing="ij")
    u = np.exp(-((x - 12) ** 2 + (y - 15) ** 2 + (z - 17) ** 2) / 40.0) * (0.9 + 0.1 * rng.random((30,) * 3))
    enc = encode_density(u.astype(np.float32))
    q = np.rint(np.clip(u, 0, 1) * 255).astype(np.uint8)
    nz = np.argwhere(q > 0)
    assert enc.bbox == tuple(nz.min(0)) + tuple(nz.max(0) + 1)
    crop = decode(enc.payload, enc.bbox)
    x0, y0, z0, x1, y1, z1 = enc.bbox
    assert np.array_equal(crop, q[x0:x1, y0:y1, z0:z1]) and zlib.crc32(enc.payload) == enc.crc32
    box, vis = decode_visible(enc.payload, enc.bbox)
    vz = np.argwhere(q >= VISIBLE_LEVEL)
    assert box == tuple(vz.min(0)) + tuple(vz.max(0) + 1)
    assert np.array_equal(vis, q[box[0] : box[3], box[1] : box[4], box[2] : box[5]])
    # a mask is q >= level: the same voxels as the dequantised density >= threshold
    for t in (0.05, 0.25, 0.675):
        assert np.array_equal(q >= threshold_level(t), q / 255.0 >= t)
    assert encode_density(np.zeros((4, 4, 4), np.float32)) is None


def test_design_extends_the_same_sequence_and_seeds_in_tissue(make_box_atlas):
    grid = make_box_atlas((20, 22, 24), 2.0, pad=3, gm_fraction=0.3)
    d = Design(seed=3)
    small, large = d.parameters(grid, np.arange(8)), d.parameters(grid, np.arange(32))
    for k in small:
        assert np.array_equal(small[k], large[k][:8])
    assert not np.array_equal(large["D_mm2_per_day"], Design(seed=4).parameters(grid, np.arange(32))["D_mm2_per_day"])
    assert (large["D_mm2_per_day"] >= 0.02).all() and (large["D_mm2_per_day"] <= 1.5).all()
    assert (large["rho_per_day"] >= 0.002).all() and (large["rho_per_day"] <= 0.2).all()
    w = origin_weights(grid)
    ijk = np.rint(np.linalg.solve(grid.affine, np.c_[large["origin_mm"], np.ones(32)].T).T[:, :3]).astype(int)
    assert all(w[tuple(v)] > 0 for v in ijk)  # never outside tissue / in CSF


@pytest.mark.parametrize("D, rho", [(0.1, 0.02), (1.5, 0.2), (0.02, 0.002)])
def test_snapshot_times_follow_the_front_speed(D, rho):
    rule = SnapshotRule()
    t = rule.times(D, rho)
    assert (np.diff(t) > 0).all() and t.min() >= 50 and t.max() <= 1500
    r1 = np.cbrt(3 * 1000.0 / (4 * np.pi))  # radius of 1 cm3, mm
    assert t[0] == pytest.approx(np.clip(1 / rho + r1 / (2 * np.sqrt(D * rho)), 50, 1500), abs=0.01)
