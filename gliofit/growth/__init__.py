"""The growth model: atlas tissue maps and the Fisher–Kolmogorov forward solver.

Every other part (database build, inverse, phantoms, pipelines) uses it; it depends only on `gliofit.common`.
"""

__all__: list[str] = []
