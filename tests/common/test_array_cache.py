"""The user-cache array folders: round trip (copied or memory-mapped), key and checksum checks, pruning."""

from __future__ import annotations

import os

import numpy as np

from gliofit.common.array_cache import load_arrays, prune, save_arrays


def test_round_trip_key_and_damage(tmp_path):
    arrays = {"a": np.arange(12, dtype=np.int64).reshape(3, 4), "b": np.linspace(0, 1, 5, dtype=np.float32)}
    folder = tmp_path / "c" / "one"
    assert save_arrays(folder, arrays, {"n": 3}, ["x", "y"])
    for mmap in (False, True):
        got, meta = load_arrays(folder, {"n": 3}, mmap=mmap)
        assert meta == ["x", "y"] and set(got) == {"a", "b"}
        for k, v in arrays.items():
            np.testing.assert_array_equal(got[k], v)
            assert got[k].dtype == v.dtype and type(got[k]) is np.ndarray
        assert got["a"].flags.writeable is not mmap
    assert load_arrays(folder, {"n": 4}) is None  # written for another key
    raw = bytearray((folder / "b.npy").read_bytes())
    raw[-1] ^= 0x01
    (folder / "b.npy").write_bytes(bytes(raw))
    assert load_arrays(folder, {"n": 3}, mmap=True) is None
    assert load_arrays(tmp_path / "absent", {"n": 3}) is None
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_save_into_an_unwritable_place_is_refused_quietly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert not save_arrays(blocker / "sub", {"a": np.zeros(3)}, 1)


def test_prune_keeps_the_newest(tmp_path):
    for i in range(5):
        save_arrays(tmp_path / f"f{i}", {"a": np.full(2, i)}, i)
        os.utime(tmp_path / f"f{i}", ns=(i * 10**9, i * 10**9))
    prune(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f3", "f4"]


def test_a_checked_folder_is_trusted_until_a_file_changes(tmp_path, monkeypatch):
    from gliofit.common import array_cache, io

    folder = tmp_path / "one"
    assert save_arrays(folder, {"a": np.arange(1000, dtype=np.float32)}, "k")
    monkeypatch.setattr(io, "SETTLED_S", 0.0)  # ctime is now: no waiting two seconds in a test
    old = 10**18  # 2001
    os.utime(folder / "a.npy", ns=(old, old))
    assert load_arrays(folder, "k", mmap=True) is not None
    assert (folder / "verified.json").exists()

    def no_crc(*args):
        raise AssertionError("a vouched-for file was read to check it")

    with monkeypatch.context() as m:
        m.setattr(array_cache.zlib, "crc32", no_crc)
        got, _ = load_arrays(folder, "k", mmap=True)
        assert float(got["a"][999]) == 999.0
    raw = bytearray((folder / "a.npy").read_bytes())
    raw[-1] ^= 0x01
    (folder / "a.npy").write_bytes(bytes(raw))  # a write: mtime and ctime change, the record no longer fits
    assert load_arrays(folder, "k", mmap=True) is None


def test_files_just_written_are_not_vouched_for(tmp_path):
    folder = tmp_path / "one"
    assert save_arrays(folder, {"a": np.arange(10)}, "k")
    assert load_arrays(folder, "k") is not None
    assert not (folder / "verified.json").exists()
