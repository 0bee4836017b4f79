"""``gliofit run``: one phantom patient folder end to end, the model path, and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pipelinehelpers import GLIOFIT

from gliofit.common.errors import InputError
from gliofit.common.labels import detect_convention, tumour_masks
from gliofit.pipelines.run import STAGES, run_patient


def _gliofit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([GLIOFIT, *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def one_run(tmp_path_factory, pipeline_db, phantom_cohort) -> tuple[Path, Path, dict]:
    """The first phantom through ``gliofit run`` (affine registration: SyN is tested in test_registration)."""
    out = tmp_path_factory.mktemp("run") / "OUT"
    proc = _gliofit("run", phantom_cohort[0], "--db", pipeline_db, "-o", out, "--registration", "affine")
    assert proc.returncode == 0, proc.stderr
    return phantom_cohort[0], out, json.loads(proc.stdout)


def test_run_writes_every_output_on_the_patient_grid(one_run) -> None:
    folder, out, summary = one_run
    names = {p.name for p in out.iterdir()}
    assert {
        "result.json",
        "segmentation.nii.gz",
        "tumor_density.nii.gz",
        "tumor_density_atlas.nii.gz",
        "target_standard.nii.gz",
        "target_model.nii.gz",
        "plan.json",
        "brain_mask.nii.gz",
        "transforms",
        "report.png",
        "report.html",
    } <= names
    assert not list(out.parent.glob(".OUT.part-*")), "temporary folder left behind"
    t1 = nib.load(next(folder.glob("*-t1n.nii.gz")))
    for name in ("tumor_density.nii.gz", "target_standard.nii.gz", "target_model.nii.gz", "segmentation.nii.gz"):
        img = nib.load(out / name)
        assert img.shape == t1.shape and np.allclose(img.affine, t1.affine, atol=1e-4), name
    dens = np.asarray(nib.load(out / "tumor_density.nii.gz").dataobj)
    assert 0.0 <= dens.min() and dens.max() <= 1.0 and dens.max() > 0.5
    std = np.asarray(nib.load(out / "target_standard.nii.gz").dataobj) > 0
    mod = np.asarray(nib.load(out / "target_model.nii.gz").dataobj) > 0
    assert std.sum() == mod.sum() > 0  # the same volume
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html


def test_run_result_json_follows_the_contract_and_fits(one_run) -> None:
    folder, out, summary = one_run
    res = json.loads((out / "result.json").read_text())
    assert res["space"] == "patient" and set(STAGES) <= set(res["timings_s"])
    assert res["timings_s"]["total"] >= res["timings_s"]["registration"] > 0
    total = f'<td>total</td><td class="num">{res["timings_s"]["total"]:.4g}</td>'  # report.html: the measured total
    assert total in (out / "report.html").read_text()
    for key in (
        "D_mm2_per_day",
        "rho_per_day",
        "T_days",
        "mu_D_mm",
        "mu_rho",
        "infiltration_length_mm",
        "velocity_mm_per_day",
        "origin_mm",
        "threshold_edema",
        "threshold_core",
    ):
        assert key in res["parameters"] and key in res["uncertainty"]
    assert res["patient"]["segmentation"] == "given"
    # A phantom grown by the same solver on the same atlas: the best match must fit it well, and the
    # recovered origin lie near the true one (the database is coarse: 6 mm).
    assert res["fit"]["dice_whole_tumor"] >= 0.6
    truth = json.loads((folder / "truth.json").read_text())
    assert np.linalg.norm(np.subtract(res["parameters"]["origin_mm"], truth["origin_mm"])) < 25.0
    assert summary["fit"] == res["fit"]


def test_density_follows_the_registration_back(one_run) -> None:
    """The density on the patient grid is high where the patient's tumour is (not shifted away)."""
    folder, out, _ = one_run
    seg = np.asarray(nib.load(out / "segmentation.nii.gz").dataobj)
    wt = tumour_masks(seg.astype(np.int64), detect_convention(seg))["whole_tumor"]
    dens = np.asarray(nib.load(out / "tumor_density.nii.gz").dataobj)
    assert dens[wt].mean() > 0.25 and dens[wt].mean() > 5 * dens[~wt].mean()


def _regions_everywhere_model(path: Path) -> Path:
    """A tiny STU-Net whose full-resolution head says 'whole tumour, no core' everywhere."""
    from gliofit.segmentation.checkpoints import save_checkpoint
    from gliofit.segmentation.stunet import STUNet

    torch.manual_seed(0)
    net = STUNet(4, 3, channels=(4, 8, 8, 8, 8, 8), blocks=1).eval()
    with torch.no_grad():
        head = net.seg_outputs[-1]
        head.weight.zero_()
        head.bias.copy_(torch.tensor([8.0, -8.0, -8.0]))
    return save_checkpoint(net, path, patch_size=(64, 64, 64))


def test_run_segments_with_the_model_when_no_segmentation_is_given(
    tmp_path, pipeline_db, phantom_cohort, atlas1, monkeypatch
) -> None:
    folder = tmp_path / phantom_cohort[1].name
    shutil.copytree(phantom_cohort[1], folder)
    next(folder.glob("*-seg.nii.gz")).unlink()
    model = _regions_everywhere_model(tmp_path / "model.pth")
    res = run_patient(folder, pipeline_db, tmp_path / "OUT", model=model, registration="none", atlas=atlas1)
    assert res["patient"]["segmentation"] == "model" and res["timings_s"]["segmentation"] > 0
    seg = np.asarray(nib.load(tmp_path / "OUT" / "segmentation.nii.gz").dataobj)
    t2f = np.asarray(nib.load(next(folder.glob("*-t2f.nii.gz"))).dataobj)
    assert set(np.unique(seg)) <= {0, 2}
    assert (seg[t2f > 0] == 2).all()  # edema wherever the brain is, as the model says
    with pytest.raises(InputError, match="unknown precision 'float8'"):
        run_patient(folder, pipeline_db, tmp_path / "OUT2", model=model, registration="none", precision="float8")
    assert not (tmp_path / "OUT2").exists()
    import gliofit.segmentation.predict as predict

    asked, segment = [], predict.segment

    def spy(*args, **kwargs):
        asked.append(kwargs["precision"])
        return segment(*args, **kwargs)

    monkeypatch.setattr(predict, "segment", spy)
    run_patient(folder, pipeline_db, tmp_path / "OUT3", model=model, registration="none", precision="bfloat16")
    assert asked == ["bfloat16"]  # the option reaches the segmentation


def _bad_folder(kind: str, src: Path, tmp: Path) -> Path:
    folder = tmp / (src.name if kind != "dotdot" else "x")
    shutil.copytree(src, folder)
    if kind == "missing":
        next(folder.glob("*-t2w.nii.gz")).unlink()
    elif kind == "mixed":
        f = next(folder.glob("*-t2w.nii.gz"))
        f.rename(folder / f"{folder.name}_t2.nii.gz")
    elif kind == "unreadable":
        next(folder.glob("*-t1n.nii.gz")).write_bytes(b"not a nifti file")
    elif kind == "dotdot":
        return folder / "sub" / ".."
    elif kind == "noseg":
        next(folder.glob("*-seg.nii.gz")).unlink()
    return folder


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("missing", "missing"),
        ("mixed", "mixed"),
        ("unreadable", "t1n"),
        ("dotdot", "not allowed"),
        ("outfile", "is a file"),
        ("noseg", "no --model given (`gliofit models` lists the segmentation models"),
        ("precision", "unknown --precision 'float8'; use one of ['auto', 'bfloat16']"),
    ],
)
def test_bad_input_exits_2_with_one_line(kind, needle, tmp_path, pipeline_db, phantom_cohort) -> None:
    folder = _bad_folder(kind, phantom_cohort[0], tmp_path)
    if kind == "dotdot":
        (folder.parent).mkdir(parents=True)
    out = tmp_path / "OUT"
    if kind == "outfile":
        out.write_text("a file")
    extra = ["--precision", "float8"] if kind == "precision" else []
    proc = _gliofit("run", folder, "--db", pipeline_db, "-o", out, "--registration", "none", *extra)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert kind == "outfile" or not out.exists()
