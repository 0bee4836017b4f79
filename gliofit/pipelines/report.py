"""Reports: a patient's report.png and self-contained report.html; a cohort's cohort.png and index.html.

The patient figure shows orthogonal slices on the patient's own grid (reoriented to the closest RAS axes,
pixels drawn with the voxel spacing's aspect); the HTML pages embed their images as base64 data URIs, so a
report is one file that can be mailed or archived. All text from results or CSV rows is HTML-escaped.

>>> fig = patient_figure(mri=t1c, segmentation=labels, density=u, match_whole_tumor=u >= 0.25,
...                      match_core=u >= 0.675, plans={"standard": s, "model": m}, affine=aff)  # doctest: +SKIP
>>> write_patient_report(Path("OUT/P001"), result, fig, plan=result["plan"])   # doctest: +SKIP
>>> write_cohort_report(Path("OUT"), rows)                                      # doctest: +SKIP
"""

from __future__ import annotations

import base64
import math
from html import escape
from pathlib import Path
from urllib.parse import quote

import numpy as np

from gliofit.common.figures import save_figure, slice_centre
from gliofit.common.io import write_text

__all__ = ["patient_figure", "patient_html", "write_patient_report", "cohort_figure", "cohort_index_html",
           "write_cohort_report", "COHORT_HISTOGRAMS"]

LABEL_COLOURS = ("#e41a1c", "#4daf4a", "#377eb8", "#ff7f00", "#984ea3", "#a65628", "#f781bf")
"""Overlay colour of label value v: ``LABEL_COLOURS[(v - 1) % 7]`` (1 red, 2 green, 3 blue, 4 orange)."""
PLAN_COLOURS = {"standard": "yellow", "model": "magenta"}
MATCH_STYLE = {"whole tumour": ("cyan", "solid"), "core": ("white", "dashed")}
UNITS = {"D_mm2_per_day": "mm²/day", "rho_per_day": "1/day", "T_days": "days", "mu_D_mm": "mm", "mu_rho": "",
         "infiltration_length_mm": "mm", "velocity_mm_per_day": "mm/day", "origin_mm": "mm (RAS)",
         "threshold_edema": "fraction", "threshold_core": "fraction"}
COHORT_HISTOGRAMS = (("mu_D_mm", "mu_D = sqrt(D·T), mm"), ("mu_rho", "mu_rho = sqrt(rho·T)"),
                     ("infiltration_length_mm", "infiltration length sqrt(D/rho), mm"),
                     ("velocity_mm_per_day", "front speed 2·sqrt(D·rho), mm/day"), ("dice_mean", "fit: mean Dice"))
"""(results.csv column, axis label) of the cohort figure's histograms."""
_CSS = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}th{background:#f3f3f3}"
        "td.num{text-align:right;font-variant-numeric:tabular-nums}.failed{color:#b00}img{max-width:100%}")


# ----------------------------------------------------------------------------------------------- figure
def _to_ras(arrays: dict[str, np.ndarray], affine: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Arrays flipped / permuted to the closest RAS+ axes, and that grid's affine."""
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    ornt = io_orientation(affine)
    shape = next(iter(arrays.values())).shape
    return ({k: apply_orientation(v, ornt) for k, v in arrays.items()}, affine @ inv_ornt_aff(ornt, shape))


def _check_volumes(arrays: dict[str, np.ndarray], affine: np.ndarray) -> np.ndarray:
    shape = arrays["segmentation"].shape
    if len(shape) != 3:
        raise ValueError(f"segmentation must be a 3-d (X, Y, Z) array, got shape {shape}")
    for name, a in arrays.items():
        if a.shape != shape:
            raise ValueError(f"{name} has shape {a.shape}, the segmentation {shape}: all must share one grid")
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.isfinite(aff).all() or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise ValueError(f"affine must be a finite, invertible 4x4 matrix, got {np.asarray(affine).tolist()}")
    return aff


def _views(c: tuple[int, int, int], spacing: np.ndarray) -> list[tuple[str, tuple, float, tuple[str, str, str, str]]]:
    """(name, slicer, pixel aspect, (left, right, bottom, top) letters) of the axial, coronal, sagittal cuts."""
    sx, sy, sz = spacing
    return [("axial", (slice(None), slice(None), c[2]), sy / sx, ("L", "R", "P", "A")),
            ("coronal", (slice(None), c[1], slice(None)), sz / sx, ("L", "R", "I", "S")),
            ("sagittal", (c[0], slice(None), slice(None)), sz / sy, ("P", "A", "I", "S"))]


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
    for v in np.unique(labels[labels > 0]):
        rgba[labels == v] = to_rgba(LABEL_COLOURS[(int(v) - 1) % len(LABEL_COLOURS)], alpha)
    return rgba


def _label_names(values: list[int]) -> dict[int, str]:
    from gliofit.common.labels import detect_convention

    try:
        conv = detect_convention(np.asarray(values))
        names = {conv.necrosis: "necrosis / non-enhancing core", conv.edema: "edema", conv.enhancing: "enhancing"}
    except ValueError:
        names = {}
    return {v: f"label {v}" + (f": {names[v]}" if v in names else "") for v in values}


def _legends(axes, labels: np.ndarray, plans: dict | None) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    values = sorted(int(v) for v in np.unique(labels[labels > 0]))
    seg = [Patch(color=LABEL_COLOURS[(v - 1) % len(LABEL_COLOURS)], alpha=0.6, label=n)
           for v, n in _label_names(values).items()]
    seg += [Line2D([], [], color=c, linestyle=s, path_effects=_outline(), label=f"matched simulation: {n}")
            for n, (c, s) in MATCH_STYLE.items()]
    axes[-1, 1].legend(handles=seg, loc="upper center", bbox_to_anchor=(0.5, -0.04), fontsize=8, frameon=False)
    tgt = [Line2D([], [], color=PLAN_COLOURS.get(k, "white"), path_effects=_outline(), label=f"{k} target volume")
           for k in (plans or {})]
    if tgt:
        axes[-1, 2].legend(handles=tgt, loc="upper center", bbox_to_anchor=(0.5, -0.04), fontsize=8, frameon=False)


def _window(mri: np.ndarray) -> tuple[float, float]:
    """Grey-level window: 1st to 99.5th percentile of the non-zero voxels."""
    nz = mri[mri != 0]
    lo, hi = (float(x) for x in np.percentile(nz, [1.0, 99.5])) if nz.size else (0.0, 1.0)
    return lo, (hi if hi > lo else lo + 1.0)


def _panel(ax, col: int, sl: dict[str, np.ndarray], style: dict) -> None:
    """One slice: column 0 the MRI; 1 + labels and matched masks; 2 + density and target volumes."""
    lo, hi = style["window"]
    ax.imshow(sl["mri"], cmap="gray", origin="lower", vmin=lo, vmax=hi, interpolation="nearest")
    if col == 1:
        ax.imshow(_label_rgba(sl["segmentation"]), origin="lower", interpolation="nearest")
        _contour(ax, sl["match_whole_tumor"], *MATCH_STYLE["whole tumour"])
        _contour(ax, sl["match_core"], *MATCH_STYLE["core"])
    elif col == 2:
        if (sl["density"] >= 1e-3).any():
            ax.imshow(np.ma.masked_less(sl["density"], 1e-3), cmap="inferno", norm=style["norm"], origin="lower",
                      alpha=0.8, interpolation="nearest")
        for k in style["plans"]:
            _contour(ax, sl[f"plans[{k!r}]"] > 0, PLAN_COLOURS.get(k, "white"))


def _orient(ax, aspect: float, letters: tuple[str, str, str, str], flip: bool) -> None:
    """Pixel aspect from the spacing, left-right flip for the radiological view, and the edge letters."""
    ax.set_aspect(aspect)
    if flip:
        ax.invert_xaxis()
        letters = (letters[1], letters[0], *letters[2:])
    for (x, y, ha, va), t in zip(((0.01, .5, "left", "center"), (.99, .5, "right", "center"),
                                  (.5, .01, "center", "bottom"), (.5, .99, "center", "top")), letters):
        ax.text(x, y, t, transform=ax.transAxes, ha=ha, va=va, color="w", fontsize=9, fontweight="bold",
                path_effects=_outline())
    ax.set_xticks([])
    ax.set_yticks([])


def patient_figure(*, mri: np.ndarray, segmentation: np.ndarray, density: np.ndarray, match_whole_tumor: np.ndarray,
                   match_core: np.ndarray, plans: dict[str, np.ndarray] | None, affine: np.ndarray, title: str = "",
                   radiological: bool = False, log_density: bool = True):
    """``report.png`` of one patient: axial, coronal and sagittal slices through the whole tumour's centre.

    Parameters
    ----------
    mri : (X, Y, Z) background image (e.g. T1c), shown in grey (1st–99.5th percentile of its non-zero voxels).
    segmentation : (X, Y, Z) integer label map (BraTS; any label > 0 is tumour), one colour per label value.
    density : (X, Y, Z) tumour-cell density in [0, 1] (fraction of carrying capacity), log (default) or linear.
    match_whole_tumor, match_core : (X, Y, Z) bool masks of the matched simulation (contours).
    plans : ``{"standard": mask, "model": mask}`` target volumes (contours: yellow, magenta), or None.
    affine : 4x4 voxel-to-world (RAS mm) matrix shared by all arrays; arrays are reoriented to the closest
        RAS axes and pixels drawn with the spacing's aspect, so anisotropic voxels look right.
    radiological : patient's right on the image left (default: neurological, patient's left on the left).

    Returns
    -------
    A matplotlib Figure (3 rows: views; 3 columns: MRI, labels + matched masks, density + targets).
    """
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm, Normalize

    arrays = {"mri": mri, "segmentation": segmentation, "density": density, "match_whole_tumor": match_whole_tumor,
              "match_core": match_core} | {f"plans[{k!r}]": v for k, v in (plans or {}).items()}
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    vols, aff = _to_ras(arrays, _check_volumes(arrays, affine))
    vols["segmentation"] = np.rint(np.nan_to_num(vols["segmentation"].astype(np.float32))).astype(np.int16)
    vols["density"] = np.clip(np.nan_to_num(vols["density"].astype(np.float32)), 0.0, 1.0)
    vols["mri"] = np.nan_to_num(vols["mri"].astype(np.float32))
    labels, spacing = vols["segmentation"], np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    centre = (tuple(int(round(x)) for x in np.argwhere(labels > 0).mean(axis=0)) if (labels > 0).any()
              else slice_centre(vols["density"]))
    norm = LogNorm(vmin=1e-3, vmax=1.0) if log_density else Normalize(vmin=0.0, vmax=1.0)
    style = {"window": _window(vols["mri"]), "norm": norm, "plans": list(plans or {})}
    world = aff @ np.array([*centre, 1.0])
    fig, axes = plt.subplots(3, 3, figsize=(12.5, 12.5), constrained_layout=True, squeeze=False)
    columns = ("MRI", "segmentation + matched simulation", "tumour-cell density + target volumes")
    for r, (name, sl, aspect, letters) in enumerate(_views(centre, spacing)):
        axis = "xyz".index({"axial": "z", "coronal": "y", "sagittal": "x"}[name])
        flip = radiological and name != "sagittal"
        for col in range(3):
            _panel(axes[r, col], col, {k: v[sl].T for k, v in vols.items()}, style)
            _orient(axes[r, col], aspect, letters, flip)
            if r == 0:
                axes[r, col].set_title(columns[col], fontsize=10)
        axes[r, 0].set_ylabel(f"{name}, {'xyz'[axis]} = {world[axis]:.1f} mm")
    fig.colorbar(ScalarMappable(norm=norm, cmap="inferno"), ax=axes[:, 2], shrink=0.6,
                 label="tumour-cell density (fraction of capacity)")
    _legends(axes, labels, plans)
    sp = " × ".join(f"{s:.3g}" for s in spacing)
    conv = ("radiological: patient's right on the image left" if radiological
            else "neurological: patient's left on the image left")
    fig.suptitle((f"{title}\n" if title else "") + f"{conv}; voxel {sp} mm; cut through the tumour centre "
                 f"(voxel {tuple(int(i) for i in centre)} of the RAS-reoriented grid)", fontsize=11)
    return fig


# ------------------------------------------------------------------------------------------ html helpers
def _num(v) -> float | None:
    """A finite float from a number or a CSV string; None for empty, non-numeric or non-finite."""
    if v is None or isinstance(v, bool):
        return None
    try:
        x = float(v.strip()) if isinstance(v, str) else float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _fmt(v) -> str:
    """Escaped display text: numbers to 4 significant digits, lists in brackets, missing as an en dash."""
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, bool) or (isinstance(v, str) and _num(v) is None):
        return escape(str(v)) if v != "" else "–"
    x = _num(v)
    if x is None:
        return "–"
    return str(int(x)) if isinstance(v, (int, np.integer)) else f"{x:.4g}"


def _data_uri(image: Path | str | bytes) -> str:
    data = image if isinstance(image, bytes) else Path(image).read_bytes()
    mime = ("image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg" if data[:3] == b"\xff\xd8\xff"
            else "image/svg+xml" if data.lstrip()[:5] in (b"<?xml", b"<svg ") else "image/png")
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _img(name: str, image: Path | str | bytes) -> str:
    return (f'<figure><img src="{_data_uri(image)}" alt="{escape(name)}">'
            f"<figcaption>{escape(name)}</figcaption></figure>")


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Rows of already-escaped cells; cells that look numeric are right-aligned."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if _num(c) is not None else f"<td>{c}</td>"
                                    for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _flat(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for k, v in d.items():
        out += _flat(v, f"{prefix}{k} / ") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return out


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>\n")


# ---------------------------------------------------------------------------------------- patient html
def _parameter_rows(parameters: dict, uncertainty: dict) -> list[list[str]]:
    rows = []
    for k, v in parameters.items():
        u = uncertainty.get(k) or {}
        ci = u.get("ci95") or [None, None]
        if isinstance(v, (list, tuple)):                    # origin_mm: one row per axis
            means, stds = u.get("mean") or [None] * len(v), u.get("std") or [None] * len(v)
            lows, highs = (ci if len(ci) == 2 and isinstance(ci[0], (list, tuple)) else ([None] * len(v),) * 2)
            rows += [[escape(f"{k} {'xyz'[a] if a < 3 else a}"), escape(UNITS.get(k, "")), _fmt(x), _fmt(means[a]),
                      _fmt(stds[a]), f"{_fmt(lows[a])} to {_fmt(highs[a])}"] for a, x in enumerate(v)]
        else:
            rows.append([escape(k), escape(UNITS.get(k, "")), _fmt(v), _fmt(u.get("mean")), _fmt(u.get("std")),
                         f"{_fmt(ci[0])} to {_fmt(ci[1])}"])
    return rows


def _matches_table(matches: list[dict], limit: int) -> str:
    rows = []
    for m in matches[:limit]:
        p = m.get("parameters") or {}
        rows.append([_fmt(m.get(k)) for k in ("rank", "entry_id", "simulation_id", "dice_whole_tumor", "dice_core")]
                    + [_fmt(p.get(k)) for k in ("mu_D_mm", "mu_rho", "D_mm2_per_day", "rho_per_day", "T_days",
                                                "origin_mm")])
    note = f"<p>first {limit} of {len(matches)} matches</p>" if len(matches) > limit else ""
    return _table(["rank", "entry", "simulation", "Dice WT", "Dice core", "mu_D mm", "mu_rho", "D mm²/day",
                   "rho 1/day", "T days", "origin mm"], rows) + note


def patient_html(result: dict, *, images: dict[str, Path | bytes], plan: dict | None = None,
                 title: str | None = None, max_matches: int = 10) -> str:
    """A self-contained ``report.html`` (images embedded as base64 data URIs; every text HTML-escaped).

    Parameters
    ----------
    result : the content of result.json (INTERFACES.md); missing sections are left out.
    images : caption -> PNG path or bytes, embedded in order.
    plan : the content of plan.json (target volumes in cm³, recurrence coverage, ...), shown key by key.
    title : page heading; default ``"gliofit: <patient name>"`` when ``result["patient"]["name"]`` exists.
    max_matches : rows of the top-matches table.
    """
    name = (result.get("patient") or {}).get("name")
    title = title or (f"gliofit: {name}" if name else "gliofit: personalised growth model")
    parts = [_img(k, v) for k, v in images.items()]
    info = [[escape(k), _fmt(v)] for k, v in _flat({"gliofit_version": result.get("gliofit_version", ""),
                                                     "space": result.get("space", "")}
                                                    | {"patient": result.get("patient") or {}})]
    parts.append(_table(["field", "value"], info))
    parts.append("<h2>Parameters</h2><p>best match; mean, std and 95% interval over the weighted top matches</p>")
    parts.append(_table(["parameter", "unit", "best match", "mean", "std", "95% interval"],
                        _parameter_rows(result.get("parameters") or {}, result.get("uncertainty") or {})))
    fit = result.get("fit") or {}
    parts.append("<h2>Fit</h2>" + _table(["measure", "value"], [[escape(k), _fmt(v)] for k, v in fit.items()]))
    if plan:
        first = sorted(_flat(plan), key=lambda kv: (not kv[0].startswith("volume"), "coverage" not in kv[0]))
        parts.append("<h2>Radiotherapy plan</h2><p>target volumes (cm³) and recurrence coverage</p>"
                     + _table(["quantity", "value"], [[escape(k), _fmt(v)] for k, v in first]))
    parts.append("<h2>Top matches</h2>" + _matches_table(list(result.get("matches") or []), max_matches))
    db = result.get("database") or {}
    parts.append("<h2>Database</h2>" + _table(["field", "value"], [[escape(k), _fmt(v)] for k, v in _flat(db)]))
    times = result.get("timings_s") or {}
    parts.append("<h2>Timings</h2>" + _table(["stage", "seconds"], [[escape(k), _fmt(v)] for k, v in times.items()]))
    return _page(title, "".join(parts))


def write_patient_report(out_dir: Path, result: dict, figure, plan: dict | None = None) -> dict[str, Path]:
    """Save ``figure`` as ``out_dir/report.png`` (then closed) and ``out_dir/report.html``, each atomically.

    ``figure`` may be None (no PNG; the page has no image). Returns ``{"report": png, "report_html": html}``.
    """
    out = Path(out_dir)
    files: dict[str, Path] = {}
    if figure is not None:
        files["report"] = save_figure(figure, out / "report.png")
    images = {"report.png": files["report"]} if files else {}
    files["report_html"] = write_text(patient_html(result, images=images, plan=plan), out / "report.html")
    return files


# ----------------------------------------------------------------------------------------------- cohort
def _is_ok(row: dict) -> bool:
    return str(row.get("status", "")).strip().lower() == "ok"


def _total_s(row: dict) -> float | None:
    for key in ("total", "total_s", "timings_s_total", "time_total_s"):
        if _num(row.get(key)) is not None:
            return _num(row.get(key))
    return None


def cohort_figure(rows: list[dict]):
    """Histograms of :data:`COHORT_HISTOGRAMS` over the ``ok`` rows of results.csv (strings or numbers).

    Empty or non-numeric cells are skipped; a panel without values says so. The title gives n ok / n failed.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ok = [r for r in rows if _is_ok(r)]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), constrained_layout=True)
    for ax, (key, label) in zip(axes.flat, COHORT_HISTOGRAMS):
        vals = np.array([x for x in (_num(r.get(key)) for r in ok) if x is not None])
        ax.set_xlabel(label)
        if vals.size == 0:
            ax.text(0.5, 0.5, "no ok rows" if not ok else "no values", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
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
    summary.text(0.05, 0.6, f"{len(ok)} ok\n{n_failed} failed\n{len(rows)} patients", fontsize=14,
                 va="center", transform=summary.transAxes)
    fig.suptitle(f"gliofit cohort: {len(ok)} ok / {n_failed} failed", fontsize=13)
    return fig


def cohort_index_html(rows: list[dict], *, figure_png: Path | bytes | None, title: str = "gliofit cohort") -> str:
    """``OUT/index.html``: the cohort figure embedded and one row per patient.

    An ``ok`` patient's name links to ``<patient>/report.html`` (relative, URL-quoted); a failed row shows its
    error. Columns: patient, status, error, the key parameters (with 95% interval when the CSV has it),
    dice_mean and total time (s).
    """
    keys = [k for k, _ in COHORT_HISTOGRAMS[:4]]
    body = []
    for r in rows:
        name = str(r.get("patient", ""))
        cell = (f'<a href="{escape(quote(name, safe="") + "/report.html")}">{escape(name)}</a>'
                if _is_ok(r) and name else escape(name))
        params = []
        for k in keys:
            lo, hi = _num(r.get(f"{k}_ci95_low")), _num(r.get(f"{k}_ci95_high"))
            params.append(_fmt(r.get(k)) + (f" [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None and hi is not None else ""))
        err = escape(str(r.get("error") or ""))
        status = escape(str(r.get("status", "")))
        body.append([cell, status if _is_ok(r) else f'<span class="failed">{status}</span>', err, *params,
                     _fmt(r.get("dice_mean")), _fmt(_total_s(r))])
    n_ok = sum(_is_ok(r) for r in rows)
    parts = [f"<p>{n_ok} ok, {len(rows) - n_ok} failed, {len(rows)} patients</p>"]
    if figure_png is not None:
        parts.append(_img("cohort.png", figure_png))
    parts.append(_table(["patient", "status", "error", "mu_D mm [95%]", "mu_rho [95%]", "infiltration length mm [95%]",
                         "velocity mm/day [95%]", "dice_mean", "total s"], body))
    return _page(title, "".join(parts))


def write_cohort_report(out_dir: Path, rows: list[dict]) -> dict[str, Path]:
    """Write ``out_dir/cohort.png`` and ``out_dir/index.html`` atomically; ``{"cohort": png, "index": html}``."""
    out = Path(out_dir)
    png = save_figure(cohort_figure(rows), out / "cohort.png")
    return {"cohort": png, "index": write_text(cohort_index_html(rows, figure_png=png), out / "index.html")}
