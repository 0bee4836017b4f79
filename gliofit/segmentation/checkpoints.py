"""STU-Net checkpoints: safe reading of official and own files, strict loading by key, saving.

Layouts read
------------
- official nnU-Net v1 ``.model``: ``{"state_dict": {...}, ...}``
- official nnU-Net v2 ``.pth`` and our own: ``{"network_weights": {...}, ...}``;
  ours add ``"gliofit"``: a plain-JSON dict with everything needed to rebuild
  the network and run it (:func:`save_checkpoint`).

Files are unpickled with ``torch.load(weights_only=True)``: only tensors, plain
containers and a few numpy scalar types (which official training logs hold)
are accepted. Anything else - e.g. a pickle whose ``__reduce__`` calls
``os.system`` - is refused before it runs, with an :class:`InputError`.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gliofit.common.errors import InputError, check_file
from gliofit.common.io import atomic_write
from gliofit.segmentation.stunet import DEFAULT_PATCH_SIZE, STUNet

__all__ = ["read_checkpoint", "load_checkpoint", "save_checkpoint", "load_model", "FORMAT_VERSION", "STEM_KEYS"]

FORMAT_VERSION = 1
STEM_KEYS = ("conv_blocks_context.0.0.conv1.weight", "conv_blocks_context.0.0.conv3.weight")
HEAD_PREFIX = "seg_outputs."
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _numpy_safe_globals() -> list:
    """numpy pieces that official nnU-Net checkpoints pickle (np.float64 in their logs)."""
    scalar = np._core.multiarray.scalar
    out: list = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype]
    for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType"):
        out.append(getattr(np.dtypes, name))
    return out


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Safely read a checkpoint file.

    Returns
    -------
    weights : the network state dict (CPU tensors), wrapper prefixes
        (``module.``, ``_orig_mod.``) removed.
    meta : our ``"gliofit"`` metadata, or ``{}`` for official files.

    Raises
    ------
    InputError
        Missing, corrupt or truncated file, a pickle that is not plain weights
        (refused, never executed), or an unknown layout.
    """
    p = check_file(path, "checkpoint")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = " ".join(str(exc).split())
        found = re.search(r"GLOBAL ([\w.]+)", msg)
        if found:
            bad = found.group(1)
            raise InputError(
                f"{p}: refused to load: the checkpoint contains a pickled object that is not plain "
                f"weights ({bad}); it may run code. Only tensors and plain data are accepted"
            ) from None
        detail = msg.split("WeightsUnpickler error:")[-1].split("Check the documentation")[0].strip()
        raise InputError(
            f"{p}: cannot read checkpoint (corrupt or truncated, or not plain weights: {detail[:200]})"
        ) from None
    except Exception as exc:  # zip reader, EOF, struct errors ... all mean a damaged file
        msg = " ".join(str(exc).split())[:200]
        raise InputError(f"{p}: cannot read checkpoint (corrupt or truncated: {type(exc).__name__}: {msg})") from None
    return _unpack(obj, p)


def _unpack(obj: Any, p: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not isinstance(obj, Mapping):
        raise InputError(f"{p}: not a checkpoint: expected a dict, got {type(obj).__name__}")
    if "network_weights" in obj:
        weights = obj["network_weights"]
    elif "state_dict" in obj:
        weights = obj["state_dict"]
    else:
        raise InputError(
            f"{p}: unknown checkpoint layout: no 'network_weights' (nnU-Net v2) or "
            f"'state_dict' (nnU-Net v1) entry; keys are {sorted(map(str, obj))[:10]}"
        )
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise InputError(f"{p}: the checkpoint's weights are not a dict of tensors")
    clean = {}
    for k, v in weights.items():
        key = str(k)
        for pre in _WRAPPER_PREFIXES:
            key = key[len(pre) :] if key.startswith(pre) else key
        clean[key] = v
    meta = obj.get("gliofit", {})
    return clean, dict(meta) if isinstance(meta, Mapping) else {}


def _adapt_stem(weights: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor], p: Path) -> None:
    """Repeat one-channel stem kernels along the input-channel axis, divided by the channel count.

    Division keeps the stem's response to C identical channels equal to the
    one-channel response (exact), so the un-normalised 1x1x1 skip path keeps
    its scale; InstanceNorm after conv1 would remove a global factor anyway.
    """
    for key in STEM_KEYS:
        if key not in weights or key not in target:
            continue
        w, c = weights[key], target[key].shape[1]
        if w.shape[1] == c:
            continue
        if w.shape[1] != 1:
            raise InputError(f"{p}: adapt_stem needs a one-channel stem, {key} has {w.shape[1]} input channels")
        weights[key] = w.repeat(1, c, 1, 1, 1) / c


def _key_report(missing: Sequence[str], unexpected: Sequence[str], shapes: Sequence[str]) -> str:
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
            parts.append(f"{label} keys: {shown}")
    return "; ".join(parts)


def load_checkpoint(
    net: torch.nn.Module, path: str | Path, adapt_stem: bool = False, drop_heads: bool = False
) -> dict[str, Any]:
    """Load weights into ``net`` by key, strictly.

    Parameters
    ----------
    net : an :class:`STUNet` (or any module with the official key layout).
    path : official v1 ``.model``, official v2 ``.pth`` or our own checkpoint.
    adapt_stem : repeat a one-channel pretrained stem over ``net``'s input
        channels (weights divided by the channel count; see :func:`_adapt_stem`).
    drop_heads : skip ``seg_outputs.*`` (fine-tuning to other classes); the
        heads of ``net`` keep their initialisation.

    Returns
    -------
    dict : the checkpoint's gliofit metadata (``{}`` for official files).

    Raises
    ------
    InputError
        Unreadable or unsafe file, or keys/shapes that do not match ``net``
        (the message lists the missing and unexpected keys and names the file).
    """
    p = Path(path)
    weights, meta = read_checkpoint(p)
    _apply(net, weights, p, adapt_stem, drop_heads)
    return meta


def _apply(net: torch.nn.Module, weights: dict[str, torch.Tensor], p: Path, adapt_stem: bool, drop_heads: bool) -> None:
    """Check ``weights`` against ``net`` key by key and shape by shape, then copy them in."""
    target = net.state_dict()
    if drop_heads:
        weights = {k: v for k, v in weights.items() if not k.startswith(HEAD_PREFIX)}
        target = {k: v for k, v in target.items() if not k.startswith(HEAD_PREFIX)}
    if adapt_stem:
        _adapt_stem(weights, target, p)
    stem = STEM_KEYS[0]
    if stem in weights and stem in target and weights[stem].shape[1] != target[stem].shape[1]:
        raise InputError(
            f"{p}: checkpoint is for {weights[stem].shape[1]} input channel(s), the network has "
            f"{target[stem].shape[1]}"
            + (" (adapt_stem=True repeats a one-channel stem)" if weights[stem].shape[1] == 1 else "")
        )
    missing = [k for k in target if k not in weights]
    unexpected = [k for k in weights if k not in target]
    shapes = [
        f"{k} {tuple(weights[k].shape)} vs {tuple(target[k].shape)}"
        for k in target
        if k in weights and weights[k].shape != target[k].shape
    ]
    if missing or unexpected or shapes:
        raise InputError(f"{p}: checkpoint does not match the network: {_key_report(missing, unexpected, shapes)}")
    net.load_state_dict(weights, strict=not drop_heads)


def _architecture(net: STUNet) -> dict[str, Any]:
    stages = list(net.conv_blocks_context)
    return {
        "in_channels": net.in_channels,
        "num_classes": net.num_classes,
        "channels": [int(s[0].conv1.out_channels) for s in stages],
        "blocks": [len(s) for s in stages],
        "strides": [list(s) for s in net.strides],
        "kernel_sizes": [list(k) for k in net.kernel_sizes],
    }


def save_checkpoint(
    net: STUNet,
    path: str | Path,
    *,
    variant: str | None = None,
    patch_size: Sequence[int] = DEFAULT_PATCH_SIZE,
    output: str = "regions",
    regions: Sequence[str] = ("whole_tumor", "core", "enhancing"),
    label_convention: str = "brats2023",
    modalities: Sequence[str] = ("t1", "t1c", "t2", "flair"),
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``net`` in the nnU-Net v2 layout plus our metadata, atomically.

    The file holds ``network_weights`` (CPU tensors), ``trainer_name``,
    ``inference_allowed_mirroring_axes`` and ``gliofit``: a plain-JSON dict
    with ``format_version``, ``variant``, the architecture (``in_channels``,
    ``num_classes``, ``channels``, ``blocks``, ``strides``, ``kernel_sizes``),
    ``patch_size`` (voxels), ``output`` ("regions": sigmoid channels named by
    ``regions``; "labels": softmax over ``label_convention`` classes 0..n),
    ``label_convention``, ``modalities`` (input channel order),
    ``normalization`` ("zscore_nonzero") and ``extra`` (e.g. spacing_mm, epochs).
    """
    if output not in ("regions", "labels"):
        raise InputError(f"output must be 'regions' or 'labels', got {output!r}")
    meta = {
        "format_version": FORMAT_VERSION,
        "variant": variant,
        **_architecture(net),
        "patch_size": [int(s) for s in patch_size],
        "output": output,
        "regions": list(regions),
        "label_convention": label_convention,
        "modalities": list(modalities),
        "normalization": "zscore_nonzero",
        "extra": dict(extra or {}),
    }
    meta = json.loads(json.dumps(meta))  # plain JSON only (raises TypeError otherwise)
    payload = {
        "network_weights": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "trainer_name": "gliofit-stunet",
        "inference_allowed_mirroring_axes": [0, 1, 2],
        "gliofit": meta,
    }
    p = Path(path)
    with atomic_write(p) as tmp:
        torch.save(payload, tmp)
    return p


def _infer_architecture(weights: Mapping[str, torch.Tensor], p: Path) -> dict[str, Any]:
    """Architecture of an official file from its tensor shapes (strides assumed 2; patch 128^3)."""
    try:
        channels = [int(weights[f"conv_blocks_context.{d}.0.conv1.weight"].shape[0]) for d in range(6)]
        blocks = [
            len({k.split(".")[2] for k in weights if k.startswith(f"conv_blocks_context.{d}.")}) for d in range(6)
        ]
        in_ch = int(weights[STEM_KEYS[0]].shape[1])
        ncls = int(weights["seg_outputs.4.weight"].shape[0])
    except KeyError as exc:
        raise InputError(f"{p}: not an STU-Net checkpoint (no key {exc})") from None
    return {
        "in_channels": in_ch,
        "num_classes": ncls,
        "channels": channels,
        "blocks": blocks,
        "strides": None,
        "kernel_sizes": None,
        "patch_size": list(DEFAULT_PATCH_SIZE),
    }


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[STUNet, dict[str, Any]]:
    """Rebuild an :class:`STUNet` from a checkpoint and load it (eval mode, on ``device``).

    Our checkpoints carry their architecture; for official files it is read
    from the tensor shapes (default strides). Returns ``(net, meta)``.
    """
    p = Path(path)
    weights, meta = read_checkpoint(p)
    arch = meta if meta.get("format_version") else {**_infer_architecture(weights, p), **meta}
    try:
        net = STUNet(
            arch["in_channels"],
            arch["num_classes"],
            arch["channels"],
            arch["blocks"],
            arch.get("strides"),
            arch.get("kernel_sizes"),
        )
    except (KeyError, TypeError) as exc:
        raise InputError(f"{p}: checkpoint metadata is incomplete ({type(exc).__name__}: {exc})") from None
    _apply(net, weights, p, adapt_stem=False, drop_heads=False)
    meta = {
        "patch_size": list(DEFAULT_PATCH_SIZE),
        "output": "regions",
        "regions": ["whole_tumor", "core", "enhancing"],
        **arch,
    }
    return net.to(device).eval(), meta
