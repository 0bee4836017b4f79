"""How results are put into words for people: parameter labels and units, figure titles, fit warnings.

One place for the names a clinician reads (in figures, report pages, warnings) instead of the
result.json keys, and for the Dice level below which a fit is called poor.

>>> label("infiltration_length_mm")
'infiltration length √(D/ρ)'
>>> fit_warnings({"dice_whole_tumor": 0.4, "dice_core": 0.3, "dice_mean": 0.35})[0][:26]
'poor fit: mean Dice 0.35 <'
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = [
    "LABELS",
    "PLAN_LABELS",
    "UNITS",
    "POOR_FIT_DICE_MEAN",
    "label",
    "plan_label",
    "unit",
    "fit_warnings",
    "value_with_interval",
    "parameters_title",
]

LABELS = {
    "D_mm2_per_day": "diffusivity D (white matter)",
    "rho_per_day": "proliferation rate ρ",
    "T_days": "time since onset T",
    "mu_D_mm": "spread μ_D = √(D·T)",
    "mu_rho": "growth μ_ρ = √(ρ·T)",
    "infiltration_length_mm": "infiltration length √(D/ρ)",
    "velocity_mm_per_day": "speed of the tumour front 2√(D·ρ)",
    "origin_mm": "seed point (atlas, RAS)",
    "threshold_edema": "visibility threshold, FLAIR",
    "threshold_core": "visibility threshold, T1Gd",
    "dice_whole_tumor": "Dice, whole tumour",
    "dice_core": "Dice, tumour core",
    "dice_mean": "Dice, mean",
}
"""result.json key -> what a reader sees."""
UNITS = {
    "D_mm2_per_day": "mm²/day",
    "rho_per_day": "1/day",
    "T_days": "days",
    "mu_D_mm": "mm",
    "mu_rho": "",
    "infiltration_length_mm": "mm",
    "velocity_mm_per_day": "mm/day",
    "origin_mm": "mm",
    "threshold_edema": "of capacity",
    "threshold_core": "of capacity",
}
PLAN_LABELS = {
    "margin_mm": "standard target: margin around the core, mm",
    "basis": "standard target grown from",
    "brain": "brain mask the targets are clipped to",
    "threshold": "model target: lowest density inside (fraction of capacity)",
    "volumes_cm3 / core": "tumour core, cm³",
    "volumes_cm3 / whole_tumor": "whole tumour, cm³",
    "volumes_cm3 / standard": "standard target (core + margin), cm³",
    "volumes_cm3 / model": "model-based target (highest density, same volume), cm³",
    "voxels / standard": "standard target, voxels",
    "voxels / model": "model-based target, voxels",
    "spacing_mm": "voxel spacing, mm",
    "dice_standard_model": "overlap of the two targets (Dice)",
    "core_voxels_forced": "core voxels added to the model target below its threshold",
    "zero_density_voxels": "model-target voxels outside the core with density 0",
    "coverage": "recurrence covered",
    "coverage / standard": "recurrence covered by the standard target (share)",
    "coverage / model": "recurrence covered by the model-based target (share)",
    "coverage / standard_enhancing": "enhancing recurrence covered by the standard target (share)",
    "coverage / model_enhancing": "enhancing recurrence covered by the model-based target (share)",
    "recurrence / file": "recurrence file",
    "recurrence / kind": "recurrence given as",
    "recurrence / volume_cm3": "recurrence, cm³",
    "recurrence / enhancing_cm3": "enhancing recurrence, cm³",
    "inputs / density": "density file",
    "inputs / segmentation": "segmentation file",
    "warnings": "warnings",
}
"""plan.json key (nested keys joined by `` / ``) -> what a reader sees."""
POOR_FIT_DICE_MEAN = 0.5
"""Below this mean Dice (whole tumour and core) the best simulation covers less than half of the
tumour it should explain: its parameters and density are flagged as a poor fit."""


def label(key: str) -> str:
    """The reader's name of a result.json key (the key itself when it has none)."""
    return LABELS.get(key, key.replace("_", " "))


def unit(key: str) -> str:
    return UNITS.get(key, "")


def plan_label(path: str) -> str:
    """The reader's name of a plan.json key (nested keys joined by `` / ``; the path itself when it has none)."""
    return PLAN_LABELS.get(path, path.replace("_", " "))


def fit_warnings(fit: Mapping[str, float]) -> list[str]:
    """One-line warnings about a fit (``result.json``'s ``fit``); empty when the fit is acceptable."""
    dice = fit.get("dice_mean")
    if dice is None or not math.isfinite(float(dice)) or float(dice) >= POOR_FIT_DICE_MEAN:
        return []
    return [
        f"poor fit: mean Dice {float(dice):.2f} < {POOR_FIT_DICE_MEAN} (whole tumour "
        f"{float(fit.get('dice_whole_tumor', float('nan'))):.2f}, core {float(fit.get('dice_core', float('nan'))):.2f}); "
        "the parameters and density describe this tumour poorly"
    ]


def _num(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def value_with_interval(key: str, value: float, ci95: tuple[float, float] | list | None = None) -> str:
    """``"2.7 mm (95 %: 2.2 to 3.2)"``: a value, its unit and, when given, its 95 % interval."""
    u = unit(key)
    text = _num(float(value)) + (f" {u}" if u else "")
    if ci95 is not None and len(ci95) == 2 and not isinstance(ci95[0], (list, tuple)):
        text += f" (95 %: {_num(float(ci95[0]))} to {_num(float(ci95[1]))})"
    return text


def parameters_title(
    parameters: Mapping, uncertainty: Mapping | None = None, fit: Mapping | None = None, name: str | None = None
) -> str:
    """A figure title in three lines: what a clinician reads first (infiltration length, speed), the model
    parameters D, ρ, T, the identifiable μ_D, μ_ρ, each with its 95 % interval when ``uncertainty`` has one."""
    unc = uncertainty or {}

    def part(key: str, short: str) -> str:
        if key not in parameters:
            return ""
        return f"{short} {value_with_interval(key, parameters[key], (unc.get(key) or {}).get('ci95'))}"

    first = [part("infiltration_length_mm", "infiltration length"), part("velocity_mm_per_day", "speed")]
    if fit and fit.get("dice_mean") is not None:
        first.append(f"fit: mean Dice {float(fit['dice_mean']):.2f}")
    lines = [
        (f"{name}: " if name else "") + ", ".join(p for p in first if p),
        ", ".join(p for p in (part("D_mm2_per_day", "D"), part("rho_per_day", "ρ"), part("T_days", "T")) if p),
        ", ".join(p for p in (part("mu_D_mm", "μ_D"), part("mu_rho", "μ_ρ")) if p),
    ]
    return "\n".join(line for line in lines if line)
