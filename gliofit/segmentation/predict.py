"""Brain-tumour segmentation with an STU-Net: nnU-Net's sliding-window prediction, BraTS labels out.

Pipeline of :func:`segment`: read the four modalities (same grid and affine),
crop to the nonzero bounding box, z-score each channel inside the brain
(nnU-Net's BraTS preprocessing), transpose to nnU-Net's (Z, Y, X) axis order
(what its NIfTI readers hand the network in training), predict by sliding
window (patch from the checkpoint, step 0.5, Gaussian weighting - the same
steps and weights as ``nnUNetPredictor``), turn the three sigmoid regions
(whole tumour, tumour core, enhancing; nnU-Net's region-based BraTS training)
into labels, and paste them back on the input grid (background outside the box).

The sliding window is our own loop over nnU-Net's ``compute_steps_for_sliding_window``
and ``compute_gaussian``: it accumulates in float32 (the stock predictor uses
float16) and skips the stock producer thread and per-tile copies; see
``benchmarks/segmentation.py`` for the comparison. Test-time mirroring (8
flips) is off on CPU by default because it costs 8x the time (minutes per case
on a few cores) for a small Dice gain; on CUDA it is on by default.

Precision (:data:`gliofit.segmentation.PRECISIONS`): ``"auto"`` runs the network as the stock predictor does (float16
autocast on CUDA, float32 on CPU: labels equal to the stock path's); ``"bfloat16"`` autocasts the
network to bfloat16 on either device, a CPU with AMX or AVX-512 BF16 included, where it runs the
convolutions faster (benchmarks/RESULTS.md); its labels differ from the float32 ones only where a region's logit is
near 0. Tiles are accumulated in float32 in every case.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gliofit.common.errors import InputError
from gliofit.common.labels import CONVENTIONS, convert_labels
from gliofit.segmentation import check_precision
from gliofit.segmentation.mri import ImageLike, load_modalities, nonzero_bbox, normalise_nonzero

__all__ = ["segment", "sliding_window_logits", "regions_to_labels", "resolve_device", "prepare_model", "autocast_dtype"]


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast type of a precision name (:data:`gliofit.segmentation.PRECISIONS`); None for ``auto``, the
    stock predictor's choice."""
    return None if check_precision(precision) == "auto" else getattr(torch, precision)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto": CUDA when present, else CPU; "cuda" without a GPU is an InputError."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda requested but no CUDA GPU is available")
    return dev


def _mirror_predict(net: torch.nn.Module, x: torch.Tensor, mirror_axes: Sequence[int] | None) -> torch.Tensor:
    """Network logits for one (1, C, *patch) tile, averaged over flips of ``mirror_axes`` (spatial 0..2)."""
    pred = net(x)
    if not mirror_axes:
        return pred
    axes = [a + 2 for a in mirror_axes]
    combos = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
    for c in combos:
        pred = pred + torch.flip(net(torch.flip(x, c)), c)
    return pred / (len(combos) + 1)


def _autocast(dev: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    if dtype is None:
        return torch.autocast("cuda", enabled=dev.type == "cuda")
    return torch.autocast(dev.type, dtype=dtype)


@torch.inference_mode()
def sliding_window_logits(
    net: torch.nn.Module,
    data: torch.Tensor,
    patch_size: Sequence[int],
    *,
    step: float = 0.5,
    gaussian: bool = True,
    mirror_axes: Sequence[int] | None = None,
    on_tile: Callable[[int, int], None] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Gaussian-weighted sliding-window logits, as ``nnUNetPredictor.predict_sliding_window_return_logits``.

    Parameters
    ----------
    net : the network, on the device where it should run (eval mode is set).
    data : (C, X, Y, Z) float32 normalised image (any device; the result lives there).
    patch_size : (3,) voxels per tile; smaller images are zero-padded to it.
    step : tile step as a fraction of the patch (nnU-Net: 0.5).
    gaussian : weight tiles by nnU-Net's Gaussian (sigma = patch/8).
    mirror_axes : spatial axes to flip for test-time augmentation, or None.
    on_tile : called as ``on_tile(done, total)`` after each tile.
    autocast_dtype : run the network under autocast to this type; None: float16 autocast on CUDA (as the
        stock predictor), none on CPU.

    Returns
    -------
    (K, X, Y, Z) float32 logits on the grid of ``data``.
    """
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window

    patch = tuple(int(p) for p in patch_size)
    dev = next(net.parameters()).device
    net.eval()
    x, unpad = pad_nd_image(data, patch, "constant", {"value": 0}, True, None)
    steps = compute_steps_for_sliding_window(tuple(x.shape[1:]), patch, step)
    starts = list(itertools.product(*steps))
    # the stock float16 weights, widened: identical tile weights, float32 sums
    weight = (
        compute_gaussian(
            patch, sigma_scale=1.0 / 8, value_scaling_factor=10, dtype=torch.float16, device=x.device
        ).float()
        if gaussian
        else torch.ones(patch, device=x.device)
    )
    logits = norm = None
    for i, start in enumerate(starts):
        sl = tuple(slice(s, s + p) for s, p in zip(start, patch))
        tile = x[(slice(None), *sl)][None].to(dev, torch.float32, non_blocking=True).contiguous()
        with _autocast(dev, autocast_dtype):
            pred = _mirror_predict(net, tile, mirror_axes)[0].float().to(x.device)
        if logits is None:
            logits = torch.zeros((pred.shape[0], *x.shape[1:]), dtype=torch.float32, device=x.device)
            norm = torch.zeros(x.shape[1:], dtype=torch.float32, device=x.device)
        logits[(slice(None), *sl)].addcmul_(pred, weight)
        norm[sl] += weight
        if on_tile is not None:
            on_tile(i + 1, len(starts))
    logits /= norm
    return logits[(slice(None), *unpad[1:])]


def regions_to_labels(region_logits: np.ndarray | torch.Tensor, labels: str = "brats2023") -> np.ndarray:
    """Three sigmoid regions (whole tumour, core, enhancing) -> BraTS labels.

    nnU-Net's rule: each region with probability > 0.5 (logit > 0) paints its
    label in the order whole tumour (edema), core (necrosis), enhancing, later
    regions overwriting earlier ones. ``region_logits`` is (3, ...); returns uint8.
    """
    if labels not in CONVENTIONS:
        raise InputError(f"unknown label convention {labels!r}; use one of {sorted(CONVENTIONS)}")
    conv = CONVENTIONS[labels]
    r = region_logits.cpu().numpy() if isinstance(region_logits, torch.Tensor) else np.asarray(region_logits)
    if r.shape[0] != 3:
        raise InputError(f"region output needs 3 channels (WT, TC, ET), got {r.shape[0]}")
    out = np.zeros(r.shape[1:], dtype=np.uint8)
    for value, channel in zip((conv.edema, conv.necrosis, conv.enhancing), r):
        out[channel > 0] = value
    return out


def _logits_to_labels(logits: torch.Tensor, meta: dict[str, Any], labels: str) -> np.ndarray:
    if meta.get("output", "regions") == "regions":
        return regions_to_labels(logits, labels)
    classes = torch.argmax(logits, dim=0).cpu().numpy().astype(np.uint8)  # "labels": softmax classes 0..3
    return convert_labels(classes, meta.get("label_convention", "brats2023"), labels)


def prepare_model(
    model: str | Path | tuple[torch.nn.Module, dict], device: torch.device, in_channels: int = 4
) -> tuple[torch.nn.Module, dict[str, Any], str]:
    """(net on ``device`` in eval mode, meta, source name) from a checkpoint path or a ``(net, meta)`` pair."""
    if isinstance(model, tuple):
        net, meta = model
        src = "model"
    else:
        from gliofit.segmentation.checkpoints import load_model

        net, meta = load_model(model)
        src = str(model)
    n_in = int(getattr(net, "in_channels", in_channels))
    if n_in != in_channels:
        raise InputError(
            f"{src}: checkpoint expects {n_in} input channel(s), segmentation needs {in_channels} (T1, T1c, T2, FLAIR)"
        )
    return net.to(device).eval(), dict(meta), src


def segment(
    t1: ImageLike,
    t1c: ImageLike,
    t2: ImageLike,
    flair: ImageLike,
    model: str | Path | tuple[torch.nn.Module, dict],
    *,
    device: str | torch.device | None = "cpu",
    tta: bool | None = None,
    labels: str = "brats2023",
    affine: np.ndarray | None = None,
    step: float = 0.5,
    progress: bool = False,
    precision: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Segment a brain tumour from four co-registered MRI modalities.

    Parameters
    ----------
    t1, t1c, t2, flair : NIfTI paths or (X, Y, Z) arrays on one grid.
    model : our checkpoint path (official STU-Net files work if they have 4
        input channels) or a ``(net, meta)`` pair; meta gives ``patch_size``
        (voxels, nnU-Net's Z, Y, X order) and ``output``.
    device : "cpu" (default), "cuda", or None/"auto" for CUDA when present.
    tta : test-time mirroring over the three axes (8x cost); None: on for
        CUDA, off for CPU.
    labels : output convention, "brats2023" (1 NETC, 2 SNFH, 3 ET) or "brats2021".
    affine : (4, 4) matrix for array inputs.
    step : sliding-window step as a fraction of the patch.
    progress : show a progress bar on stderr.
    precision : the network's arithmetic, one of :data:`gliofit.segmentation.PRECISIONS` (module docstring).

    Returns
    -------
    labels : (X, Y, Z) uint8 on the input's grid.
    affine : (4, 4) float64, the input's.
    """
    if labels not in CONVENTIONS:
        raise InputError(f"unknown label convention {labels!r}; use one of {sorted(CONVENTIONS)}")
    check_precision(precision)
    dev = resolve_device(device)
    if precision == "bfloat16" and dev.type == "cpu" and not _cpu_has_bfloat16():
        warnings.warn(
            "precision bfloat16: this CPU has no bfloat16 instructions (AMX or AVX-512 BF16), so it runs "
            "slower than float32; the default precision is faster here",
            stacklevel=2,
        )
    data, aff = load_modalities((t1, t1c, t2, flair), affine)
    net, meta, _ = prepare_model(model, dev)
    use_tta = dev.type == "cuda" if tta is None else bool(tta)
    perm = _network_axes(meta, aff)
    box = nonzero_bbox(data)
    x = normalise_nonzero(data[(slice(None), *box)]).transpose(0, *[p + 1 for p in perm])
    patch = meta.get("patch_size", (128, 128, 128))
    tensor = torch.from_numpy(np.ascontiguousarray(x)).to(dev)
    with _progress(progress) as on_tile:
        logits = sliding_window_logits(
            net,
            tensor,
            patch,
            step=step,
            mirror_axes=(0, 1, 2) if use_tta else None,
            on_tile=on_tile,
            autocast_dtype=autocast_dtype(precision),
        )
    out = np.zeros(data.shape[1:], dtype=np.uint8)
    out[box] = _logits_to_labels(logits, meta, labels).transpose(np.argsort(perm))
    return out, aff


def _cpu_has_bfloat16() -> bool:
    """Whether oneDNN runs bfloat16 convolutions natively on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _network_axes(meta: dict[str, Any], affine: np.ndarray) -> list[int]:
    """Permutation of the file's (X, Y, Z) axes into the network's order; warns on a spacing mismatch.

    nnU-Net's NIfTI readers hand training (Z, Y, X) (the nibabel array reversed),
    then permute by the plan's ``transpose_forward`` (``meta["extra"]``).
    """
    extra = meta.get("extra") or {}
    tf = [int(t) for t in extra.get("transpose_forward", (0, 1, 2))]
    if sorted(tf) != [0, 1, 2]:
        raise InputError(f"checkpoint transpose_forward must permute (0, 1, 2), got {tf}")
    perm = [(2, 1, 0)[t] for t in tf]
    want = extra.get("spacing_mm")
    if want is not None:
        have = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)[perm]
        if np.any(np.abs(have / np.asarray(want, float) - 1) > 0.1):
            warnings.warn(
                f"input voxel size {np.round(have, 3).tolist()} mm (network axis order) differs from the "
                f"training spacing {want} mm by more than 10 %; segment does not resample",
                stacklevel=3,
            )
    return perm


class _progress:
    """Context manager yielding an ``on_tile(done, total)`` callback drawing a progress bar (or None)."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar, self.task = enabled, None, None

    def __enter__(self) -> Callable[[int, int], None] | None:
        if not self.enabled:
            return None
        from gliofit.common.progress import progress_bar

        self.bar = progress_bar()
        self.bar.__enter__()

        def on_tile(done: int, total: int) -> None:
            if self.task is None:
                self.task = self.bar.add_task("segmenting (tiles)", total=total)
            self.bar.update(self.task, completed=done)

        return on_tile

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
