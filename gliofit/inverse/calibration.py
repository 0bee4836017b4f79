"""Calibrated intervals: split-conformal scaling of the posterior spread, fitted per database.

The match posterior (:mod:`gliofit.inverse.estimate`) gives, per parameter ``k``, a spread ``s_k``: the
weighted standard deviation over the scored candidates of ``log θ_k`` (positive scalars) or of the seed
point's coordinate (mm, with the quantisation floor of the database voxel). Its size follows the data
(many equally good matches: wide), but not its scale: the heuristic temperature has no reason to give
95 % intervals that hold 95 % of the truths. A calibration set of synthetic patients with known truth
(grown independently of the database, with segmentation noise, :mod:`gliofit.inverse.synthetic`) gives
the normalised errors

    r_k = |g(θ_true) − g(θ̂)| / s_k,       g = log for positive scalars, identity for the origin,

of the reported estimate θ̂ (after refinement). For a level 1 − α the conformal quantile is the
``⌈(n + 1)(1 − α)⌉``-th smallest of the n calibration errors, ``q_k(α)``, and the interval of a new
patient is ``g⁻¹(g(θ̂) ± q_k(α) s_k)``. If calibration and new patients are exchangeable (drawn from one
distribution, as the synthetic generator guarantees for its own patients), the interval holds the truth
with probability at least 1 − α (Vovk et al. 2005; Lei et al. 2018, split conformal prediction), and
above 1 − α by at most 1/(n + 1). Scaling by ``s_k`` keeps intervals narrow where the posterior is
narrow. The file also records the leave-one-out coverage on the calibration patients (each patient's
interval from the quantiles of the others); without ties it is ⌈n(1 − α)⌉/n or near it by construction,
a check of the arithmetic, not of the promise: coverage is measured on held-out patients
(benchmarks/inverse.py).

The file ``DB/gliofit-calibration.json`` holds the quantiles, the database's fingerprint (atlas checksum,
resolution, design seed, entries) and the raw records; a file whose fingerprint names another database is
an InputError.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from gliofit.common.errors import InputError
from gliofit.inverse.estimate import PARAMETER_KEYS, SCALAR_KEYS, weighted_quantile

__all__ = [
    "CALIBRATION_FILE",
    "LOG_KEYS",
    "ORIGIN_KEYS",
    "CALIBRATED_KEYS",
    "LEVELS",
    "METHOD",
    "spreads",
    "normalised_errors",
    "conformal_quantile",
    "fit_quantiles",
    "leave_one_out_coverage",
    "fingerprint",
    "read_calibration",
    "write_calibration",
    "calibrated_uncertainty",
    "calibration_record",
    "calibration_summary",
    "LOG_SPREAD_FLOOR",
]

CALIBRATION_FILE = "gliofit-calibration.json"
LOG_KEYS = SCALAR_KEYS
"""Positive scalars, calibrated on a log scale."""
ORIGIN_KEYS = ("origin_x_mm", "origin_y_mm", "origin_z_mm")
CALIBRATED_KEYS = LOG_KEYS + ORIGIN_KEYS
LEVELS = (0.5, 0.95)
"""Interval levels calibrated (``ci50``, ``ci95``)."""
METHOD = "split-conformal scaling of the match-posterior spread (log scale for positive parameters)"
LOG_SPREAD_FLOOR = 0.01
"""Smallest spread of a log parameter (1 %): one dominant match must not give a zero-width interval."""
FORMAT_VERSION = 1


def spreads(params: dict[str, np.ndarray], weights: np.ndarray, origin_spacing_mm: float) -> dict[str, float]:
    """Posterior spread per calibrated key: weighted std of log θ (floored), or of each origin axis, mm
    (with the voxel's quantisation variance spacing²/12)."""
    w = np.asarray(weights, dtype=np.float64)
    out = {}
    for k in LOG_KEYS:
        x = np.log(np.maximum(np.asarray(params[k], dtype=np.float64), 1e-12))
        m = float(np.sum(w * x))
        out[k] = max(LOG_SPREAD_FLOOR, float(np.sqrt(max(np.sum(w * (x - m) ** 2), 0.0))))
    o = np.asarray(params["origin_mm"], dtype=np.float64)
    for a, k in enumerate(ORIGIN_KEYS):
        m = float(np.sum(w * o[:, a]))
        var = max(float(np.sum(w * (o[:, a] - m) ** 2)), 0.0)
        out[k] = float(np.sqrt(var + origin_spacing_mm**2 / 12.0))
    return out


def _values(p: dict) -> dict[str, float]:
    out = {k: float(p[k]) for k in LOG_KEYS}
    out.update({k: float(v) for k, v in zip(ORIGIN_KEYS, p["origin_mm"])})
    return out


def normalised_errors(estimate: dict, truth: dict, spread: dict) -> dict[str, float]:
    """``r_k = |g(truth) − g(estimate)| / s_k`` per calibrated key (module docstring)."""
    e, t = _values(estimate), _values(truth)
    out = {}
    for k in CALIBRATED_KEYS:
        d = math.log(t[k] / e[k]) if k in LOG_KEYS else t[k] - e[k]
        out[k] = abs(d) / spread[k]
    return out


def conformal_quantile(errors, level: float) -> float:
    """The ``⌈(n + 1) level⌉``-th smallest error (inf when that exceeds n)."""
    r = np.sort(np.asarray(errors, dtype=np.float64))
    k = int(math.ceil((len(r) + 1) * level))
    return float(r[k - 1]) if 1 <= k <= len(r) else math.inf


def fit_quantiles(records: list[dict]) -> dict[str, dict[str, float]]:
    """``{key: {"q50", "q95"}}`` from records holding ``errors`` (:func:`normalised_errors`)."""
    return {
        k: {f"q{round(100 * lv)}": conformal_quantile([r["errors"][k] for r in records], lv) for lv in LEVELS}
        for k in CALIBRATED_KEYS
    }


def leave_one_out_coverage(records: list[dict]) -> dict[str, dict[str, float]]:
    """``{"coverage50": {key: share}, "coverage95": {key: share}}``: each record's error against the quantile
    fitted on the others."""
    out: dict[str, dict[str, float]] = {f"coverage{round(100 * lv)}": {} for lv in LEVELS}
    for k in CALIBRATED_KEYS:
        r = np.array([rec["errors"][k] for rec in records])
        for lv in LEVELS:
            hits = [r[i] <= conformal_quantile(np.delete(r, i), lv) for i in range(len(r))]
            out[f"coverage{round(100 * lv)}"][k] = round(float(np.mean(hits)), 4) if hits else math.nan
    return out


def fingerprint(db) -> dict:
    """What identifies the database a calibration belongs to."""
    m = db.manifest
    return {
        "atlas_checksum": m.to_dict().get("atlas_checksum"),
        "resolution_mm": float(m.resolution_mm),
        "design_seed": int(m.design.get("seed", 0)),
        "entries": int(len(db.entries["id"])),
    }


def write_calibration(db, records: list[dict], settings: dict, path: str | Path | None = None) -> Path:
    """Fit and write the calibration of ``db`` (``DB/gliofit-calibration.json`` by default)."""
    from gliofit.inverse.result import write_json

    if len(records) < 2:
        raise InputError(f"calibration needs at least 2 patients, got {len(records)}")
    doc = {
        "format_version": FORMAT_VERSION,
        "method": METHOD,
        "database": fingerprint(db),
        "patients": len(records),
        "settings": settings,
        "quantiles": fit_quantiles(records),
        **leave_one_out_coverage(records),
        "records": records,
    }
    return write_json(doc, Path(path) if path else Path(db.path) / CALIBRATION_FILE)


def read_calibration(db, path: str | Path | None = None) -> tuple[dict | None, str | None]:
    """(calibration, warning): the file given or ``DB/gliofit-calibration.json``.

    None with a warning saying how to calibrate when there is none; InputError when the file is unreadable
    or belongs to another database; a warning when the database has grown since.
    """
    p = Path(path) if path else Path(db.path) / CALIBRATION_FILE
    if not p.is_file():
        if path:
            raise InputError(f"{p}: calibration file not found")
        return None, (
            f"{db.path}: the database has no calibration, so the intervals are the uncalibrated "
            f"match summary; calibrate it with `gliofit db calibrate {db.path}`"
        )
    try:
        doc = json.loads(p.read_text())
        quantiles = {k: {q: float(v) for q, v in doc["quantiles"][k].items()} for k in CALIBRATED_KEYS}
        fp = doc["database"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{p}: not a gliofit calibration file ({type(err).__name__}: {err})") from None
    mine = fingerprint(db)
    for k in ("atlas_checksum", "resolution_mm", "design_seed"):
        if fp.get(k) != mine[k]:
            raise InputError(f"{p}: calibration of another database ({k} {fp.get(k)!r}, {db.path} has {mine[k]!r})")
    warning = None
    if fp.get("entries") != mine["entries"]:
        warning = (
            f"{p}: calibrated at {fp.get('entries')} entries, the database now holds {mine['entries']}; "
            f"re-run `gliofit db calibrate {db.path}`"
        )
    doc["quantiles"] = quantiles
    return doc, warning


def _interval(value: float, spread: float, q: float, log: bool) -> list[float]:
    if not math.isfinite(q):
        return [0.0 if log else -math.inf, math.inf]
    if log:
        return [value * math.exp(-q * spread), value * math.exp(q * spread)]
    return [value - q * spread, value + q * spread]


def calibrated_uncertainty(
    point: dict, params: dict[str, np.ndarray], weights: np.ndarray, spread: dict, quantiles: dict
) -> dict:
    """``uncertainty`` of result.json from the calibration: per key ``mean`` (the estimate, the centre of the
    calibrated distribution), ``std`` (the spread on the parameter's scale), ``ci95`` and ``ci50``
    (calibrated, around the estimate); the thresholds keep the posterior summary."""
    w = np.asarray(weights, dtype=np.float64)
    out = {}
    for k in PARAMETER_KEYS:
        if k == "origin_mm":
            ivs = {
                lv: [
                    _interval(point[k][a], spread[ok], quantiles[ok][f"q{round(100 * lv)}"], False)
                    for a, ok in enumerate(ORIGIN_KEYS)
                ]
                for lv in LEVELS
            }
            out[k] = {
                "mean": [float(v) for v in point[k]],
                "std": [spread[ok] for ok in ORIGIN_KEYS],
                "ci95": [[c[0] for c in ivs[0.95]], [c[1] for c in ivs[0.95]]],
                "ci50": [[c[0] for c in ivs[0.5]], [c[1] for c in ivs[0.5]]],
            }
        elif k in LOG_KEYS:
            v = float(point[k])
            out[k] = {
                "mean": v,
                "std": v * spread[k],
                "ci95": _interval(v, spread[k], quantiles[k]["q95"], True),
                "ci50": _interval(v, spread[k], quantiles[k]["q50"], True),
            }
        else:
            x = np.asarray(params[k], dtype=np.float64)
            m = float(np.sum(w * x))
            out[k] = {
                "mean": m,
                "std": float(np.sqrt(max(np.sum(w * (x - m) ** 2), 0.0))),
                "ci95": [float(v) for v in weighted_quantile(x, w, [0.025, 0.975])],
                "ci50": [float(v) for v in weighted_quantile(x, w, [0.25, 0.75])],
            }
    return out


def calibration_record(res, truth: dict, case: str) -> dict:
    """One calibration record: the estimate, its spread, the truth and the normalised errors."""
    est = {k: res.parameters[k] for k in LOG_KEYS + ("origin_mm",)}
    tru = {k: truth[k] for k in LOG_KEYS + ("origin_mm",)}
    spread = res.extra["spread"]
    return {
        "case": case,
        "estimate": est,
        "truth": tru,
        "spread": spread,
        "errors": normalised_errors(est, tru, spread),
    }


def calibration_summary(calib: dict | None, warning: str | None, uncalibrated: str) -> dict:
    """The ``calibration`` block of result.json: the file's method, coverage and size (``uncalibrated`` names
    the intervals' method when there is no file); the reader's warning, if any."""
    if calib is None:
        return {"method": f"none: {uncalibrated}", "coverage95": {}, "warning": warning}
    out = {
        "method": calib["method"],
        "coverage95": calib["coverage95"],
        "coverage50": calib["coverage50"],
        "patients": calib["patients"],
        "database_entries": calib["database"]["entries"],
    }
    if warning:
        out["warning"] = warning
    return out
