"""The demo's table and verdict, on constructed truth and result.json values (no database, no run)."""

from __future__ import annotations

import math

import pytest

from gliofit.pipelines.demo import (
    RECOVERED_DICE_MEAN,
    comparison_rows,
    interval_checks,
    origin_error_mm,
    table_lines,
    verdict,
)

TRUTH = {
    "mu_D_mm": 8.0,
    "mu_rho": 3.0,
    "infiltration_length_mm": 2.5,
    "velocity_mm_per_day": 0.2,
    "D_mm2_per_day": 0.3,
    "rho_per_day": 0.04,
    "T_days": 250.0,
    "origin_mm": [-28.0, -12.0, 22.0],
}


def _result(*, origin=(-27.0, -12.0, 22.0), dice_mean=0.9, resolution_mm=2.0) -> dict:
    """A result.json whose intervals hold the truth except infiltration length (above) and origin y (below)."""
    ci = {
        "mu_D_mm": [7.0, 9.0],
        "mu_rho": [3.0, 3.5],  # the truth on the bound counts as inside
        "infiltration_length_mm": [2.6, 3.0],
        "velocity_mm_per_day": [0.1, 0.3],
        "D_mm2_per_day": [0.1, 0.5],
        "rho_per_day": [0.01, 0.1],
        "T_days": [100.0, 400.0],
    }
    params = {k: (lo + hi) / 2 for k, (lo, hi) in ci.items()}
    params["origin_mm"] = list(origin)
    unc = {k: {"ci95": v} for k, v in ci.items()}
    unc["origin_mm"] = {"ci95": [[-30.0, -11.0, 20.0], [-26.0, -8.0, 24.0]]}
    return {
        "parameters": params,
        "uncertainty": unc,
        "fit": {"dice_whole_tumor": dice_mean + 0.02, "dice_core": dice_mean - 0.02, "dice_mean": dice_mean},
        "database": {"resolution_mm": resolution_mm},
        "calibration": {"method": "none"},
    }


def test_rows_carry_units_and_say_whether_the_interval_holds_the_truth():
    rows = {r.name: r for r in comparison_rows(TRUTH, _result())}
    assert list(rows)[-3:] == ["origin_x_mm", "origin_y_mm", "origin_z_mm"] and len(rows) == 10
    assert (rows["mu_D_mm"].unit, rows["D_mm2_per_day"].unit, rows["rho_per_day"].unit) == ("mm", "mm²/day", "1/day")
    assert (rows["T_days"].unit, rows["velocity_mm_per_day"].unit, rows["origin_y_mm"].unit) == ("days", "mm/day", "mm")
    assert rows["mu_rho"].unit == "-"  # dimensionless
    assert rows["mu_rho"].inside and rows["mu_D_mm"].inside and rows["origin_x_mm"].inside
    assert not rows["infiltration_length_mm"].inside and not rows["origin_y_mm"].inside
    assert (rows["origin_y_mm"].low, rows["origin_y_mm"].high, rows["origin_y_mm"].true) == (-11.0, -8.0, -12.0)
    checks = interval_checks(TRUTH, _result())
    assert sum(checks.values()) == 8 and not checks["infiltration_length_mm"] and not checks["origin_y_mm"]


def test_a_parameter_without_an_interval_counts_as_outside():
    result = _result()
    del result["uncertainty"]["T_days"], result["uncertainty"]["origin_mm"]
    rows = {r.name: r for r in comparison_rows(TRUTH, result)}
    assert math.isnan(rows["T_days"].low) and not rows["T_days"].inside and not rows["origin_z_mm"].inside
    assert rows["mu_D_mm"].inside


def test_table_prints_each_row_with_unit_and_inside_or_outside():
    lines = table_lines(TRUTH, _result())
    assert lines[0].split()[:3] == ["parameter", "unit", "true"]
    rows = {line.split()[0]: line for line in lines[1:11]}
    assert rows["D_mm2_per_day"].split()[1] == "mm²/day" and rows["D_mm2_per_day"].endswith("inside")
    assert rows["infiltration_length_mm"].endswith("OUTSIDE") and rows["origin_y_mm"].endswith("OUTSIDE")
    assert "[2.6, 3]" in rows["infiltration_length_mm"]
    assert lines[11] == "Dice whole tumour 0.920, core 0.880, mean 0.900"
    assert lines[-1] == verdict(TRUTH, _result())


def test_verdict_recovered_within_two_voxels_and_dice():
    assert origin_error_mm(TRUTH, _result()) == pytest.approx(1.0)
    assert verdict(TRUTH, _result()) == (
        "recovered: origin error 1.0 mm <= 4 mm, mean Dice 0.900 >= 0.8; truth inside 8 of 10 95% intervals"
    )


@pytest.mark.parametrize(
    ("kwargs", "missed"),
    [
        ({"origin": (-28.0, -12.0, 27.0)}, "origin error 5.0 mm > 4 mm, mean Dice 0.900 >= 0.8"),
        ({"dice_mean": RECOVERED_DICE_MEAN - 0.01}, "origin error 1.0 mm <= 4 mm, mean Dice 0.790 < 0.8"),
        ({"origin": (-28.0, -12.0, 27.0), "resolution_mm": 3.0}, "origin error 5.0 mm <= 6 mm"),
    ],
)
def test_verdict_names_what_missed(kwargs, missed):
    text = verdict(TRUTH, _result(**kwargs))
    assert missed in text
    assert text.startswith("recovered:" if kwargs.get("resolution_mm") else "not recovered:")
