"""Constants shared by the pipeline tests (their fixtures are in ``conftest.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

GLIOFIT = str(Path(sys.executable).with_name("gliofit"))
PHANTOM_MM = 3.0
"""Spacing of the phantom MRI (coarse, so registration and the pipeline take seconds)."""
