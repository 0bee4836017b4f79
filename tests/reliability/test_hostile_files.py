"""Crafted files around the images: symlinks out of a patient folder, control characters in names, a
checkpoint whose pickle runs code, a FAISS index or array shard replaced: each refused in one line."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from faulthelpers import gliofit, one_line_error
from hostile import code_running_checkpoint

from gliofit.common.errors import InputError
from gliofit.pipelines.patient import find_patient
from gliofit.simulations_db.database import open_database


def _patient_copy(phantom_cohort, dst):
    src = sorted(phantom_cohort.iterdir())[0]
    return shutil.copytree(src, dst / src.name)


def test_symlink_leading_out_of_the_patient_folder_is_refused(phantom_cohort, tmp_path):
    patient = _patient_copy(phantom_cohort, tmp_path)
    t1 = next(patient.glob("*-t1n.nii.gz"))
    outside = tmp_path / "elsewhere.nii.gz"
    shutil.move(t1, outside)
    t1.symlink_to(outside)
    with pytest.raises(InputError, match="symbolic link .* outside the patient folder"):
        find_patient(patient)
    t1.unlink()
    inside = patient / "store" / "t1.nii.gz"
    inside.parent.mkdir()
    shutil.move(outside, inside)
    t1.symlink_to(inside)  # a link inside the folder is fine
    assert find_patient(patient).images[0] == t1


@pytest.mark.parametrize("name", ["Pat\nient", "Pat\x1b[2Jient", "Pat\u202eient"])
def test_control_characters_in_a_patient_name_are_refused(phantom_cohort, tmp_path, name):
    src = sorted(phantom_cohort.iterdir())[0]
    patient = tmp_path / name
    patient.mkdir()
    for f in src.iterdir():
        shutil.copy(f, patient / f.name.replace(src.name, name))
    with pytest.raises(InputError, match="control characters"):
        find_patient(patient)


def test_checkpoint_whose_pickle_runs_code_is_refused_before_it_runs(tmp_path):
    from gliofit.segmentation.checkpoints import read_checkpoint

    marker = tmp_path / "pwned"
    ckpt = code_running_checkpoint(tmp_path / "model.pth", marker)
    with pytest.raises(InputError, match=str(ckpt)):
        read_checkpoint(ckpt)
    assert not marker.exists()


def _replace_with_crafted_bytes(path) -> None:
    n = path.stat().st_size
    path.write_bytes(path.read_bytes()[:64] + np.random.default_rng(0).bytes(n - 64))  # header kept, body crafted


def test_replaced_faiss_index_is_caught_by_its_sql_checksum(tiny_db, tiny_seg, tmp_path):
    db = shutil.copytree(tiny_db, tmp_path / "DB")
    index_file = next((db / "index").glob("index-v*.faiss"))
    _replace_with_crafted_bytes(index_file)
    d = open_database(db)
    try:
        with pytest.raises(InputError, match="does not match its checksum in SQL"):
            d.index  # noqa: B018
    finally:
        d.close()
    out = tmp_path / "OUT"
    r = gliofit("infer", "--db", str(db), "--seg", str(tiny_seg), "--in-atlas-space", "--no-refine", "-o", str(out))
    assert r.returncode == 2 and str(index_file) in one_line_error(r), r.stderr
    assert not out.exists()


def test_replaced_array_shard_is_caught_by_its_sql_checksum(tiny_db, tmp_path):
    db = shutil.copytree(tiny_db, tmp_path / "DB")
    shard = max((db / "arrays").iterdir(), key=lambda p: p.stat().st_size)
    _replace_with_crafted_bytes(shard)
    d = open_database(db)
    try:
        with pytest.raises(InputError, match=f"{shard.name}: entry .* does not match its checksum in SQL"):
            d.read_entries(d.entries["id"])
        with pytest.raises(InputError, match="does not match its checksum"):
            d.read_visible(d.entries["id"])
    finally:
        d.close()
