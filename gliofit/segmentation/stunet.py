"""STU-Net (Huang et al. 2023): a scalable residual U-Net, with the official checkpoint keys.

The module names reproduce the official STU-Net code (nnU-Net v1 ``.model`` and
v2 ``.pth`` checkpoints) so pretrained weights load by key:

- ``conv_blocks_context.{stage}.{block}.conv1|norm1|conv2|norm2|conv3`` - encoder,
  six stages; the first block of each stage carries the stride and a 1x1x1
  projection ``conv3`` on the skip path (also in the stride-1 stem).
- ``upsample_layers.{u}.conv`` - nearest-neighbour upsampling followed by a
  1x1x1 convolution (no transposed convolution, so weights transfer across tasks).
- ``conv_blocks_localization.{u}.{block}.*`` - decoder stages, coarse to fine.
- ``seg_outputs.{u}`` - 1x1x1 heads on the five decoder levels, coarse to fine
  (``seg_outputs.4`` is the full-resolution head).

A residual block is conv3^3 -> InstanceNorm(affine) -> LeakyReLU(0.01) -> conv3^3
-> InstanceNorm, plus the (projected) input, then LeakyReLU. The variants are
data (:data:`VARIANTS`), not subclasses.

Examples
--------
>>> import torch
>>> net = STUNet.from_variant("small", in_channels=4, num_classes=3)
>>> net(torch.zeros(1, 4, 64, 64, 64)).shape
torch.Size([1, 3, 64, 64, 64])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gliofit.common.errors import InputError

__all__ = ["STUNetVariant", "VARIANTS", "STUNet", "normalise_strides", "DEFAULT_PATCH_SIZE"]

N_STAGES = 6
N_POOL = N_STAGES - 1
DEFAULT_PATCH_SIZE = (128, 128, 128)
Triple = tuple[int, int, int]


@dataclass(frozen=True)
class STUNetVariant:
    """One row of the STU-Net size table.

    Attributes
    ----------
    name : "small", "base", "large" or "huge".
    channels : feature channels of the six encoder stages.
    blocks : residual blocks per stage (the same in encoder and decoder).
    published_params_m : parameter count in millions reported for 1 input
        channel and 105 classes (TotalSegmentator), for checks.
    """

    name: str
    channels: tuple[int, ...]
    blocks: int
    published_params_m: float


VARIANTS: dict[str, STUNetVariant] = {
    "small": STUNetVariant("small", (16, 32, 64, 128, 256, 256), 1, 14.60),
    "base": STUNetVariant("base", (32, 64, 128, 256, 512, 512), 1, 58.26),
    "large": STUNetVariant("large", (64, 128, 256, 512, 1024, 1024), 2, 440.30),
    "huge": STUNetVariant("huge", (96, 192, 384, 768, 1536, 1536), 3, 1457.33),
}


def _triple(v: int | Sequence[int], name: str) -> Triple:
    t = (int(v),) * 3 if isinstance(v, int) else tuple(int(x) for x in v)
    if len(t) != 3 or any(x < 1 for x in t):
        raise InputError(f"{name} must be 3 positive integers, got {v!r}")
    return t  # type: ignore[return-value]


def normalise_strides(strides: Sequence | None) -> list[Triple]:
    """The five downsampling strides of the encoder.

    Parameters
    ----------
    strides : None (default: stride 2 in every axis, five times), five
        per-pool strides, or an nnU-Net v2 plan's ``strides`` list whose first
        entry is the stem's ``[1, 1, 1]``. As in the official STU-Net trainers,
        more than five pooling steps are truncated to five and fewer are padded
        with ``[1, 1, 1]``.

    Returns
    -------
    list of five (sx, sy, sz) tuples.
    """
    if strides is None:
        return [(2, 2, 2)] * N_POOL
    s = [_triple(x, "strides") for x in strides]
    if len(s) == N_STAGES or (len(s) != N_POOL and s and s[0] == (1, 1, 1)):
        if s[0] != (1, 1, 1):
            raise InputError(f"strides: the stem stride must be (1, 1, 1), got {s[0]}")
        s = s[1:]
    s = s[:N_POOL]
    return s + [(1, 1, 1)] * (N_POOL - len(s))


def _kernels(kernel_sizes: Sequence | None) -> list[Triple]:
    if kernel_sizes is None:
        return [(3, 3, 3)] * N_STAGES
    k = [_triple(x, "kernel_sizes") for x in kernel_sizes][:N_STAGES]
    if any(v % 2 == 0 for t in k for v in t):
        raise InputError(f"kernel_sizes must be odd, got {kernel_sizes!r}")
    return k + [(3, 3, 3)] * (N_STAGES - len(k))


class BasicResBlock(nn.Module):
    """Residual block; ``conv3`` (1x1x1, strided) projects the skip path when present."""

    def __init__(self, cin: int, cout: int, kernel: Triple, stride: Triple = (1, 1, 1), project: bool = False):
        super().__init__()
        pad = tuple(k // 2 for k in kernel)
        self.conv1 = nn.Conv3d(cin, cout, kernel, stride=stride, padding=pad)
        self.norm1 = nn.InstanceNorm3d(cout, affine=True)
        self.act1 = nn.LeakyReLU(0.01, inplace=True)
        self.conv2 = nn.Conv3d(cout, cout, kernel, padding=pad)
        self.norm2 = nn.InstanceNorm3d(cout, affine=True)
        self.act2 = nn.LeakyReLU(0.01, inplace=True)
        self.conv3 = nn.Conv3d(cin, cout, 1, stride=stride) if project else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        y += self.conv3(x) if self.conv3 is not None else x  # in place, as the official block
        return self.act2(y)


class UpsampleNearest(nn.Module):
    """Nearest-neighbour upsampling by ``scale`` then a 1x1x1 convolution (key ``conv``)."""

    def __init__(self, cin: int, cout: int, scale: Triple):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, 1)
        self.scale = tuple(float(s) for s in scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a 1x1x1 conv commutes with nearest (replicating) upsampling: convolving first is the
        # same function (the official order is upsample, then conv) at 1/prod(scale) of the cost
        x = self.conv(x)
        if any(s != 1.0 for s in self.scale):
            x = nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest")
        return x


def _stage(cin: int, cout: int, n_blocks: int, kernel: Triple, stride: Triple) -> nn.Sequential:
    first = BasicResBlock(cin, cout, kernel, stride, project=True)
    return nn.Sequential(first, *[BasicResBlock(cout, cout, kernel) for _ in range(n_blocks - 1)])


class STUNet(nn.Module):
    """The STU-Net encoder-decoder.

    Parameters
    ----------
    in_channels : number of input images (4 for T1, T1c, T2, FLAIR).
    num_classes : output channels (3 sigmoid regions WT, TC, ET for BraTS).
    channels : six stage widths; blocks : residual blocks per stage.
    strides : see :func:`normalise_strides` (default five times stride 2).
    kernel_sizes : six per-stage kernel sizes (default 3x3x3).
    deep_supervision : if True, ``forward`` returns a list of logits, full
        resolution first (nnU-Net v2 order); else the full-resolution logits.

    Input (B, in_channels, X, Y, Z) float32, X/Y/Z divisible by the product of
    strides per axis; output (B, num_classes, X, Y, Z) logits.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int],
        blocks: int | Sequence[int],
        strides: Sequence | None = None,
        kernel_sizes: Sequence | None = None,
        deep_supervision: bool = False,
    ):
        super().__init__()
        if int(in_channels) < 1 or int(num_classes) < 1:
            raise InputError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        dims = [int(c) for c in channels]
        depth = [int(blocks)] * N_STAGES if isinstance(blocks, int) else [int(b) for b in blocks]
        if len(dims) != N_STAGES or len(depth) != N_STAGES or min(depth) < 1:
            raise InputError(f"STU-Net needs six stage widths and block counts, got {channels!r}, {blocks!r}")
        self.in_channels, self.num_classes = int(in_channels), int(num_classes)
        self.strides = normalise_strides(strides)
        self.kernel_sizes = _kernels(kernel_sizes)
        self.deep_supervision = bool(deep_supervision)
        stage_strides = [(1, 1, 1)] + self.strides
        cins = [self.in_channels] + dims[:-1]
        self.conv_blocks_context = nn.ModuleList(
            _stage(cins[d], dims[d], depth[d], self.kernel_sizes[d], stage_strides[d]) for d in range(N_STAGES)
        )
        self.upsample_layers = nn.ModuleList(
            UpsampleNearest(dims[-1 - u], dims[-2 - u], self.strides[-1 - u]) for u in range(N_POOL)
        )
        self.conv_blocks_localization = nn.ModuleList(
            _stage(2 * dims[-2 - u], dims[-2 - u], depth[-2 - u], self.kernel_sizes[-2 - u], (1, 1, 1))
            for u in range(N_POOL)
        )
        self.seg_outputs = nn.ModuleList(nn.Conv3d(dims[-2 - u], self.num_classes, 1) for u in range(N_POOL))
        self.apply(_init_he)

    @classmethod
    def from_variant(
        cls,
        variant: str | STUNetVariant,
        in_channels: int,
        num_classes: int,
        strides: Sequence | None = None,
        kernel_sizes: Sequence | None = None,
        deep_supervision: bool = False,
    ) -> STUNet:
        """Build one of :data:`VARIANTS` (``"small"``, ``"base"``, ``"large"``, ``"huge"``)."""
        v = variant if isinstance(variant, STUNetVariant) else VARIANTS.get(str(variant))
        if v is None:
            raise InputError(f"unknown STU-Net variant {variant!r}; use one of {sorted(VARIANTS)}")
        return cls(in_channels, num_classes, v.channels, v.blocks, strides, kernel_sizes, deep_supervision)

    @classmethod
    def from_plan(
        cls,
        variant: str | STUNetVariant,
        configuration: object,
        in_channels: int,
        num_classes: int,
        deep_supervision: bool = False,
    ) -> STUNet:
        """Build from an nnU-Net v2 configuration (a ``ConfigurationManager`` or its plan dict).

        Uses the plan's pooling strides (``pool_op_kernel_sizes``, or ``strides``
        under ``architecture.arch_kwargs``) and ``conv_kernel_sizes``; see
        :func:`normalise_strides` for the five-pool rule.
        """
        cfg = getattr(configuration, "configuration", configuration)
        if not isinstance(cfg, dict):
            raise InputError("from_plan needs an nnU-Net configuration dict or ConfigurationManager")
        arch = cfg.get("architecture", {}).get("arch_kwargs", {})
        strides = arch.get("strides", cfg.get("pool_op_kernel_sizes"))
        kernels = arch.get("kernel_sizes", cfg.get("conv_kernel_sizes"))
        return cls.from_variant(variant, in_channels, num_classes, strides, kernels, deep_supervision)

    @property
    def decoder(self) -> STUNet:
        """nnU-Net v2 trainers toggle ``network.decoder.deep_supervision``; here that is this module."""
        return self

    @property
    def divisor(self) -> Triple:
        """Patch sizes must be multiples of this per axis (product of the strides)."""
        out = [1, 1, 1]
        for s in self.strides:
            out = [o * v for o, v in zip(out, s)]
        return tuple(out)  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        for stage in self.conv_blocks_context[:-1]:
            x = stage(x)
            skips.append(x)
        x = self.conv_blocks_context[-1](x)
        outputs = []
        for u in range(N_POOL):
            x = torch.cat((self.upsample_layers[u](x), skips[-1 - u]), dim=1)
            x = self.conv_blocks_localization[u](x)
            if self.deep_supervision or u == N_POOL - 1:
                outputs.append(self.seg_outputs[u](x))
        return outputs[::-1] if self.deep_supervision else outputs[-1]


def _init_he(module: nn.Module) -> None:
    """He (Kaiming) normal init with LeakyReLU slope 1e-2 for convolutions, zero biases (as nnU-Net)."""
    if isinstance(module, nn.Conv3d):
        if module.weight.device.type != "meta":
            nn.init.kaiming_normal_(module.weight, a=1e-2)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
