"""Checkpoints: official v1/v2 layouts, strict keys, stem adaptation, heads, safety, own format."""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from gliofit.common.errors import InputError
from gliofit.segmentation.checkpoints import load_checkpoint, load_model, read_checkpoint, save_checkpoint
from gliofit.segmentation.stunet import STUNet

TINY = dict(channels=(4, 8, 8, 8, 8, 8), blocks=1)


def tiny(in_channels: int = 1, num_classes: int = 3, seed: int = 0) -> STUNet:
    torch.manual_seed(seed)
    net = STUNet(in_channels, num_classes, **TINY)
    with torch.no_grad():  # make norms and biases non-trivial so a wrong copy shows
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def _official_v1(net: STUNet, path: Path) -> Path:
    torch.save(
        {
            "epoch": 4000,
            "state_dict": OrderedDict(net.state_dict()),
            "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.99}]},
            "plot_stuff": ([np.float64(0.9)], [np.float64(0.8)], [], [np.float64(0.7)]),
            "best_stuff": (12, np.float64(0.75), np.float64(0.7), 10),
        },
        path,
    )
    return path


def _official_v2(net: STUNet, path: Path) -> Path:
    torch.save(
        {
            "network_weights": net.state_dict(),
            "optimizer_state": {"state": {}, "param_groups": []},
            "logging": {
                "mean_fg_dice": [np.float64(0.5)],
                "epoch_start_timestamps": [time.time()],
                "train_losses": [np.float32(-0.3)],
            },
            "_best_ema": np.float64(0.6),
            "current_epoch": 1000,
            "init_args": {
                "plans": {"name": "nnUNetPlans"},
                "configuration": "3d_fullres",
                "fold": 0,
                "device": torch.device("cpu"),
            },
            "trainer_name": "STUNetTrainer_base",
            "inference_allowed_mirroring_axes": (0, 1, 2),
        },
        path,
    )
    return path


def _same(a: torch.nn.Module, b: torch.nn.Module, skip: str = "@") -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith(skip))


@pytest.mark.parametrize("writer", [_official_v1, _official_v2])
def test_official_layouts_load_with_numpy_logs(tmp_path: Path, writer) -> None:
    src = tiny(seed=1)
    path = writer(src, tmp_path / "ckpt.model")
    dst = tiny(seed=2)
    assert not _same(src, dst)
    assert load_checkpoint(dst, path) == {}
    assert _same(src, dst)


def test_module_prefix_from_ddp_is_stripped(tmp_path: Path) -> None:
    src = tiny(seed=1)
    torch.save({"network_weights": {"module." + k: v for k, v in src.state_dict().items()}}, tmp_path / "m.pth")
    dst = tiny(seed=2)
    load_checkpoint(dst, tmp_path / "m.pth")
    assert _same(src, dst)


def test_strict_keys_error_lists_missing_and_unexpected(tmp_path: Path) -> None:
    sd = tiny().state_dict()
    del sd["upsample_layers.2.conv.weight"]
    sd["decoder.extra.weight"] = torch.zeros(2)
    torch.save({"network_weights": sd}, tmp_path / "bad.pth")
    with pytest.raises(InputError) as err:
        load_checkpoint(tiny(), tmp_path / "bad.pth")
    msg = str(err.value)
    assert "bad.pth" in msg and "missing keys: upsample_layers.2.conv.weight" in msg
    assert "unexpected keys: decoder.extra.weight" in msg


def test_drop_heads_for_other_classes(tmp_path: Path) -> None:
    src = tiny(num_classes=105, seed=1)
    path = _official_v2(src, tmp_path / "ts.pth")
    dst = tiny(num_classes=3, seed=2)
    heads_before = dst.seg_outputs.state_dict()
    with pytest.raises(InputError, match="shape mismatch keys: seg_outputs.0.weight"):
        load_checkpoint(dst, path)
    load_checkpoint(dst, path, drop_heads=True)
    assert _same(src, dst, skip="seg_outputs")
    assert all(torch.equal(v, dst.seg_outputs.state_dict()[k]) for k, v in heads_before.items())


def test_adapt_stem_keeps_output_on_identical_channels(tmp_path: Path) -> None:
    one = tiny(in_channels=1, seed=3)
    path = _official_v1(one, tmp_path / "one.model")
    four = tiny(in_channels=4, seed=4)
    with pytest.raises(InputError, match="1 input channel"):
        load_checkpoint(four, path)
    load_checkpoint(four, path, adapt_stem=True)
    w1 = one.state_dict()["conv_blocks_context.0.0.conv1.weight"]
    w4 = four.state_dict()["conv_blocks_context.0.0.conv1.weight"]
    assert torch.allclose(w4, w1.repeat(1, 4, 1, 1, 1) / 4)
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        y1, y4 = one(x), four(x.repeat(1, 4, 1, 1, 1))
    assert torch.allclose(y1, y4, atol=1e-4, rtol=1e-4)


def test_malicious_pickle_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"network_weights": tiny().state_dict(), "payload": Evil()}, path)
    with pytest.raises(InputError, match="refused") as err:
        load_checkpoint(tiny(), path)
    assert "evil.pth" in str(err.value) and "system" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_or_truncated_file(tmp_path: Path, damage: str) -> None:
    path = save_checkpoint(tiny(), tmp_path / "own.pth", variant=None)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    with pytest.raises(InputError, match="corrupt or truncated") as err:
        read_checkpoint(path)
    assert "own.pth" in str(err.value)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(InputError, match="expected a dict"):
        read_checkpoint(tmp_path / "list.pth")
    torch.save({"weights": {}}, tmp_path / "other.pth")
    with pytest.raises(InputError, match="unknown checkpoint layout"):
        read_checkpoint(tmp_path / "other.pth")
    with pytest.raises(InputError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pth")


def test_own_checkpoint_round_trip(tmp_path: Path) -> None:
    net = STUNet(4, 3, **TINY, strides=[[1, 1, 1], [2, 2, 2], [2, 2, 1], [2, 2, 2]])
    path = save_checkpoint(
        net, tmp_path / "sub" / "model.pth", patch_size=(32, 32, 16), extra={"spacing_mm": [1.0, 1.0, 1.0], "epochs": 3}
    )
    assert not [p for p in path.parent.iterdir() if p.name != "model.pth"]  # no temp file left
    raw = torch.load(path, weights_only=True)
    assert set(raw) >= {"network_weights", "gliofit"}
    json.dumps(raw["gliofit"])
    rebuilt, meta = load_model(path)
    assert meta["patch_size"] == [32, 32, 16] and meta["output"] == "regions"
    assert rebuilt.strides == net.strides and _same(net, rebuilt)
    x = torch.randn(1, 4, 32, 32, 16)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), rebuilt(x))


def test_load_model_infers_official_architecture(tmp_path: Path) -> None:
    src = STUNet(1, 5, channels=(4, 8, 8, 8, 8, 8), blocks=2)
    path = _official_v1(src, tmp_path / "official.model")
    net, meta = load_model(path)
    assert meta["channels"] == [4, 8, 8, 8, 8, 8] and meta["blocks"] == [2] * 6
    assert net.num_classes == 5 and _same(src, net)
