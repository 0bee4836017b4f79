"""simulations_db."""

__all__: list[str] = []
