"""STU-Net architecture: parameter counts (analytic), official key layout, shapes."""

from __future__ import annotations

import pytest
import torch

from gliofit.common.errors import InputError
from gliofit.segmentation.stunet import VARIANTS, STUNet, normalise_strides

PUBLISHED_M = {"small": 14.60, "base": 58.26, "large": 440.30, "huge": 1457.33}
WIDTHS = {"small": (16, 256), "base": (32, 512), "large": (64, 1024), "huge": (96, 1536)}
BLOCKS = {"small": 1, "base": 1, "large": 2, "huge": 3}


def _block(cin: int, cout: int, project: bool, k: int = 27) -> int:
    """Parameters of one residual block: two k-convs with bias, two affine norms, optional 1x1 projection."""
    n = cin * cout * k + cout + 2 * cout + cout * cout * k + cout + 2 * cout
    return n + (cin * cout + cout if project else 0)


def _analytic_count(variant: str, cin: int, ncls: int) -> int:
    """Closed-form count from the paper's description (independent of the module code)."""
    lo, hi = WIDTHS[variant]
    dims = [lo, 2 * lo, 4 * lo, 8 * lo, hi, hi]
    nb = BLOCKS[variant]
    ins = [cin] + dims[:-1]
    total = sum(_block(ins[d], dims[d], True) + (nb - 1) * _block(dims[d], dims[d], False) for d in range(6))
    for u in range(5):
        c_hi, c_lo = dims[-1 - u], dims[-2 - u]
        total += c_hi * c_lo + c_lo  # upsample 1x1 conv
        total += _block(2 * c_lo, c_lo, True) + (nb - 1) * _block(c_lo, c_lo, False)
        total += c_lo * ncls + ncls  # deep-supervision head
    return total


@pytest.mark.parametrize("variant", sorted(PUBLISHED_M))
def test_parameter_counts_match_published(variant: str) -> None:
    analytic = _analytic_count(variant, 1, 105)
    assert round(analytic / 1e6, 2) == PUBLISHED_M[variant]
    with torch.device("meta"):
        net = STUNet.from_variant(variant, in_channels=1, num_classes=105)
    assert sum(p.numel() for p in net.parameters()) == analytic
    assert VARIANTS[variant].published_params_m == PUBLISHED_M[variant]


def test_official_key_layout() -> None:
    """Keys as in the public STU-Net code (uni-medical/STU-Net, nnunet/network_architecture/STUNet.py)."""
    with torch.device("meta"):
        base = STUNet.from_variant("base", 1, 105, deep_supervision=True)
        large = STUNet.from_variant("large", 1, 105)
    sd = base.state_dict()
    assert len(sd) == 130
    assert sd["conv_blocks_context.0.0.conv1.weight"].shape == (32, 1, 3, 3, 3)
    assert sd["conv_blocks_context.0.0.conv3.weight"].shape == (32, 1, 1, 1, 1)  # stem projection
    assert sd["conv_blocks_context.0.0.norm1.weight"].shape == (32,)
    assert sd["conv_blocks_context.5.0.conv1.weight"].shape == (512, 512, 3, 3, 3)
    assert sd["upsample_layers.0.conv.weight"].shape == (512, 512, 1, 1, 1)
    assert sd["upsample_layers.4.conv.weight"].shape == (32, 64, 1, 1, 1)
    assert sd["conv_blocks_localization.0.0.conv1.weight"].shape == (512, 1024, 3, 3, 3)
    assert sd["conv_blocks_localization.4.0.conv3.weight"].shape == (32, 64, 1, 1, 1)
    assert sd["seg_outputs.0.weight"].shape == (105, 512, 1, 1, 1)
    assert sd["seg_outputs.4.weight"].shape == (105, 32, 1, 1, 1)
    assert sd["seg_outputs.4.bias"].shape == (105,)
    lk = large.state_dict()
    assert len(lk) == 218
    assert "conv_blocks_context.0.1.conv2.weight" in lk and "conv_blocks_context.0.1.conv3.weight" not in lk
    assert "conv_blocks_localization.4.1.norm2.bias" in lk


def test_small_forward_shapes_and_deep_supervision() -> None:
    torch.manual_seed(0)
    net = STUNet.from_variant("small", in_channels=4, num_classes=3, deep_supervision=True)
    x = torch.randn(1, 4, 64, 64, 32)
    outs = net(x)
    assert [tuple(o.shape) for o in outs] == [(1, 3, 64 // f, 64 // f, 32 // f) for f in (1, 2, 4, 8, 16)]
    net.decoder.deep_supervision = False  # how nnU-Net v2 trainers toggle it
    net.eval()
    with torch.no_grad():
        single = net(x)
        assert torch.allclose(single, outs[0].detach(), atol=1e-5)


def test_plan_strides_are_truncated_and_padded() -> None:
    plan = {
        "architecture": {
            "arch_kwargs": {
                "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
                "kernel_sizes": [[3, 3, 3]] * 7,
            }
        }
    }
    with torch.device("meta"):
        net = STUNet.from_plan("base", plan, in_channels=4, num_classes=3)
    assert net.strides == [(2, 2, 2), (2, 2, 2), (2, 2, 1), (2, 2, 2), (2, 2, 2)]
    assert net.divisor == (32, 32, 16)
    assert normalise_strides([[2, 2, 2]] * 3) == [(2, 2, 2)] * 3 + [(1, 1, 1)] * 2
    net2 = STUNet.from_variant("small", 1, 2, strides=[[2, 2, 2], [2, 2, 2], [1, 1, 1]])
    net2.eval()
    with torch.no_grad():
        assert net2(torch.randn(1, 1, 16, 16, 8)).shape == (1, 2, 16, 16, 8)


@pytest.mark.parametrize("variant", ["base", "large", "huge"])
def test_big_variants_shapes_on_meta(variant: str) -> None:
    with torch.device("meta"):
        net = STUNet.from_variant(variant, in_channels=4, num_classes=3, deep_supervision=True)
        outs = net(torch.empty(2, 4, 128, 128, 128))
    assert [tuple(o.shape) for o in outs] == [(2, 3, 128 // f, 128 // f, 128 // f) for f in (1, 2, 4, 8, 16)]


def test_bad_construction_raises_input_error() -> None:
    with pytest.raises(InputError, match="variant"):
        STUNet.from_variant("giant", 1, 2)
    with pytest.raises(InputError, match="stem"):
        normalise_strides([[2, 2, 2]] * 6)
    with pytest.raises(InputError, match="odd"):
        STUNet.from_variant("small", 1, 2, kernel_sizes=[[2, 2, 2]] * 6)


def test_upsample_conv_first_equals_official_order() -> None:
    """Official order: nearest upsampling, then the 1x1x1 conv; ours convolves first (same function)."""
    torch.manual_seed(5)
    net = STUNet.from_variant("small", 1, 2, strides=[[2, 2, 1]] * 5)
    up = net.upsample_layers[1]
    x = torch.randn(2, up.conv.in_channels, 5, 4, 3)
    official = up.conv(torch.nn.functional.interpolate(x, scale_factor=(2.0, 2.0, 1.0), mode="nearest"))
    assert torch.allclose(up(x), official, atol=1e-5)
