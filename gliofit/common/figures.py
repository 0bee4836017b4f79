"""Orthogonal-slice figures of a density over an anatomical background (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gliofit.common.io import atomic_write  # noqa: E402

__all__ = ["slice_centre", "density_figure", "save_figure"]


def slice_centre(density: np.ndarray) -> tuple[int, int, int]:
    """Voxel (i, j, k) through which to cut: the density's weighted centre, else the grid's centre."""
    total = float(density.sum())
    if total <= 0:
        return tuple(int(s) // 2 for s in density.shape)  # type: ignore[return-value]
    idx = np.indices(density.shape).reshape(3, -1)
    centre = (idx * density.reshape(-1)).sum(axis=1) / total
    return tuple(int(round(c)) for c in centre)  # type: ignore[return-value]


def density_figure(
    background: np.ndarray | None,
    density: np.ndarray,
    *,
    thresholds: tuple[float, float] = (0.25, 0.675),
    title: str = "",
    centre: tuple[int, int, int] | None = None,
) -> plt.Figure:
    """Axial, coronal and sagittal slices: background in grey, density in colour, threshold contours.

    Arrays are (X, Y, Z) in RAS voxel order on one grid; slices pass through
    ``centre`` (default :func:`slice_centre`).
    """
    c = centre or slice_centre(density)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4), constrained_layout=True)
    views = [("axial", (slice(None), slice(None), c[2])),
             ("coronal", (slice(None), c[1], slice(None))),
             ("sagittal", (c[0], slice(None), slice(None)))]
    for ax, (name, sl) in zip(axes, views):
        if background is not None:
            ax.imshow(background[sl].T, cmap="gray", origin="lower")
        d = density[sl].T
        im = ax.imshow(np.ma.masked_less(d, 1e-3), cmap="inferno", vmin=0, vmax=1, origin="lower", alpha=0.8)
        for th, colour in zip(thresholds, ("cyan", "lime")):
            if d.max() > th:
                ax.contour(d, levels=[th], colors=colour, linewidths=1.0)
        ax.set_title(f"{name} (voxel {c})" if name == "axial" else name)
        ax.axis("off")
    fig.colorbar(im, ax=axes, shrink=0.8, label="tumour-cell density (fraction of capacity)")
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    """Save a figure to ``path`` atomically (PNG by suffix) and close it."""
    p = Path(path)
    try:
        with atomic_write(p) as tmp:
            fig.savefig(tmp, dpi=dpi, format=p.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return p
