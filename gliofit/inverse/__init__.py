"""inverse."""

__all__: list[str] = []
