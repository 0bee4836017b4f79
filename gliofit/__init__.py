"""gliofit: personalise a Fisher–Kolmogorov brain-tumour growth model for a patient in seconds.

The top level holds the notebook API only; nothing heavy is imported eagerly.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
