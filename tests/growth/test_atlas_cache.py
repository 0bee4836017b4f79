"""The ICBM152 atlas cache: same maps as nilearn's files, and a damaged cache is detected and replaced."""

from __future__ import annotations

import numpy as np

from gliofit.common.cache import CACHE_ENV
from gliofit.growth import atlas as atlas_mod


def test_cache_round_trip_and_damage_detected(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    fresh = atlas_mod.load_atlas()  # from nilearn, then written to the cache
    folder = atlas_mod._icbm152_cache()
    assert folder.parent == tmp_path  # $GLIOFIT_CACHE holds the atlas, as it holds the models and the demo
    assert (folder / "arrays.json").is_file()
    cached = atlas_mod.load_atlas()
    assert cached.checksum() == fresh.checksum() and np.array_equal(cached.t1, fresh.t1)
    raw = bytearray((folder / "wm.npy").read_bytes())
    raw[-1] ^= 0xFF  # one flipped byte in the data
    (folder / "wm.npy").write_bytes(bytes(raw))
    assert atlas_mod._read_cached(folder) is None
    again = atlas_mod.load_atlas()  # falls back to nilearn and rewrites the cache
    assert again.checksum() == fresh.checksum()
    assert atlas_mod._read_cached(folder).checksum() == fresh.checksum()
