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


def test_remembered_sha256_reads_a_file_again_only_after_it_changed(tmp_path, monkeypatch):
    import hashlib

    from gliofit.common import io

    monkeypatch.setenv("GLIOFIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(io, "SETTLED_S", 0.0)
    f = tmp_path / "index.faiss"
    f.write_bytes(b"a" * 5000)
    os.utime(f, ns=(10**18, 10**18))
    want = hashlib.sha256(b"a" * 5000).hexdigest()
    assert io.remembered_sha256(f) == want
    with monkeypatch.context() as m:
        m.setattr(io, "file_sha256", lambda p: "not read")
        assert io.remembered_sha256(f) == want  # remembered: not read again
    f.write_bytes(b"b" * 5000)  # same size, written again
    assert io.remembered_sha256(f) == hashlib.sha256(b"b" * 5000).hexdigest()
    other = tmp_path / "crafted"
    other.write_bytes(b"c" * 5000)
    os.utime(other, ns=(10**18, 10**18))
    os.replace(other, f)  # another file put in its place, same size and mtime
    assert io.remembered_sha256(f) == hashlib.sha256(b"c" * 5000).hexdigest()
