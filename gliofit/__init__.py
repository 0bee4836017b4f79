"""gliofit: personalise a Fisher–Kolmogorov brain-tumour growth model for a patient in seconds.

The top level holds the notebook API only; nothing heavy is imported eagerly.

>>> import gliofit
>>> db = gliofit.open_database("DB")         # doctest: +SKIP
>>> res = gliofit.infer(db, "seg.nii.gz")    # doctest: +SKIP
"""

from __future__ import annotations

from gliofit._version import __version__

__all__ = ["__version__", "open_database", "infer", "Result"]


def __getattr__(name: str):
    """Load the notebook API on first use (keeps ``import gliofit`` and ``gliofit --help`` instant)."""
    if name == "open_database":
        from gliofit.simulations_db.database import open_database

        return open_database
    if name in ("infer", "Result"):
        import gliofit.inverse as inverse

        return getattr(inverse, name)
    raise AttributeError(f"module 'gliofit' has no attribute {name!r}")
