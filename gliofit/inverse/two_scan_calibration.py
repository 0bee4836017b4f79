"""Calibrated intervals of the two-scan estimate: the spread of the posterior samples, scaled by a fitted factor.

The two-scan fit (:mod:`gliofit.inverse.longitudinal`) ends with weighted samples around its estimate: the
joint database candidates and every point the refinement's CMA-ES evaluated, each with weight
``exp((s_i - s_max) / tau)`` from its joint score (the estimate's temperature rule,
:func:`gliofit.inverse.estimate.match_weights`). Their weighted standard deviation ``sigma_k`` of
``log k`` (per axis in mm for the origin) measures how far the data let the parameter move, but not on an
absolute scale: CMA-ES concentrates its samples as it converges. The 95 % interval is therefore

    log k_hat ± kappa_k · sigma_k        (origin: x_hat ± kappa · sigma per axis),

with ``kappa_k`` fitted on synthetic patients whose truth is known: the split-conformal 95 % quantile
(the ``ceil((n + 1) 0.95)``-th smallest of n) of ``|log k_hat - log k_true| / sigma_k`` over a calibration set
(:func:`fit_calibration`), the rule of the single-scan calibration (issue 15). Coverage is then
measured on patients NOT in that set (``benchmarks/longitudinal.py`` does both halves, cross-fitted).
A calibration is stored as JSON with the database it was fitted on; one from another database is refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gliofit.common.errors import InputError

__all__ = [
    "CALIBRATED_KEYS",
    "DEFAULT_CALIBRATION",
    "SIGMA_FLOOR",
    "Calibration",
    "database_identity",
    "fit_calibration",
    "load_calibration",
]

CALIBRATED_KEYS = (
    "D_mm2_per_day",
    "rho_per_day",
    "T_days",
    "mu_D_mm",
    "mu_rho",
    "infiltration_length_mm",
    "velocity_mm_per_day",
    "origin_mm",
)
SIGMA_FLOOR = {"log": 0.01, "origin_mm": 0.25}
"""Smallest spread used: 1 % in a log-parameter, 0.25 mm in an origin coordinate."""
CALIBRATION_FILE = "calibration-two-scan.json"
"""Looked for in the database folder when no calibration is given."""


@dataclass(frozen=True)
class Calibration:
    """Scale factors of the posterior spread (``kappa``), where they were fitted, and the coverage measured.

    Attributes
    ----------
    kappa : factor per key of :data:`CALIBRATED_KEYS` turning one spread into the 95 % half-width.
    method : a name for result.json.
    source : where the factors come from (a file, or the built-in default).
    database : identity of the database fitted on (:func:`database_identity`), empty for the default.
    coverage95 : measured 95 % coverage per key on held-out patients (empty when not measured).
    """

    kappa: dict
    method: str = "posterior-spread x kappa fitted on synthetic two-scan patients"
    source: str = "default"
    database: dict = field(default_factory=dict)
    coverage95: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path: str | Path) -> Path:
        from gliofit.common.io import write_json

        return write_json(self.to_dict(), path)

    def summary(self) -> dict:
        """The ``calibration`` block of result.json."""
        return {
            "method": self.method,
            "source": self.source,
            "kappa": dict(self.kappa),
            "coverage95": dict(self.coverage95),
        }


DEFAULT_CALIBRATION = Calibration(
    kappa={
        "D_mm2_per_day": 4.0,
        "rho_per_day": 4.0,
        "T_days": 4.0,
        "mu_D_mm": 4.0,
        "mu_rho": 4.0,
        "infiltration_length_mm": 4.0,
        "velocity_mm_per_day": 4.0,
        "origin_mm": 4.0,
    },
    source="default (no calibration for this database)",
)


def database_identity(db) -> dict:
    """What makes a calibration valid for ``db``: atlas, resolution and entries."""
    return {
        "atlas": db.manifest.atlas,
        "resolution_mm": float(db.manifest.resolution_mm),
        "entries": len(db.entries["id"]),
    }


def conformal_quantile(errors, level: float) -> float:
    """The ``ceil((n + 1) level)``-th smallest of n errors (split conformal; inf when that exceeds n)."""
    r = np.sort(np.asarray(errors, dtype=np.float64))
    k = math.ceil((len(r) + 1) * level)
    return float(r[k - 1]) if 1 <= k <= len(r) else math.inf


def fit_calibration(records: list[dict], *, level: float = 0.95, source: str = "fitted") -> Calibration:
    """``kappa_k`` = the conformal ``level`` quantile of the standardised errors over ``records``.

    Each record maps a key of :data:`CALIBRATED_KEYS` to ``(estimate, sigma, truth)``: for a scalar key the
    estimate and truth in their units and sigma of the log; for ``origin_mm`` three-vectors in mm.
    """
    kappa = {}
    for k in CALIBRATED_KEYS:
        z = []
        for r in records:
            if k not in r:
                continue
            est, sigma, truth = (np.asarray(v, dtype=np.float64) for v in r[k])
            if k == "origin_mm":
                z.extend(np.abs(est - truth) / np.maximum(sigma, SIGMA_FLOOR["origin_mm"]))
            else:
                z.append(abs(np.log(est) - np.log(truth)) / max(float(sigma), SIGMA_FLOOR["log"]))
        if z:
            kappa[k] = conformal_quantile(z, level)
    if not kappa:
        raise InputError("fit_calibration: no records to fit on")
    return Calibration(kappa={**DEFAULT_CALIBRATION.kappa, **kappa}, source=source)


def load_calibration(db, path: str | Path | None = None) -> Calibration:
    """The calibration for ``db``: ``path``, else ``DB/calibration-two-scan.json``, else the default.

    A file fitted on another database (atlas, resolution or entry count differ) is refused (InputError).
    """
    p = Path(path) if path is not None else Path(db.path) / CALIBRATION_FILE
    if path is None and not p.is_file():
        return DEFAULT_CALIBRATION
    try:
        d = json.loads(p.read_text())
        cal = Calibration(
            kappa={k: float(v) for k, v in d["kappa"].items()},
            method=str(d.get("method", "")),
            source=str(p),
            database=dict(d.get("database", {})),
            coverage95=dict(d.get("coverage95", {})),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{p}: not a two-scan calibration file ({err})") from None
    want = database_identity(db)
    if cal.database and any(cal.database.get(k) != v for k, v in want.items()):
        raise InputError(f"{p}: calibration was fitted on another database ({cal.database}), not {db.path} ({want})")
    return Calibration(
        kappa={**DEFAULT_CALIBRATION.kappa, **cal.kappa},
        method=cal.method or DEFAULT_CALIBRATION.method,
        source=cal.source,
        database=cal.database,
        coverage95=cal.coverage95,
    )
