"""Training through nnU-Net v2 planning, preprocessing and our run-time trainer; bad input; slow Dice check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gliofit.cli import app
from gliofit.common.errors import InputError
from gliofit.segmentation.checkpoints import load_checkpoint, load_model, read_checkpoint, save_checkpoint
from gliofit.segmentation.nnunet_adapter import adapt_configuration, strides_for_patch
from gliofit.segmentation.phantoms import make_phantoms
from gliofit.segmentation.stunet import STUNet
from gliofit.segmentation.training import train
from gliofit.growth.atlas import load_atlas, resample_atlas


@pytest.fixture(scope="module")
def grid4():
    return resample_atlas(load_atlas(), 4.0)


def test_strides_and_plan_adaptation():
    # 16 -> 8 -> 4; 32 -> 16 -> 8 -> 4; 12 -> 6 (6 -> 3 would go below 4)
    assert strides_for_patch((16, 32, 12)) == [[2, 2, 2], [2, 2, 1], [1, 2, 1], [1, 1, 1], [1, 1, 1]]
    plans = {
        "configurations": {
            "3d_fullres": {
                "patch_size": [128, 160, 112],
                "batch_size": 2,
                "normalization_schemes": ["ZScoreNormalization"] * 4,
                "architecture": {
                    "arch_kwargs": {
                        "strides": [[1, 1, 1]] + [[2, 2, 2]] * 4 + [[2, 2, 1]],
                        "kernel_sizes": [[3, 3, 3]] * 6,
                    }
                },
            }
        }
    }
    out = adapt_configuration(plans, "base")
    assert out["configurations"]["3d_fullres"]["use_mask_for_norm"] == [True] * 4
    assert out["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["strides"] == [[1, 1, 1]] + [
        [2, 2, 2]
    ] * 4 + [[2, 2, 1]]
    with pytest.raises(InputError, match="not divisible"):
        adapt_configuration(
            {
                "configurations": {
                    "3d_fullres": {
                        "patch_size": [30, 32, 32],
                        "batch_size": 2,
                        "normalization_schemes": ["Z"],
                        "architecture": {
                            "arch_kwargs": {"strides": [[1, 1, 1]] + [[2, 2, 2]] * 3, "kernel_sizes": [[3, 3, 3]] * 4}
                        },
                    }
                }
            },
            "small",
        )


@pytest.mark.slow
def test_smoke_training_with_pretrained_stem(grid4, tmp_path):
    """Two phantoms at 4 mm, 2 iterations of STU-Net-S at a 16³ patch, fine-tuned from a 1-channel model."""
    data = tmp_path / "brats"
    make_phantoms(data, 2, seed=11, atlas=grid4)
    torch.manual_seed(0)
    pre_net = STUNet.from_variant("small", 1, 7)
    pre = save_checkpoint(pre_net, tmp_path / "pre.pth", variant="small")
    out = tmp_path / "model.pth"
    summary = train(
        data,
        "small",
        out=out,
        pretrained=pre,
        epochs=1,
        iterations_per_epoch=2,
        val_iterations_per_epoch=1,
        initial_lr=1e-9,
        patch_size=(16, 16, 16),
        num_threads=2,
    )
    assert summary["fold"] == "all" and summary["cases"] == 2 and len(summary["train_losses"]) == 1
    net, meta = load_model(out)
    assert meta["in_channels"] == 4 and meta["num_classes"] == 3 and meta["patch_size"] == [16, 16, 16]
    extra = read_checkpoint(out)[1]["extra"]
    assert extra["spacing_mm"] == [4.0, 4.0, 4.0]
    assert extra["nnunet"]["dataset_json"]["regions_class_order"] == [1, 2, 3]
    rebuilt = STUNet.from_variant("small", 4, 3, strides=meta["strides"])
    load_checkpoint(rebuilt, out)  # strict: every key and shape matches
    w = net.state_dict()
    p = pre_net.state_dict()
    stem = "conv_blocks_context.0.0.conv1.weight"
    assert w[stem].shape[1] == 4
    np.testing.assert_allclose(w[stem].sum(dim=1, keepdim=True), p[stem], rtol=1e-4, atol=1e-6)
    deep = "conv_blocks_context.3.0.conv2.weight"
    np.testing.assert_allclose(w[deep], p[deep], rtol=1e-4, atol=1e-6)  # lr 1e-9: pretrained weights kept
    x = torch.randn(1, 4, 16, 16, 16)
    assert net(x).shape == (1, 3, 16, 16, 16)


def test_train_bad_input(tmp_path, grid4):
    data = tmp_path / "brats"
    case = make_phantoms(data, 1, seed=2, atlas=grid4)[0]
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 truncated")
    exe = str(Path(sys.executable).with_name("gliofit"))
    res = subprocess.run(
        [exe, "seg", "train", str(data), "--variant", "small", "--pretrained", str(bad), "-o", str(tmp_path / "m.pth")],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "bad.pth" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    (case / f"{case.name}-t2f.nii.gz").unlink()
    r = CliRunner().invoke(app, ["seg", "train", str(data), "--variant", "small", "-o", str(tmp_path / "m.pth")])
    assert r.exit_code == 2 and f"{case.name}-t2f.nii.gz" in r.output and "missing flair" in r.output
    r = CliRunner().invoke(app, ["seg", "train", str(data), "--variant", "medium", "-o", str(tmp_path / "m.pth")])
    assert r.exit_code == 2 and "--variant" in r.output
    assert not (tmp_path / "m.pth").exists()


@pytest.mark.slow
def test_small_stunet_learns_phantoms(tmp_path):
    """STU-Net-S trained a few minutes on 4 mm phantoms reaches whole-tumour Dice >= 0.7 on held-out ones."""
    from gliofit.common.nifti import save_volume
    from gliofit.segmentation.metrics import evaluate_folders
    from gliofit.segmentation.predict import segment

    grid = resample_atlas(load_atlas(), 4.0)
    make_phantoms(tmp_path / "train", 12, seed=100, atlas=grid)
    test_cases = make_phantoms(tmp_path / "test", 3, seed=200, atlas=grid)
    model = tmp_path / "model.pth"
    train(
        tmp_path / "train",
        "small",
        out=model,
        epochs=4,
        iterations_per_epoch=20,
        val_iterations_per_epoch=1,
        initial_lr=1e-2,
        patch_size=(32, 32, 32),
        num_threads=2,
        fold="all",
    )
    pred = tmp_path / "pred"
    for case in test_cases:
        files = [case / f"{case.name}-{s}.nii.gz" for s in ("t1n", "t1c", "t2w", "t2f")]
        seg = segment(*files, model=model)
        labels, affine = seg if isinstance(seg, tuple) else (seg, grid.affine)
        save_volume(np.asarray(labels), affine, pred / f"{case.name}.nii.gz", dtype=np.uint8)
    rows, _ = evaluate_folders(pred, tmp_path / "test")
    wt = float(np.mean([r["WT_dice"] for r in rows]))
    (tmp_path / "dice.json").write_text(json.dumps(rows))
    assert wt >= 0.7, rows
