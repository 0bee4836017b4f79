"""One figure style for every picture gliofit draws (``run``, ``infer``, ``simulate --png``, ``cohort``).

:func:`patient_figure` is a 3 × 3 grid: rows axial, coronal, sagittal through the tumour centre
(positions in world mm), columns the named MRI sequence; the segmentation with the matched (or
simulated) tumour's contours; the tumour-cell density on a log scale with a labelled colour bar, the
target volumes and the tumour outline. Orientation letters on every edge; the sagittal view has
anterior on the left, as clinical viewers show it. The title says D, ρ, T, μ_D, μ_ρ, infiltration
length and speed with their 95 % intervals (:func:`gliofit.common.wording.parameters_title`).

Figures are :class:`matplotlib.figure.Figure` objects built without pyplot and without choosing a
backend, so a notebook keeps its own (inline) backend; the command line sets ``MPLBACKEND=Agg``.

>>> fig = patient_figure(mri=t1c, mri_name="T1c", segmentation=labels, density=u, affine=aff)  # doctest: +SKIP
>>> save_figure(fig, "OUT/report.png")                                                          # doctest: +SKIP
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from gliofit.common.io import atomic_write
from gliofit.common.labels import detect_convention, label_values
from gliofit.common.units import DEFAULT_THRESHOLD_CORE, DEFAULT_THRESHOLD_EDEMA

__all__ = [
    "slice_centre",
    "patient_figure",
    "density_figure",
    "cohort_figure",
    "save_figure",
    "LABEL_COLOURS",
    "PLAN_COLOURS",
    "COHORT_HISTOGRAMS",
    "DENSITY_FLOOR",
]

LABEL_COLOURS = ("#e41a1c", "#4daf4a", "#377eb8", "#ff7f00", "#984ea3", "#a65628", "#f781bf")
"""Overlay colour of label value v: ``LABEL_COLOURS[(v - 1) % 7]`` (1 red, 2 green, 3 blue, 4 orange)."""
PLAN_COLOURS = {"standard": "yellow", "model": "magenta"}
MATCH_STYLE = {"whole tumour (FLAIR)": ("cyan", "solid"), "core (T1Gd)": ("white", "dashed")}
OUTLINE_STYLE = ("white", "dotted")
"""The segmented whole tumour, drawn over the density and target volumes."""
DENSITY_FLOOR = 1e-3
"""Densities below this fraction of capacity are not drawn (the log colour scale starts here)."""
DENSITY_TICKS = (1e-3, 1e-2, 1e-1, 1.0)
"""Labelled densities of the log colour bar."""
COHORT_HISTOGRAMS = (
    ("mu_D_mm", "spread μ_D = √(D·T), mm"),
    ("mu_rho", "growth μ_ρ = √(ρ·T)"),
    ("infiltration_length_mm", "infiltration length √(D/ρ), mm"),
    ("velocity_mm_per_day", "speed of the tumour front 2√(D·ρ), mm/day"),
    ("dice_mean", "fit: mean Dice"),
)
"""(results.csv column, axis label) of the cohort figure's histograms."""


class ReportFigure(Figure):
    """A :class:`matplotlib.figure.Figure` that shows itself as a PNG in Jupyter (``_repr_png_``), whatever the
    notebook's backend and whether pyplot was imported or not."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=80)
        return buf.getvalue()


def slice_centre(density: np.ndarray) -> tuple[int, int, int]:
    """Voxel (i, j, k) through which to cut: the density's weighted centre, else the grid's centre."""
    total = float(density.sum())
    if total <= 0:
        return tuple(int(s) // 2 for s in density.shape)  # type: ignore[return-value]
    idx = np.indices(density.shape).reshape(3, -1)
    centre = (idx * density.reshape(-1)).sum(axis=1) / total
    return tuple(int(round(c)) for c in centre)  # type: ignore[return-value]


def _to_ras(arrays: dict[str, np.ndarray], affine: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Arrays flipped / permuted to the closest RAS+ axes, and that grid's affine."""
    from gliofit.common.nifti import nib

    ornt = nib.orientations.io_orientation(affine)
    shape = next(iter(arrays.values())).shape
    return (
        {k: nib.orientations.apply_orientation(v, ornt) for k, v in arrays.items()},
        affine @ nib.orientations.inv_ornt_aff(ornt, shape),
    )


def _check_volumes(arrays: dict[str, np.ndarray], affine: np.ndarray) -> np.ndarray:
    shape = arrays["density"].shape
    if len(shape) != 3:
        raise ValueError(f"density must be a 3-d (X, Y, Z) array, got shape {shape}")
    for name, a in arrays.items():
        if a.shape != shape:
            raise ValueError(f"{name} has shape {a.shape}, the density {shape}: all must share one grid")
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.isfinite(aff).all() or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise ValueError(f"affine must be a finite, invertible 4x4 matrix, got {np.asarray(affine).tolist()}")
    return aff


def _views(c: tuple[int, int, int], spacing: np.ndarray) -> list[tuple[str, tuple, float, tuple[str, str, str, str]]]:
    """(name, slicer, pixel aspect, (left, right, bottom, top) letters) of the axial, coronal, sagittal cuts."""
    sx, sy, sz = spacing
    return [
        ("axial", (slice(None), slice(None), c[2]), sy / sx, ("L", "R", "P", "A")),
        ("coronal", (slice(None), c[1], slice(None)), sz / sx, ("L", "R", "I", "S")),
        ("sagittal", (c[0], slice(None), slice(None)), sz / sy, ("P", "A", "I", "S")),
    ]


def _outline():
    """A thin dark edge around lines and letters, so they stand out on bright and dark backgrounds alike."""
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=2.6, foreground="black", alpha=0.7)]


def _contour(ax, mask: np.ndarray, colour: str, style: str = "solid", width: float = 1.3) -> None:
    m = np.asarray(mask, dtype=np.float32)
    if m.any() and not m.all():
        cs = ax.contour(m, levels=[0.5], colors=colour, linewidths=width, linestyles=style)
        cs.set(path_effects=_outline())


def _label_rgba(labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    from matplotlib.colors import to_rgba

    rgba = np.zeros(labels.shape + (4,), dtype=np.float32)
    for v in label_values(labels[labels > 0]):
        rgba[labels == v] = to_rgba(LABEL_COLOURS[(int(v) - 1) % len(LABEL_COLOURS)], alpha)
    return rgba


def _label_names(values: list[int]) -> dict[int, str]:
    try:
        conv = detect_convention(np.asarray(values))
        names = {conv.necrosis: "necrosis / non-enhancing core", conv.edema: "edema", conv.enhancing: "enhancing"}
    except ValueError:
        names = {}
    return {v: f"label {v}" + (f": {names[v]}" if v in names else "") for v in values}


def _legends(axes, labels: np.ndarray | None, names: dict[int, str] | None, plans: list[str], match: str) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    seg = []
    if labels is not None:
        values = [int(v) for v in label_values(labels) if v > 0]
        shown = names or _label_names(values)
        seg = [
            Patch(color=LABEL_COLOURS[(v - 1) % len(LABEL_COLOURS)], alpha=0.6, label=shown.get(v, f"label {v}"))
            for v in values
        ]
    seg += [
        Line2D([], [], color=c, linestyle=s, path_effects=_outline(), label=f"{match}: {n}")
        for n, (c, s) in MATCH_STYLE.items()
    ]
    axes[-1, 1].legend(handles=seg, loc="upper center", bbox_to_anchor=(0.5, -0.04), fontsize=8, frameon=False)
    tgt = [
        Line2D([], [], color=PLAN_COLOURS.get(k, "white"), path_effects=_outline(), label=f"{k} target volume")
        for k in plans
    ]
    if labels is not None:
        tgt.append(
            Line2D(
                [],
                [],
                color=OUTLINE_STYLE[0],
                linestyle=OUTLINE_STYLE[1],
                path_effects=_outline(),
                label="tumour outline (segmentation)",
            )
        )
    if tgt:
        axes[-1, 2].legend(handles=tgt, loc="upper center", bbox_to_anchor=(0.5, -0.04), fontsize=8, frameon=False)


def _window(mri: np.ndarray) -> tuple[float, float]:
    """Grey-level window: 1st to 99.5th percentile of the non-zero voxels, estimated on every second voxel
    along each axis (an eighth of the voxels to sort)."""
    sample = np.nan_to_num(np.asarray(mri[::2, ::2, ::2], dtype=np.float32))
    nz = sample[sample != 0]
    lo, hi = (float(x) for x in np.percentile(nz, [1.0, 99.5])) if nz.size else (0.0, 1.0)
    return lo, (hi if hi > lo else lo + 1.0)


def _panel(ax, col: int, sl: dict[str, np.ndarray], style: dict) -> None:
    """One slice: column 0 the MRI; 1 + labels and matched masks; 2 + density, targets, tumour outline."""
    lo, hi = style["window"]
    ax.imshow(sl["mri"], cmap="gray", origin="lower", vmin=lo, vmax=hi, interpolation="nearest")
    if col == 1:
        if "segmentation" in sl:
            ax.imshow(_label_rgba(sl["segmentation"]), origin="lower", interpolation="nearest")
        _contour(ax, sl["match_whole_tumor"], *MATCH_STYLE["whole tumour (FLAIR)"])
        _contour(ax, sl["match_core"], *MATCH_STYLE["core (T1Gd)"])
    elif col == 2:
        if (sl["density"] >= DENSITY_FLOOR).any():
            ax.imshow(
                np.ma.masked_less(sl["density"], DENSITY_FLOOR),
                cmap="inferno",
                norm=style["norm"],
                origin="lower",
                alpha=0.8,
                interpolation="nearest",
            )
        for k in style["plans"]:
            _contour(ax, sl[f"plans[{k!r}]"] > 0, PLAN_COLOURS.get(k, "white"))
        if "segmentation" in sl:
            _contour(ax, sl["segmentation"] > 0, *OUTLINE_STYLE, width=1.0)


def _orient(ax, aspect: float, letters: tuple[str, str, str, str], flip: bool) -> None:
    """Pixel aspect from the spacing, a left-right flip of the image, and the edge letters."""
    ax.set_aspect(aspect)
    if flip:
        ax.invert_xaxis()
        letters = (letters[1], letters[0], *letters[2:])
    for (x, y, ha, va), t in zip(
        (
            (0.01, 0.5, "left", "center"),
            (0.99, 0.5, "right", "center"),
            (0.5, 0.01, "center", "bottom"),
            (0.5, 0.99, "center", "top"),
        ),
        letters,
    ):
        ax.text(
            x,
            y,
            t,
            transform=ax.transAxes,
            ha=ha,
            va=va,
            color="w",
            fontsize=9,
            fontweight="bold",
            path_effects=_outline(),
        )
    ax.set_axis_off()  # no ticks, no frame: drawing tick machinery cost more than the images


def _volumes(mri, segmentation, density, match_whole_tumor, match_core, plans, affine):
    """The arrays reoriented to RAS, cleaned (labels int16, density in [0, 1]), and the RAS affine."""
    if match_whole_tumor is None or match_core is None:
        d = np.asarray(density, dtype=np.float32)
        match_whole_tumor = d >= DEFAULT_THRESHOLD_EDEMA if match_whole_tumor is None else match_whole_tumor
        match_core = d >= DEFAULT_THRESHOLD_CORE if match_core is None else match_core
    arrays = {"mri": mri, "density": density, "match_whole_tumor": match_whole_tumor, "match_core": match_core}
    arrays |= {f"plans[{k!r}]": v for k, v in (plans or {}).items()}
    if segmentation is not None:
        arrays["segmentation"] = segmentation
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    vols, aff = _to_ras(arrays, _check_volumes(arrays, affine))
    if segmentation is not None and vols["segmentation"].dtype.kind not in "ui":
        vols["segmentation"] = np.rint(np.nan_to_num(vols["segmentation"].astype(np.float32))).astype(np.int16)
    return vols, aff


def _clean_slice(sl: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One cut's arrays as drawn: MRI float32 without NaN, density float32 in [0, 1]. Done per cut, not per
    volume, so a 1 mm report converts three slices instead of three volumes."""
    sl["mri"] = np.nan_to_num(sl["mri"].astype(np.float32))
    sl["density"] = np.clip(np.nan_to_num(sl["density"].astype(np.float32)), 0.0, 1.0)
    return sl


PATIENT_FIGSIZE_IN = (12.5, 13.0)
"""Width, height of the report figure in inches (1,375 × 1,430 pixels at the saved 110 dpi)."""


def _patient_suptitle(title: str, radiological: bool, spacing: np.ndarray, world: np.ndarray) -> str:
    sp = " × ".join(f"{s:.3g}" for s in spacing)
    conv = (
        "radiological: patient's right on the image left"
        if radiological
        else "neurological: patient's left on the image left"
    )
    return (f"{title}\n" if title else "") + (
        f"{conv}, sagittal: anterior on the left; voxel {sp} mm; "
        f"cut through the tumour centre ({', '.join(f'{w:.1f}' for w in world[:3])}) mm"
    )


def _patient_layout(title_lines: int) -> tuple[dict, list[float]]:
    """Fixed margins of the 3 × 3 report grid (gridspec keywords) and the colour bar's box (figure fractions).

    Set by hand, not by a layout engine, which would measure every label of every panel at each draw.
    Margins in inches: the title's lines and the column titles on
    top, the row labels on the left, the colour bar on the right, the legends below.
    """
    w, h = PATIENT_FIGSIZE_IN
    top_in = 0.12 + 0.19 * title_lines + 0.3
    grid = {
        "left": 0.5 / w,
        "right": 1.0 - 1.25 / w,
        "top": 1.0 - top_in / h,
        "bottom": 1.05 / h,
        "wspace": 0.04,
        "hspace": 0.1,
    }
    span = grid["top"] - grid["bottom"]
    colorbar_box = [1.0 - 1.05 / w, grid["bottom"] + 0.2 * span, 0.22 / w, 0.6 * span]
    return grid, colorbar_box


def patient_figure(
    *,
    mri: np.ndarray,
    density: np.ndarray,
    affine: np.ndarray,
    mri_name: str = "T1c",
    segmentation: np.ndarray | None = None,
    match_whole_tumor: np.ndarray | None = None,
    match_core: np.ndarray | None = None,
    plans: dict[str, np.ndarray] | None = None,
    title: str = "",
    radiological: bool = False,
    log_density: bool = True,
    segmentation_names: dict[int, str] | None = None,
    match_name: str = "matched simulation",
):
    """The report figure of one tumour (``report.png``): 3 views × (MRI, segmentation, density).

    Parameters
    ----------
    mri : (X, Y, Z) background image, shown in grey (1st–99.5th percentile of its non-zero voxels).
    density : (X, Y, Z) tumour-cell density in [0, 1] (fraction of carrying capacity), log (default) or linear.
    affine : 4x4 voxel-to-world (RAS mm) matrix shared by all arrays; arrays are reoriented to the closest
        RAS axes and pixels drawn with the spacing's aspect, so anisotropic voxels look right.
    mri_name : the sequence shown ("T1c", "atlas T1"), named in the first column's title.
    segmentation : (X, Y, Z) integer label map (any label > 0 is tumour), one colour per label, or None.
    match_whole_tumor, match_core : (X, Y, Z) bool masks of the matched simulation (default: the density
        at the default visibility thresholds 0.25 and 0.675).
    plans : ``{"standard": mask, "model": mask}`` target volumes (contours: yellow, magenta), or None.
    radiological : patient's right on the image left in the axial and coronal views (default: neurological).
        The sagittal view always has anterior on the left.
    segmentation_names : legend text per label value (default: from the detected BraTS convention).
    match_name : what the contours of column 2 are ("matched simulation", "simulated tumour").

    Returns
    -------
    A :class:`matplotlib.figure.Figure` (no pyplot, no backend chosen).
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm, Normalize

    vols, aff = _volumes(mri, segmentation, density, match_whole_tumor, match_core, plans, affine)
    spacing = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    shown = vols["segmentation"] > 0 if segmentation is not None else vols["match_whole_tumor"] > 0
    centre = (
        tuple(int(round(x)) for x in np.argwhere(shown).mean(axis=0))
        if shown.any()
        else slice_centre(np.clip(np.nan_to_num(vols["density"].astype(np.float32)), 0.0, 1.0))
    )
    norm = LogNorm(vmin=DENSITY_FLOOR, vmax=1.0) if log_density else Normalize(vmin=0.0, vmax=1.0)
    style = {"window": _window(vols["mri"]), "norm": norm, "plans": list(plans or {})}
    world = aff @ np.array([*centre, 1.0])
    suptitle = _patient_suptitle(title, radiological, spacing, world)
    fig = ReportFigure(figsize=PATIENT_FIGSIZE_IN)
    grid, colorbar_box = _patient_layout(suptitle.count("\n") + 1)
    axes = fig.subplots(3, 3, squeeze=False, gridspec_kw=grid)
    columns = (
        mri_name,
        ("segmentation + " if segmentation is not None else "") + match_name,
        "tumour-cell density" + (" + target volumes" if plans else ""),
    )
    for r, (name, sl, aspect, letters) in enumerate(_views(centre, spacing)):
        axis = "xyz".index({"axial": "z", "coronal": "y", "sagittal": "x"}[name])
        flip = radiological if name != "sagittal" else True
        for col in range(3):
            _panel(axes[r, col], col, _clean_slice({k: v[sl].T for k, v in vols.items()}), style)
            _orient(axes[r, col], aspect, letters, flip)
            if r == 0:
                axes[r, col].set_title(columns[col], fontsize=10)
        axes[r, 0].text(
            -0.03,
            0.5,
            f"{name}, {'xyz'[axis]} = {world[axis]:.1f} mm",
            transform=axes[r, 0].transAxes,
            rotation=90,
            ha="right",
            va="center",
            fontsize=10,
        )
    ticks = DENSITY_TICKS if log_density else (0.0, 0.25, 0.5, 0.75, 1.0)
    bar = fig.colorbar(
        ScalarMappable(norm=norm, cmap="inferno"),
        cax=fig.add_axes(colorbar_box),
        ticks=ticks,
        label="tumour-cell density (fraction of capacity, log scale)"
        if log_density
        else "tumour-cell density (fraction of capacity)",
    )
    # Plain labels, no minor ticks: the log axis's own "10^k" labels would go through mathtext, costly to draw.
    bar.minorticks_off()
    bar.set_ticklabels([f"{t:g}" for t in ticks])
    _legends(axes, vols.get("segmentation"), segmentation_names, style["plans"], match_name)
    fig.suptitle(suptitle, fontsize=10.5, y=1.0 - 0.08 / PATIENT_FIGSIZE_IN[1], va="top")
    return fig


def density_figure(
    background: np.ndarray | None,
    density: np.ndarray,
    affine: np.ndarray,
    *,
    thresholds: tuple[float, float] = (DEFAULT_THRESHOLD_EDEMA, DEFAULT_THRESHOLD_CORE),
    title: str = "",
    background_name: str = "atlas T1",
):
    """:func:`patient_figure` of a simulated density without a segmentation (``simulate --png``).

    Column 2 shows the simulated tumour as it would be visible: FLAIR (density ≥ ``thresholds[0]``) and
    T1Gd (≥ ``thresholds[1]``).
    """
    d = np.asarray(density, dtype=np.float32)
    mri = background if background is not None else np.zeros_like(d)
    return patient_figure(
        mri=mri,
        mri_name=background_name,
        density=d,
        affine=affine,
        match_whole_tumor=d >= thresholds[0],
        match_core=d >= thresholds[1],
        title=title,
        match_name="simulated tumour",
    )


def _num(v) -> float | None:
    try:
        x = float(v.strip()) if isinstance(v, str) else float(v)
    except (TypeError, ValueError, AttributeError):
        return None
    return x if np.isfinite(x) else None


def cohort_figure(rows: list[dict]):
    """Histograms of :data:`COHORT_HISTOGRAMS` over the ``ok`` rows of results.csv (strings or numbers).

    Empty or non-numeric cells are skipped; a panel without values says so. The title gives n ok / n failed.
    """
    from matplotlib.ticker import MaxNLocator

    ok = [r for r in rows if str(r.get("status", "")).strip().lower() == "ok"]
    fig = ReportFigure(figsize=(13, 7.5), layout="constrained")
    axes = fig.subplots(2, 3)
    for ax, (key, text) in zip(axes.flat, COHORT_HISTOGRAMS):
        vals = np.array([x for x in (_num(r.get(key)) for r in ok) if x is not None])
        ax.set_xlabel(text)
        if vals.size == 0:
            ax.text(
                0.5,
                0.5,
                "no ok rows" if not ok else "no values",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="grey",
            )
            ax.set_yticks([])
            continue
        ax.hist(vals, bins=int(np.clip(np.sqrt(vals.size), 5, 30)), color="#4477aa", edgecolor="white")
        ax.axvline(float(np.median(vals)), color="#cc3311", linestyle="--", linewidth=1)
        ax.set_title(f"n = {vals.size}, median {np.median(vals):.3g}", fontsize=10)
        ax.set_ylabel("patients")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    n_failed = len(rows) - len(ok)
    summary = axes.flat[-1]
    summary.axis("off")
    summary.text(
        0.05,
        0.6,
        f"{len(ok)} ok\n{n_failed} failed\n{len(rows)} patients",
        fontsize=14,
        va="center",
        transform=summary.transAxes,
    )
    fig.suptitle(f"gliofit cohort: {len(ok)} ok / {n_failed} failed", fontsize=13)
    return fig


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save a figure to ``path`` atomically (format by suffix, PNG by default); return the path."""
    p = Path(path)
    fmt = p.suffix.lstrip(".").lower() or "png"
    fast_png = {"pil_kwargs": {"compress_level": 1}} if fmt == "png" else {}  # a larger file, faster to encode
    with atomic_write(p) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt, **fast_png)
    return p
