"""segmentation: STU-Net, checkpoints, sliding-window prediction (torch imported lazily)."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["STUNet", "VARIANTS", "load_checkpoint", "save_checkpoint", "segment"]

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
