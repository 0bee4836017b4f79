"""The one figure style: built without pyplot, so a notebook keeps its backend; titles in clinicians' words."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from gliofit.common.figures import density_figure, save_figure
from gliofit.common.wording import POOR_FIT_DICE_MEAN, fit_warnings, parameters_title


def test_building_a_figure_keeps_a_notebook_backend():
    """The inline backend of a Jupyter kernel survives importing gliofit and drawing a report figure."""
    code = """
import matplotlib
matplotlib.use("module://matplotlib_inline.backend_inline")
import numpy as np
import gliofit.common.figures as f
import gliofit.inverse.result, gliofit.pipelines.report
u = np.zeros((12, 14, 10), np.float32); u[4:8, 5:9, 3:7] = 0.8
fig = f.density_figure(np.ones_like(u), u, np.eye(4))
import matplotlib.pyplot as plt
print(matplotlib.get_backend(), type(fig).__module__)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    backend, module = res.stdout.split()
    assert backend == "module://matplotlib_inline.backend_inline"
    assert module == "gliofit.common.figures"


def test_simulated_density_figure_is_the_report_layout(tmp_path):
    u = np.zeros((20, 24, 18), np.float32)
    u[6:14, 8:16, 5:12] = 0.3
    u[8:12, 10:14, 7:10] = 0.9
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    title = parameters_title(
        {
            "D_mm2_per_day": 0.5,
            "rho_per_day": 0.05,
            "T_days": 200.0,
            "mu_D_mm": 10.0,
            "mu_rho": 3.16,
            "infiltration_length_mm": 3.16,
            "velocity_mm_per_day": 0.316,
        }
    )
    fig = density_figure(np.ones_like(u), u, aff, title=title)
    assert len(fig.axes) == 10  # 3 x 3 panels and the colour bar
    assert fig.axes[1].get_title() == "simulated tumour"
    text = fig._suptitle.get_text()
    for words in (
        "infiltration length 3.16 mm",
        "speed 0.316 mm/day",
        "D 0.5 mm²/day",
        "ρ 0.05 1/day",
        "T 200 days",
        "μ_D 10 mm",
        "μ_ρ 3.16",
        "anterior on the left",
    ):
        assert words in text, words
    png = save_figure(fig, tmp_path / "d.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_title_shows_95_percent_intervals():
    p = {"infiltration_length_mm": 2.74, "velocity_mm_per_day": 0.219, "mu_D_mm": 8.66}
    u = {"infiltration_length_mm": {"ci95": [2.2, 3.2]}, "mu_D_mm": {"ci95": [6.0, 11.0]}}
    text = parameters_title(p, u, {"dice_mean": 0.77}, name="P001")
    assert text.splitlines()[0] == (
        "P001: infiltration length 2.74 mm (95 %: 2.2 to 3.2), speed 0.219 mm/day, fit: mean Dice 0.77"
    )
    assert "μ_D 8.66 mm (95 %: 6 to 11)" in text


def test_poor_fit_warning_below_the_documented_level():
    assert fit_warnings({"dice_whole_tumor": 0.9, "dice_core": 0.8, "dice_mean": 0.85}) == []
    assert fit_warnings({"dice_mean": POOR_FIT_DICE_MEAN}) == []
    (w,) = fit_warnings({"dice_whole_tumor": 0.5, "dice_core": 0.2, "dice_mean": 0.35})
    assert w.startswith("poor fit: mean Dice 0.35 < 0.5") and "\n" not in w


def test_report_figures_show_themselves_in_a_notebook():
    u = np.zeros((12, 14, 10), np.float32)
    u[4:8, 5:9, 3:7] = 0.8
    fig = density_figure(np.ones_like(u), u, np.eye(4))
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
