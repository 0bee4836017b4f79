"""Where gliofit keeps what it downloads or builds once per user (the resampled atlas, the entries tables of
large databases, the demo database and patient, segmentation models): ``$GLIOFIT_CACHE``, else
``$XDG_CACHE_HOME/gliofit``, else ``~/.cache/gliofit``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_dir"]

CACHE_ENV = "GLIOFIT_CACHE"
"""Environment variable naming the user cache folder."""


def cache_dir() -> Path:
    """The user cache folder (not created): ``$GLIOFIT_CACHE`` when set, else ``$XDG_CACHE_HOME/gliofit``, else
    ``~/.cache/gliofit``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gliofit"
