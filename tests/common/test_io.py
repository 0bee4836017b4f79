"""The one write protocol: complete or absent, ordinary permissions, nothing left behind."""

from __future__ import annotations

import os
import stat

import pytest

from gliofit.common.errors import InputError
from gliofit.common.io import atomic_directory, atomic_write, write_json


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_json({"x": 1}, target)
    write_json({"x": 2}, target)
    assert target.read_text() == '{\n  "x": 2\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_atomic_write_error_keeps_old_content(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_keeps_suffixes_and_follows_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "x.nii.gz") as tmp:
            assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
            tmp.write_bytes(b"1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.nii.gz").stat().st_mode) == 0o640


def test_atomic_write_refuses_a_directory(tmp_path):
    with pytest.raises(InputError, match="is a directory"), atomic_write(tmp_path):
        pass


def test_atomic_directory_swaps_whole_folder(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(final) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
    with atomic_directory(final) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
