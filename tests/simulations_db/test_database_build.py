"""Building a database on SQLite: build, build again, extend, verify, corrupt, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from dbhelpers import GLIOFIT, RESOLUTION_MM, RULE, assert_same_content, cli_build_args, content, shard_files
from typer.testing import CliRunner

from gliofit.cli import app
from gliofit.simulations_db.build import build_database
from gliofit.simulations_db.database import open_database
from gliofit.simulations_db.manifest import MANIFEST_NAME
from gliofit.simulations_db.verify import verify_database

runner = CliRunner()


@pytest.fixture(scope="module")
def db20(tmp_path_factory):
    """A 20-simulation database at 6 mm (K = 4 snapshots up to 300 days), built in this process."""
    db = tmp_path_factory.mktemp("db") / "DB"
    report = build_database(db, 20, resolution_mm=RESOLUTION_MM, seed=0, workers=1, snapshots=RULE, progress=False)
    return db, report


def test_build_20_simulations(db20):
    db, report = db20
    assert report["simulations"] == 20 and report["new"]["done"] == 20 and report["new"]["failed"] == 0
    d = open_database(db)
    info = d.info()
    assert info["format_version"] == 1 and info["resolution_mm"] == RESOLUTION_MM
    assert info["simulations"] == 20 and info["entries"] == len(d.entries["id"]) > 20
    assert info["index"]["entries"] == info["entries"] and info["index"]["kind"] == "flat"
    assert info["thresholds"] == {"edema": 0.25, "core": 0.675}
    e = d.entries
    # entry ids are design index x K + snapshot; every stored snapshot is non-empty and not over 400 cm3
    assert np.array_equal(e["id"], e["simulation_id"] * RULE.count + e["snapshot"])
    assert (e["wt_voxels"] > 0).all() and (e["wt_cm3"] <= RULE.max_store_cm3).all()
    assert np.allclose(e["mu_D_mm"], np.sqrt(e["D_mm2_per_day"] * e["T_days"]))
    # the stored arrays re-create the SQL volumes, and densities decode into [0, 1]
    masks = d.read_masks(e["id"], 0.25)
    assert [int(m.sum()) for _, m in masks] == e["wt_voxels"].tolist()
    u = d.density(int(e["id"][0]))
    assert u.shape == d.manifest.grid_shape and 0 < u.max() <= 1.0
    d.close()
    assert verify_database(db) == []


def test_build_again_changes_nothing(db20):
    db, _ = db20
    before, files = content(db), shard_files(db)
    sql_bytes_before = json.loads(
        subprocess.run([GLIOFIT, "db", "info", str(db)], capture_output=True, check=True, text=True).stdout
    )
    r = subprocess.run([GLIOFIT, *cli_build_args(db, 20)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["new"]["done"] == 0
    assert_same_content(before, content(db))
    assert shard_files(db) == files
    info = json.loads(
        subprocess.run([GLIOFIT, "db", "info", str(db)], capture_output=True, check=True, text=True).stdout
    )
    assert info["index"]["version"] == sql_bytes_before["index"]["version"]  # no re-index either


def test_extend_to_30_adds_exactly_10(db20, tmp_path):
    src, _ = db20
    db = tmp_path / "DB"
    shutil.copytree(src, db)
    before = content(db)
    result = runner.invoke(app, cli_build_args(db, 30, "--workers", "1"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["new"]["done"] + json.loads(result.stdout)["new"]["failed"] == 10
    after = content(db)
    assert [r[0] for r in after["simulations"]] == list(range(30))
    old = {k: v for k, v in after["entries"].items() if k // RULE.count < 20}
    assert old == before["entries"]  # the first 20 are untouched
    assert len(after["entries"]) > len(before["entries"])
    info = open_database(db).info()
    assert info["simulations"] == 30 and info["index"]["entries"] == info["entries"]
    assert runner.invoke(app, ["db", "verify", str(db)]).exit_code == 0


def test_streamed_rebuild_indexes_every_entry_once(db20, tmp_path):
    """Features read in batches of 7 rows give the index an exact flat index over all of them gives."""
    from gliofit.simulations_db.index import FaissIndex, build_index
    from gliofit.simulations_db.reindex import _engine, load_features, rebuild_index

    db = tmp_path / "DB"
    shutil.copytree(db20[0], db)
    report = rebuild_index(db, "flat", batch=7)
    ids, feats = load_features(_engine(db, None))
    assert len(ids) > 3 * 7 and report["entries"] == len(ids)
    index = FaissIndex.load(db / report["path"], verify=True)
    assert np.array_equal(np.sort(index.ids()), ids)
    reference = build_index(feats, ids, "flat")
    assert np.array_equal(index.search(feats[:5], 10), reference.search(feats[:5], 10))
    assert verify_database(db) == []


def test_an_index_replaced_while_it_is_opened_gives_the_newer_one(db20, tmp_path, monkeypatch):
    """A rebuild that commits a newer index and removes the old files between a reader's SQL lookup and its
    file open: the reader opens the newer index instead of failing; a missing index that was not replaced
    is still an error naming the file."""
    from gliofit.common.errors import InputError
    from gliofit.simulations_db.index import FaissIndex
    from gliofit.simulations_db.reindex import rebuild_index

    db = tmp_path / "DB"
    shutil.copytree(db20[0], db)
    first = rebuild_index(db, "flat")
    load, calls = FaissIndex.load, []

    def racing_load(path, **kwargs):
        calls.append(Path(path).name)
        if len(calls) == 1:
            rebuild_index(db, "flat")  # the newer version lands and the file just looked up goes
        return load(path, **kwargs)

    monkeypatch.setattr(FaissIndex, "load", staticmethod(racing_load))
    d = open_database(db)
    assert d.index.ntotal == first["entries"]
    assert calls == [Path(first["path"]).name, f"index-v{first['version'] + 1}.faiss"]
    d.close()
    monkeypatch.setattr(FaissIndex, "load", load)
    newest = open_database(db)
    (db / newest.index_row()["path"]).with_suffix(".faiss.json").unlink()
    with pytest.raises(InputError, match=r"\.faiss\.json: FAISS index file does not exist"):
        newest.index  # noqa: B018
    newest.close()


def test_corrupted_array_fails_verify_naming_it(db20, tmp_path):
    src, _ = db20
    db = tmp_path / "DB"
    shutil.copytree(src, db)
    d = open_database(db)
    e = d.entries
    r = int(np.argmax(e["length"]))
    victim, shard, offset = int(e["id"][r]), d.shards[e["shard"][r]], int(e["offset"][r])
    d.close()
    with open(db / "arrays" / shard, "r+b") as f:
        f.seek(offset + int(e["length"][r]) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    problems = verify_database(db)
    assert len(problems) == 1 and f"entry {victim} " in problems[0] and shard in problems[0]
    result = runner.invoke(app, ["db", "verify", str(db)])
    assert result.exit_code == 1 and f"entry {victim} " in result.stdout


def test_verify_names_a_stale_index_and_a_half_written_shard(db20, tmp_path):
    src, _ = db20
    db = tmp_path / "DB"
    shutil.copytree(src, db)
    (db / "arrays" / ("ab" * 16 + ".bin.tmp")).write_bytes(zlib.compress(b"half"))
    idx = open_database(db).index_row()
    (db / idx["path"]).write_bytes(b"not an index")
    problems = verify_database(db)
    assert any("ab" * 16 + ".bin.tmp" in p and "half-written" in p for p in problems)
    assert any(idx["path"] in p and "checksum" in p for p in problems)


def _one_line_exit_2(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gliofit: error:")
    return lines[0]


def test_bad_input_exits_2_with_one_line(db20, tmp_path):
    src, _ = db20
    not_db = tmp_path / "notdb"
    not_db.mkdir()
    (not_db / "notes.txt").write_text("hello")
    for cmd in (["db", "info", str(not_db)], ["db", "verify", str(not_db)], ["db", "index", str(not_db)]):
        assert str(not_db) in _one_line_exit_2(runner.invoke(app, cmd))
    assert "not a gliofit database" in _one_line_exit_2(runner.invoke(app, cli_build_args(not_db, 3)))
    newer = tmp_path / "newer"
    shutil.copytree(src, newer)
    m = json.loads((newer / MANIFEST_NAME).read_text())
    m["format_version"] = 99
    (newer / MANIFEST_NAME).write_text(json.dumps(m))
    line = _one_line_exit_2(runner.invoke(app, ["db", "info", str(newer)]))
    assert "newer" in line and MANIFEST_NAME in line
    fresh = tmp_path / "fresh"
    line = _one_line_exit_2(
        runner.invoke(app, cli_build_args(fresh, 3, "--database-url", "postgresql+psycopg://postgres@127.0.0.1:1/none"))
    )
    assert "does not answer" in line and not fresh.exists()
    for n in ("0", "-5"):
        _one_line_exit_2(runner.invoke(app, ["db", "build", str(fresh), "--simulations", n]))
    assert not fresh.exists()
    line = _one_line_exit_2(runner.invoke(app, cli_build_args(src, 20)[:-1] + ["--seed", "7", "--no-progress"]))
    assert "seed" in line


def test_bad_input_via_console_script(tmp_path):
    r = subprocess.run([GLIOFIT, "db", "info", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and str(tmp_path) in r.stderr
