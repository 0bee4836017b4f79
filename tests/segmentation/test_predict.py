"""Prediction: sliding window vs direct forward and vs nnU-Net's predictor, labels, grids, bad input, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gliofit.cli import app
from gliofit.common.errors import InputError
from gliofit.common.labels import convert_labels
from gliofit.segmentation.checkpoints import save_checkpoint
from gliofit.segmentation.mri import normalise_nonzero
from gliofit.segmentation.predict import regions_to_labels, segment, sliding_window_logits
from gliofit.segmentation.stunet import STUNet

PATCH = (64, 64, 64)
SHAPE = (72, 60, 70)
AFFINE = np.array([[-1.0, 0, 0, 90], [0, 1.2, 0, -120], [0, 0, 0.9, -60], [0, 0, 0, 1]])


def tiny_net(in_channels: int = 4, seed: int = 0) -> STUNet:
    torch.manual_seed(seed)
    return STUNet(in_channels, 3, channels=(4, 8, 8, 8, 8, 8), blocks=1).eval()


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict:
    """Four modalities with a zero background, a brain ellipsoid and a bright lesion; a tiny model."""
    d = tmp_path_factory.mktemp("case")
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    lesion = ((grid - 0.2) ** 2).sum(0) < 0.05
    paths = {}
    for i, name in enumerate(("t1", "t1c", "t2", "flair")):
        img = (100 + 20 * i + 5 * rng.standard_normal(SHAPE) + 60 * lesion) * brain
        paths[name] = d / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(img.astype(np.float32), AFFINE), paths[name])
    model = save_checkpoint(tiny_net(), d / "tiny.pth", patch_size=PATCH)
    one_ch = save_checkpoint(tiny_net(1), d / "one.pth", patch_size=PATCH)
    return {"dir": d, "paths": paths, "model": model, "one": one_ch, "brain": brain}


def test_one_patch_equals_direct_forward() -> None:
    net = tiny_net(seed=1)
    x = torch.randn(4, *PATCH)
    with torch.no_grad():
        direct = net(x[None])[0]
    sw = sliding_window_logits(net, x, PATCH)
    assert torch.allclose(sw, direct, atol=1e-4)
    assert torch.equal(sw > 0, direct > 0) or ((sw > 0) != (direct > 0)).float().mean() < 1e-5


def test_bfloat16_keeps_float32_sums_and_the_clear_labels(case: dict) -> None:
    """bfloat16 autocast: float32 logits out, close to the float32 network's, the same sign wherever the
    float32 logit is clearly away from 0; an unknown precision is bad input."""
    net = tiny_net(seed=3)
    x = torch.randn(4, 90, 70, 64)
    full = sliding_window_logits(net, x, PATCH)
    half = sliding_window_logits(net, x, PATCH, autocast_dtype=torch.bfloat16)
    assert half.dtype == torch.float32 and half.shape == full.shape
    scale = float(full.abs().max())
    assert float((half - full).abs().max()) < 0.05 * scale
    sure = full.abs() > 0.05 * scale
    assert sure.float().mean() > 0.5 and torch.equal((half > 0)[sure], (full > 0)[sure])
    p = case["paths"]
    seg, _ = segment(p["t1"], p["t1c"], p["t2"], p["flair"], case["model"], precision="bfloat16")
    seg32, _ = segment(p["t1"], p["t1c"], p["t2"], p["flair"], case["model"])
    assert (seg == seg32).mean() > 0.99
    with pytest.raises(InputError, match="precision"):
        segment(p["t1"], p["t1c"], p["t2"], p["flair"], case["model"], precision="float8")


def test_bfloat16_without_cpu_support_warns(case: dict, monkeypatch) -> None:
    import gliofit.segmentation.predict as predict

    monkeypatch.setattr(predict, "_cpu_has_bfloat16", lambda: False)
    p = case["paths"]
    with pytest.warns(UserWarning, match="no bfloat16 instructions"):
        segment(p["t1"], p["t1c"], p["t2"], p["flair"], case["model"], precision="bfloat16")


@pytest.mark.slow  # nnU-Net's predictor set up and run beside ours
def test_matches_nnunet_predictor(tmp_path: Path) -> None:
    """Same network, same normalised array: our loop and nnU-Net's nnUNetPredictor agree."""
    from gliofit.segmentation.nnunet_inference import stock_predictor

    net = tiny_net(seed=2)
    x = torch.randn(4, 90, 70, 64)
    ours = sliding_window_logits(net, x, PATCH)
    stock = stock_predictor(net, PATCH).predict_logits_from_preprocessed_data(x).float()
    assert ours.shape == stock.shape
    inner = (slice(None), slice(12, -12), slice(12, -12), slice(12, -12))
    assert (ours[inner] - stock[inner]).abs().max() < 0.05  # stock accumulates in float16
    # near the volume's edges only tile corners cover a voxel; there the stock float16 product of a
    # subnormal Gaussian weight rounds logits to about +-0.5, never across zero when |logit| > 0.5
    sure = ours.abs() > 0.5
    assert torch.equal((ours > 0)[sure], (stock > 0)[sure])
    assert ((ours > 0) == (stock > 0)).float().mean() > 0.99


def test_regions_to_labels_rule() -> None:
    r = -np.ones((3, 5), dtype=np.float32)
    r[0, 1:] = 1  # whole tumour in voxels 1..4
    r[1, 2:] = 1  # core in 2..4
    r[2, 3] = 1  # enhancing in 3
    r[2, 0] = 1  # enhancing outside whole tumour still paints (nnU-Net's order)
    assert regions_to_labels(r).tolist() == [3, 2, 1, 3, 1]
    assert regions_to_labels(r, "brats2021").tolist() == [4, 2, 1, 4, 1]


def test_normalise_nonzero() -> None:
    data = np.zeros((2, 10, 10, 10), np.float32)
    data[:, 2:8, 2:8, 2:8] = np.random.default_rng(1).normal(50, 7, (2, 6, 6, 6))
    out = normalise_nonzero(data)
    inside = out[:, 2:8, 2:8, 2:8].reshape(2, -1)
    assert np.allclose(inside.mean(1), 0, atol=1e-5) and np.allclose(inside.std(1), 1, atol=1e-4)
    assert not out[:, 0].any()


def test_segment_on_input_grid_and_conventions(case: dict) -> None:
    p = case["paths"]
    seg, aff = segment(p["t1"], p["t1c"], p["t2"], p["flair"], case["model"])
    assert seg.shape == SHAPE and seg.dtype == np.uint8 and np.allclose(aff, AFFINE)
    assert set(np.unique(seg)) <= {0, 1, 2, 3}
    assert not seg[~case["brain"]][:10].any() and not seg[0].any()
    seg21, _ = segment(p["t1"], p["t1c"], p["t2"], p["flair"], case["model"], labels="brats2021")
    assert np.array_equal(seg21, convert_labels(seg, "brats2023", "brats2021"))
    arrays = [nib.load(p[k]).get_fdata() for k in ("t1", "t1c", "t2", "flair")]
    from gliofit.segmentation.checkpoints import load_model

    seg_arr, aff_arr = segment(*arrays, model=load_model(case["model"]), affine=AFFINE)
    assert np.array_equal(seg_arr, seg) and np.allclose(aff_arr, AFFINE)


def _bad_inputs(case: dict, tmp: Path) -> dict:
    p, d = case["paths"], tmp
    small = d / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.float32), AFFINE), small)
    moved = d / "moved.nii.gz"
    shifted = AFFINE.copy()
    shifted[0, 3] += 5
    nib.save(nib.Nifti1Image(nib.load(p["t2"]).get_fdata().astype(np.float32), shifted), moved)
    four_d = d / "fourd.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((*SHAPE, 2), np.float32), AFFINE), four_d)
    corrupt = d / "corrupt.pth"
    corrupt.write_bytes(case["model"].read_bytes()[:5000])
    return {
        "shape": ({"t2": small}, "small.nii.gz"),
        "affine": ({"t2": moved}, "moved.nii.gz"),
        "4d": ({"flair": four_d}, "fourd.nii.gz"),
        "missing": ({"t1c": d / "nope.nii.gz"}, "nope.nii.gz"),
        "channels": ({"model": case["one"]}, "one.pth"),
        "corrupt": ({"model": corrupt}, "corrupt.pth"),
    }


@pytest.mark.parametrize("kind", ["shape", "affine", "4d", "missing", "channels", "corrupt"])
def test_bad_input_names_the_file(case: dict, tmp_path: Path, kind: str) -> None:
    change, name = _bad_inputs(case, tmp_path)[kind]
    args = {**case["paths"], "model": case["model"], **change}
    with pytest.raises(InputError, match=name.replace(".", r"\.")):
        segment(args["t1"], args["t1c"], args["t2"], args["flair"], args["model"])
    runner = CliRunner()
    res = runner.invoke(app, ["segment", *[f"--{k}={v}" for k, v in args.items()], "-o", str(tmp_path / "o.nii.gz")])
    assert res.exit_code == 2, res.output
    assert name in res.output and not (tmp_path / "o.nii.gz").exists()


def test_cli_writes_labels(case: dict, tmp_path: Path) -> None:
    out = tmp_path / "seg.nii.gz"
    args = [f"--{k}={v}" for k, v in case["paths"].items()]
    res = CliRunner().invoke(
        app,
        [
            "segment",
            *args,
            "--model",
            str(case["model"]),
            "-o",
            str(out),
            "--quiet",
            "--labels",
            "brats2021",
            "--no-tta",
        ],
    )
    assert res.exit_code == 0, res.output
    img = nib.load(out)
    assert img.shape == SHAPE and np.allclose(img.affine, AFFINE) and img.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(img.dataobj))) <= {0, 1, 2, 4}


def test_console_script_exit_2(case: dict, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("gliofit")
    args = [f"--{k}={v}" for k, v in case["paths"].items()]
    res = subprocess.run(
        [str(exe), "segment", *args, "--model", str(case["one"]), "-o", str(tmp_path / "x.nii.gz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "one.pth" in lines[0] and "input channel" in lines[0]


def test_plan_transpose_and_spacing_warning(case: dict) -> None:
    """A model trained on transposed data sees the same transposed array; labels come back on the input grid."""
    p = case["paths"]
    net = tiny_net(seed=7)
    plain, _ = segment(p["t1"], p["t1c"], p["t2"], p["flair"], (net, {"patch_size": list(PATCH)}))
    meta = {"patch_size": list(PATCH), "extra": {"transpose_forward": [2, 0, 1], "spacing_mm": [1.0, 1.0, 1.0]}}
    with pytest.warns(UserWarning, match="does not resample"):
        seg, _ = segment(p["t1"], p["t1c"], p["t2"], p["flair"], (net, meta))
    assert seg.shape == SHAPE
    data = np.stack([nib.load(p[k]).get_fdata(dtype=np.float32) for k in ("t1", "t1c", "t2", "flair")])
    from gliofit.segmentation.mri import nonzero_bbox

    box = nonzero_bbox(data)
    x = normalise_nonzero(data[(slice(None), *box)]).transpose(0, 3, 2, 1).transpose(0, 3, 1, 2)
    expect = regions_to_labels(sliding_window_logits(net, torch.from_numpy(np.ascontiguousarray(x)), PATCH))
    assert np.array_equal(seg[box], expect.transpose(1, 2, 0).transpose(2, 1, 0))
    assert not np.array_equal(seg, plain) or not seg.any()


@pytest.mark.slow
def test_mirroring_matches_nnunet_predictor() -> None:
    """Test-time mirroring over the three axes: our average equals the stock predictor's."""
    from gliofit.segmentation.nnunet_inference import stock_predictor

    net = tiny_net(seed=4)
    x = torch.randn(4, *PATCH)
    ours = sliding_window_logits(net, x, PATCH, mirror_axes=(0, 1, 2))
    stock = stock_predictor(net, PATCH, mirror_axes=(0, 1, 2)).predict_logits_from_preprocessed_data(x).float()
    plain = sliding_window_logits(net, x, PATCH)
    inner = (slice(None), slice(12, -12), slice(12, -12), slice(12, -12))
    assert (ours[inner] - stock[inner]).abs().max() < 0.05
    assert (ours - plain).abs().max() > 0.05  # mirroring changed something


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_bad_input(case: dict, tmp_path: Path) -> None:
    args = [f"--{k}={v}" for k, v in case["paths"].items()]
    res = CliRunner().invoke(
        app, ["segment", *args, "--model", str(case["model"]), "-o", str(tmp_path / "s.nii.gz"), "--device", "cuda"]
    )
    assert res.exit_code == 2 and "no CUDA GPU" in res.output
