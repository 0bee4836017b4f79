"""segmentation: STU-Net, checkpoints, sliding-window prediction (torch imported lazily)."""

from __future__ import annotations

import importlib
from typing import Any

from gliofit.common.errors import InputError

__all__ = ["STUNet", "VARIANTS", "PRECISIONS", "check_precision", "load_checkpoint", "save_checkpoint", "segment"]

PRECISIONS = ("auto", "bfloat16")
"""The segmentation network's arithmetic: ``auto`` as the stock nnU-Net predictor (float16 autocast on CUDA,
float32 on the CPU), ``bfloat16`` under bfloat16 autocast on either device."""


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else an :class:`InputError` naming it."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use one of {list(PRECISIONS)}", parameter="precision")
    return precision


_LAZY = {
    "STUNet": "gliofit.segmentation.stunet",
    "VARIANTS": "gliofit.segmentation.stunet",
    "load_checkpoint": "gliofit.segmentation.checkpoints",
    "save_checkpoint": "gliofit.segmentation.checkpoints",
    "segment": "gliofit.segmentation.predict",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
