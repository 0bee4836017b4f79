"""Calibrated intervals of the two-scan estimate: the single-scan method (:mod:`gliofit.inverse.calibration`).

The two-scan fit (:mod:`gliofit.inverse.longitudinal`) ends with weighted samples around its estimate: the
joint database candidates and every point the refinement evaluated, each weighted ``exp((s_i - s_max) / tau)``
by its joint score (:func:`gliofit.inverse.estimate.match_weights`). Their spread per parameter
(:func:`gliofit.inverse.calibration.spreads`, at the later scan), widened by what the two segmented volumes
leave unknown of the time scale (:data:`TIME_SCALE_SENSITIVITY`), is scaled to 50 % and 95 % intervals by
split-conformal quantiles of the normalised errors of synthetic pairs with known truth
(:func:`~gliofit.inverse.calibration.calibration_record`, :func:`~gliofit.inverse.calibration.write_calibration`;
``benchmarks/longitudinal.py`` fits them), the rule and the file format of the
single-scan calibration. The two-scan file lies next to the single-scan one, ``DB/`` :data:`CALIBRATION_FILE`;
one fitted on another database is refused. Without one the intervals are the uncalibrated weighted quantiles
of the samples (:func:`gliofit.inverse.estimate.summarise`) and result.json says so.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gliofit.common.errors import InputError
from gliofit.common.units import derived_parameters
from gliofit.inverse.calibration import calibrated_uncertainty, read_calibration, spreads
from gliofit.inverse.estimate import match_weights, summarise

__all__ = ["CALIBRATION_FILE", "read_two_scan_calibration", "two_scan_uncertainty"]

CALIBRATION_FILE = "gliofit-calibration-two-scan.json"
"""The two-scan calibration in the database folder."""
TIME_SCALE_SENSITIVITY = {"D_mm2_per_day": 1.0, "rho_per_day": 1.0, "velocity_mm_per_day": 1.0, "T_days": None}
"""d log(parameter) / d log(s) at the later scan; None: T, whose first-scan part scales as 1/s. mu_D, mu_rho
and the infiltration length do not depend on s."""


def read_two_scan_calibration(db, path: str | Path | None = None) -> tuple[dict | None, str | None]:
    """(calibration, warning) as :func:`~gliofit.inverse.calibration.read_calibration`, from ``path`` or
    ``DB/`` :data:`CALIBRATION_FILE`; (None, a warning) when the database has none."""
    p = Path(path) if path else Path(db.path) / CALIBRATION_FILE
    if path is None and not p.is_file():
        return None, (
            f"{db.path}: no two-scan calibration ({CALIBRATION_FILE}), so the intervals are the uncalibrated "
            "weighted quantiles of the fit's samples; fit one with benchmarks/longitudinal.py and copy it there"
        )
    return read_calibration(db, p)


def _late(D, rho, T_late, origin, thresholds) -> dict:
    """Parameter arrays (or scalars) at the later scan, with the derived ones."""
    return {
        "D_mm2_per_day": D,
        "rho_per_day": rho,
        "T_days": T_late,
        **derived_parameters(D, rho, T_late),
        "origin_mm": origin,
        "threshold_edema": thresholds[0],
        "threshold_core": thresholds[1],
    }


def two_scan_uncertainty(
    samples: dict[str, np.ndarray],
    point: dict,
    days_between: float,
    calibration: dict | None,
    spacing_mm: float,
    sd_log_time_scale: float = 0.0,
) -> tuple[dict, dict]:
    """(``uncertainty`` of result.json, the spreads) at the later scan.

    ``samples``: arrays ``D_mm2_per_day``, ``rho_per_day``, ``T_days`` (at the first scan), ``origin_mm``
    (n, 3), ``score``; ``point``: the estimate's parameters at the later scan (``PARAMETER_KEYS``);
    ``calibration``: as :func:`read_two_scan_calibration` (None: uncalibrated); ``spacing_mm``: the database
    voxel (the origin's quantisation floor); ``sd_log_time_scale``: how well the two volumes fix the time
    scale s (:func:`~gliofit.inverse.two_scan_refine.scan_times`), added in quadrature to the spreads of the
    parameters that scale with s (D, rho, the speed: as s; T at the later scan: as T_first / T_later).
    """
    if len(samples["score"]) == 0:
        raise InputError("two-scan fit: no evaluated samples to summarise")
    n = len(samples["score"])
    w = match_weights(np.asarray(samples["score"], dtype=np.float64))
    thresholds = (np.full(n, float(point["threshold_edema"])), np.full(n, float(point["threshold_core"])))
    params = {
        k: np.asarray(v, dtype=np.float64)
        for k, v in _late(
            samples["D_mm2_per_day"],
            samples["rho_per_day"],
            np.asarray(samples["T_days"]) + float(days_between),
            samples["origin_mm"],
            thresholds,
        ).items()
    }
    spread = spreads(params, w, spacing_mm)
    T_late = float(point["T_days"])
    for k, f in TIME_SCALE_SENSITIVITY.items():
        scale = f if f is not None else (T_late - float(days_between)) / T_late
        spread[k] = math.hypot(spread[k], scale * float(sd_log_time_scale))
    if calibration is None:
        return summarise(params, w, origin_spacing_mm=spacing_mm), spread
    return calibrated_uncertainty(point, params, w, spread, calibration["quantiles"]), spread
