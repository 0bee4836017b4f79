"""Where gliofit keeps what it downloads or builds once per user: ``$GLIOFIT_CACHE`` or ``~/.cache/gliofit``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """The user cache folder (not created): ``$GLIOFIT_CACHE`` when set, else ``~/.cache/gliofit``."""
    return Path(os.environ.get("GLIOFIT_CACHE") or Path.home() / ".cache" / "gliofit")
