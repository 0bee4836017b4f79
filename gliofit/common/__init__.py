"""Conventions shared by every part of gliofit: errors and validation, NIfTI I/O,
grids and resampling, tumour label maps, units and progress bars.

Each concept lives once here; the four parts import it, never copy it.
"""

from gliofit.common.errors import InputError

__all__ = ["InputError"]
