"""The package version: the one source, read by ``pyproject.toml`` and by every file that records it."""

__version__ = "0.1.0"
