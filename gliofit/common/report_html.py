"""Self-contained report pages: a patient's ``report.html`` (``run`` and ``infer``) and a cohort's ``index.html``.

Images are embedded as base64 data URIs, so a report is one file that can be mailed or archived;
every text from results or CSV rows is HTML-escaped. Parameters are shown with their reader's
names (:mod:`gliofit.common.wording`), the result.json key in small print; matches are grouped by
simulation (several snapshots in time of one simulation are one row).
"""

from __future__ import annotations

import base64
import math
from html import escape
from pathlib import Path
from urllib.parse import quote

import numpy as np

from gliofit.common.figures import COHORT_HISTOGRAMS
from gliofit.common.wording import fit_warnings, label, plan_label, unit

__all__ = ["patient_html", "cohort_index_html", "group_matches"]

_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:.5em 0}"
    "td,th{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}th{background:#f3f3f3}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}.failed{color:#b00}img{max-width:100%}"
    ".key{color:#888;font-size:80%}.warning{color:#b00;font-weight:bold}"
)


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
    mime = (
        "image/png"
        if data[:8] == b"\x89PNG\r\n\x1a\n"
        else "image/jpeg"
        if data[:3] == b"\xff\xd8\xff"
        else "image/svg+xml"
        if data.lstrip()[:5] in (b"<?xml", b"<svg ")
        else "image/png"
    )
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _img(name: str, image: Path | str | bytes) -> str:
    return (
        f'<figure><img src="{_data_uri(image)}" alt="{escape(name)}"><figcaption>{escape(name)}</figcaption></figure>'
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Rows of already-escaped cells; cells that look numeric are right-aligned."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if _num(c) is not None else f"<td>{c}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _flat(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for k, v in d.items():
        out += _flat(v, f"{prefix}{k} / ") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return out


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>\n"
    )


def _name(key: str) -> str:
    """The reader's label with the result.json key in small print."""
    return f'{escape(label(key))} <span class="key">{escape(key)}</span>'


def _parameter_rows(parameters: dict, uncertainty: dict) -> list[list[str]]:
    rows = []
    for k, v in parameters.items():
        u = uncertainty.get(k) or {}
        ci = u.get("ci95") or [None, None]
        if isinstance(v, (list, tuple)):  # origin_mm: one row per axis
            means, stds = u.get("mean") or [None] * len(v), u.get("std") or [None] * len(v)
            lows, highs = ci if len(ci) == 2 and isinstance(ci[0], (list, tuple)) else ([None] * len(v),) * 2
            rows += [
                [
                    _name(k) + f" {'xyz'[a] if a < 3 else a}",
                    escape(unit(k)),
                    _fmt(x),
                    _fmt(means[a]),
                    _fmt(stds[a]),
                    f"{_fmt(lows[a])} to {_fmt(highs[a])}",
                ]
                for a, x in enumerate(v)
            ]
        else:
            rows.append(
                [
                    _name(k),
                    escape(unit(k)),
                    _fmt(v),
                    _fmt(u.get("mean")),
                    _fmt(u.get("std")),
                    f"{_fmt(ci[0])} to {_fmt(ci[1])}",
                ]
            )
    return rows


def group_matches(matches: list[dict]) -> list[dict]:
    """Matches grouped by ``simulation_id`` (a row per simulation, in the order of its best rank).

    Each group: ``simulation_id``, ``best`` (the best-ranked match), ``ranks`` and ``T_days`` of its snapshots.
    """
    groups: dict = {}
    for m in matches:
        sim = m.get("simulation_id", m.get("entry_id"))
        g = groups.setdefault(sim, {"simulation_id": sim, "best": m, "ranks": [], "T_days": []})
        g["ranks"].append(m.get("rank"))
        g["T_days"].append((m.get("parameters") or {}).get("T_days"))
    return list(groups.values())


def _matches_table(matches: list[dict], limit: int) -> str:
    groups = group_matches(matches)
    rows = []
    for g in groups[:limit]:
        m, p = g["best"], g["best"].get("parameters") or {}
        times = sorted(t for t in g["T_days"] if _num(t) is not None)
        snaps = f"{len(g['ranks'])}: " + ", ".join(_fmt(t) for t in times) if times else str(len(g["ranks"]))
        rows.append(
            [
                _fmt(m.get("rank")),
                _fmt(g["simulation_id"]),
                escape(snaps),
                _fmt(m.get("dice_whole_tumor")),
                _fmt(m.get("dice_core")),
            ]
            + [_fmt(p.get(k)) for k in ("mu_D_mm", "mu_rho", "D_mm2_per_day", "rho_per_day", "T_days", "origin_mm")]
        )
    note = (
        f"<p>first {limit} of {len(groups)} simulations ({len(matches)} matches)</p>"
        if len(groups) > limit
        else f"<p>{len(groups)} simulations, {len(matches)} matches (snapshots in time of one simulation share "
        "a row)</p>"
    )
    return (
        _table(
            [
                "best rank",
                "simulation",
                "snapshots matched: T days",
                "Dice whole tumour",
                "Dice core",
                "μ_D mm",
                "μ_ρ",
                "D mm²/day",
                "ρ 1/day",
                "T days (best)",
                "seed point mm",
            ],
            rows,
        )
        + note
    )


def patient_html(
    result: dict,
    *,
    images: dict[str, Path | bytes],
    plan: dict | None = None,
    title: str | None = None,
    max_matches: int = 10,
) -> str:
    """A self-contained ``report.html`` (images embedded as base64 data URIs; every text HTML-escaped).

    Parameters
    ----------
    result : the content of result.json (INTERFACES.md); missing sections are left out.
    images : caption -> PNG path or bytes, embedded in order.
    plan : the content of plan.json (target volumes in cm³, recurrence coverage, ...), shown key by key.
    title : page heading; default ``"gliofit: <patient name>"`` when ``result["patient"]["name"]`` exists.
    max_matches : rows (simulations) of the top-matches table.
    """
    name = (result.get("patient") or {}).get("name")
    title = title or (f"gliofit: {name}" if name else "gliofit: personalised growth model")
    fit = result.get("fit") or {}
    warnings = list(result.get("warnings") or fit_warnings(fit))
    parts = [f'<p class="warning">{escape(w)}</p>' for w in warnings]
    parts += [_img(k, v) for k, v in images.items()]
    info = [
        [escape(k), _fmt(v)]
        for k, v in _flat(
            {"gliofit_version": result.get("gliofit_version", ""), "space": result.get("space", "")}
            | {"patient": result.get("patient") or {}}
        )
    ]
    parts.append(_table(["field", "value"], info))
    parts.append(
        "<h2>Parameters</h2><p>best match; mean, standard deviation and 95% interval over the weighted top matches</p>"
    )
    parts.append(
        _table(
            ["parameter", "unit", "best match", "mean", "std", "95% interval"],
            _parameter_rows(result.get("parameters") or {}, result.get("uncertainty") or {}),
        )
    )
    parts.append(
        "<h2>Fit</h2><p>overlap of the best simulation's visible tumour with the segmentation "
        "(1 = identical)</p>" + _table(["measure", "value"], [[_name(k), _fmt(v)] for k, v in fit.items()])
    )
    if plan:
        first = sorted(_flat(plan), key=lambda kv: (not kv[0].startswith("volume"), "coverage" not in kv[0]))
        parts.append(
            "<h2>Radiotherapy plan</h2><p>target volumes (cm³) and recurrence coverage</p>"
            + _table(
                ["quantity", "value"],
                [[f'{escape(plan_label(k))} <span class="key">{escape(k)}</span>', _fmt(v)] for k, v in first],
            )
        )
    parts.append("<h2>Top matches</h2>" + _matches_table(list(result.get("matches") or []), max_matches))
    db = result.get("database") or {}
    parts.append("<h2>Database</h2>" + _table(["field", "value"], [[escape(k), _fmt(v)] for k, v in _flat(db)]))
    times = result.get("timings_s") or {}
    parts.append("<h2>Timings</h2>" + _table(["stage", "seconds"], [[escape(k), _fmt(v)] for k, v in times.items()]))
    return _page(title, "".join(parts))


def _is_ok(row: dict) -> bool:
    return str(row.get("status", "")).strip().lower() == "ok"


def _total_s(row: dict) -> float | None:
    for key in ("total", "total_s", "timings_s_total", "time_total_s"):
        if _num(row.get(key)) is not None:
            return _num(row.get(key))
    return None


def cohort_index_html(rows: list[dict], *, figure_png: Path | bytes | None, title: str = "gliofit cohort") -> str:
    """``OUT/index.html``: the cohort figure embedded and one row per patient.

    An ``ok`` patient's name links to ``<patient>/report.html`` (relative, URL-quoted); a failed row shows its
    error, a poor fit its warning. Columns: patient, status, error or warning, the key parameters (with 95%
    interval when the CSV has it), mean Dice and total time (s).
    """
    keys = [k for k, _ in COHORT_HISTOGRAMS[:4]]
    body = []
    for r in rows:
        name = str(r.get("patient", ""))
        cell = (
            f'<a href="{escape(quote(name, safe="") + "/report.html")}">{escape(name)}</a>'
            if _is_ok(r) and name
            else escape(name)
        )
        params = []
        for k in keys:
            lo, hi = _num(r.get(f"{k}_ci95_low")), _num(r.get(f"{k}_ci95_high"))
            params.append(_fmt(r.get(k)) + (f" [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None and hi is not None else ""))
        note = escape(str(r.get("error") or r.get("warnings") or ""))
        status = escape(str(r.get("status", "")))
        body.append(
            [
                cell,
                status if _is_ok(r) else f'<span class="failed">{status}</span>',
                note,
                *params,
                _fmt(r.get("dice_mean")),
                _fmt(_total_s(r)),
            ]
        )
    n_ok = sum(_is_ok(r) for r in rows)
    parts = [f"<p>{n_ok} ok, {len(rows) - n_ok} failed, {len(rows)} patients</p>"]
    if figure_png is not None:
        parts.append(_img("cohort.png", figure_png))
    parts.append(
        _table(
            [
                "patient",
                "status",
                "error / warning",
                "μ_D mm [95%]",
                "μ_ρ [95%]",
                "infiltration length mm [95%]",
                "speed mm/day [95%]",
                "mean Dice",
                "total s",
            ],
            body,
        )
    )
    return _page(title, "".join(parts))
