"""Reports: the patient figure and self-contained page, the cohort figure and index."""

from __future__ import annotations

import csv
import io
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from gliofit.pipelines.report import (  # noqa: E402
    cohort_figure,
    cohort_index_html,
    patient_figure,
    patient_html,
    write_cohort_report,
    write_patient_report,
)

SHAPE = (40, 48, 36)
SPACING = (1.0, 1.25, 2.5)


def _case(flip_x: bool = False) -> dict:
    """A synthetic patient on an anisotropic grid: MRI, BraTS 2023 labels, density, matched masks, plans."""
    idx = np.indices(SHAPE).astype(np.float32)
    centre = np.array([22.0, 20.0, 17.0])
    r_mm = np.sqrt(sum(((idx[a] - centre[a]) * SPACING[a]) ** 2 for a in range(3)))
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[r_mm < 14] = 2
    labels[r_mm < 8] = 3
    labels[r_mm < 4] = 1
    density = np.exp(-((r_mm / 10.0) ** 2)).astype(np.float32)
    mri = (100 + 50 * np.cos(idx[0] / 5) + 30 * (labels == 3)).astype(np.float32)
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-20.0, -30.0, -40.0)
    arrays = {
        "mri": mri,
        "segmentation": labels,
        "density": density,
        "match_whole_tumor": density >= 0.25,
        "match_core": density >= 0.675,
    }
    plans = {"standard": r_mm < 23, "model": density >= 0.02}
    if flip_x:  # stored L-to-R reversed (an LAS file): the figure reorients
        arrays = {k: v[::-1] for k, v in arrays.items()}
        plans = {k: v[::-1] for k, v in plans.items()}
        affine = affine @ np.array([[-1, 0, 0, SHAPE[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    return arrays | {"plans": plans, "affine": affine}


def _result(name: str = "P001") -> dict:
    params = {
        "D_mm2_per_day": 0.3,
        "rho_per_day": 0.04,
        "T_days": 250.0,
        "mu_D_mm": 8.66,
        "mu_rho": 3.16,
        "infiltration_length_mm": 2.74,
        "velocity_mm_per_day": 0.219,
        "origin_mm": [-28.0, -12.0, 22.0],
        "threshold_edema": 0.25,
        "threshold_core": 0.675,
    }
    unc = {k: {"mean": v, "std": 0.1, "ci95": [v - 0.5, v + 0.5]} for k, v in params.items() if k != "origin_mm"}
    unc["mu_D_mm"] = {"mean": 15.5, "std": 2.1, "ci95": [11.25, 19.75]}
    unc["origin_mm"] = {
        "mean": [-28.0, -12.0, 22.0],
        "std": [1.0, 1.0, 1.0],
        "ci95": [[-30.5, -14.5, 19.5], [-25.5, -9.5, 24.5]],
    }
    matches = [
        {
            "rank": i + 1,
            "entry_id": 100 + i,
            "simulation_id": 10 + i,
            "dice_whole_tumor": 0.8 - 0.01 * i,
            "dice_core": 0.7 - 0.01 * i,
            "parameters": params,
        }
        for i in range(12)
    ]
    return {
        "gliofit_version": "0.1.0",
        "space": "patient",
        "database": {"path": "/data/db", "entries": 123456, "atlas": "icbm152-2009a", "resolution_mm": 2.0},
        "parameters": params,
        "uncertainty": unc,
        "fit": {"dice_whole_tumor": 0.81, "dice_core": 0.72, "dice_mean": 0.765},
        "matches": matches,
        "timings_s": {"load": 0.5, "segmentation": 30.0, "registration": 60.0, "query": 2.0, "total": 95.0},
        "patient": {"name": name, "folder": "/cohort/" + name},
    }


@pytest.mark.parametrize("with_plans", [True, False])
def test_patient_figure_builds_and_writes_a_png(tmp_path, with_plans):
    case = _case(flip_x=with_plans)
    plans = case.pop("plans") if with_plans else case.pop("plans") and None
    fig = patient_figure(**case, plans=plans, title="P001: test")
    assert len(fig.axes) >= 9
    assert "neurological" in fig._suptitle.get_text()
    plan = {"volumes_cm3": {"standard": 120.5}, "dice_standard_model": 0.9}
    files = write_patient_report(tmp_path / "P001", _result(), fig, plan=plan)
    assert set(files) == {"report", "report_html"}
    with Image.open(files["report"]) as im:
        assert im.format == "PNG" and im.size[0] > 800 and im.size[1] > 800
    assert plt.imread(files["report"]).ndim == 3
    assert not list((tmp_path / "P001").glob(".*part*"))  # no temporary left behind
    html = files["report_html"].read_text()
    assert "data:image/png;base64," in html and "120.5" in html
    assert "standard target (core + margin), cm³" in html and "overlap of the two targets (Dice)" in html


def test_patient_figure_rejects_mismatched_grids():
    case = _case()
    case.pop("plans")
    case["density"] = case["density"][:-1]
    with pytest.raises(ValueError, match="density"):
        patient_figure(**case, plans=None)


def test_radiological_orientation_is_labelled():
    case = _case()
    fig = patient_figure(**case, radiological=True)
    assert "radiological" in fig._suptitle.get_text()
    axial = fig.axes[0]
    assert axial.xaxis_inverted()
    texts = [t.get_text() for t in axial.texts]
    assert texts[:2] == ["R", "L"]
    plt.close(fig)


@pytest.mark.parametrize("radiological", [False, True])
def test_sagittal_view_has_anterior_on_the_left(radiological):
    fig = patient_figure(**_case(), radiological=radiological)
    sagittal = fig.axes[6]
    texts = [t.get_text() for t in sagittal.texts]
    assert texts[:4] == ["A", "P", "I", "S"]
    assert sagittal.xaxis_inverted()
    row = texts[4]  # the row's label, left of the panel
    assert row.startswith("sagittal, x = ") and row.endswith(" mm")


def test_figure_names_the_sequence_and_labels_the_log_colour_bar():
    fig = patient_figure(**_case(), mri_name="T1c (T1 with gadolinium)")
    assert fig.axes[0].get_title() == "T1c (T1 with gadolinium)"
    bar = fig.axes[-1]
    assert "log scale" in bar.get_ylabel() and bar.get_yscale() == "log"
    assert [t.get_text() for t in bar.get_yticklabels()] == ["0.001", "0.01", "0.1", "1"]
    outline = [h.get_label() for h in fig.axes[8].get_legend().legend_handles]
    assert "tumour outline (segmentation)" in outline and "standard target volume" in outline


def test_patient_html_is_self_contained_escaped_and_shows_intervals():
    png = io.BytesIO()
    fig = plt.figure(figsize=(1, 1))
    fig.savefig(png, format="png")
    plt.close(fig)
    plan = {"volumes_cm3": {"standard": 210.25, "model": 210.0}, "coverage": {"standard": 0.71, "model": 0.79}}
    html = patient_html(_result("<b>x&y"), images={"report.png": png.getvalue()}, plan=plan)
    assert "data:image/png;base64," in html
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', html))
    assert all(v.startswith("data:") for v in re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)""", html))
    assert "<b>x&y" not in html and "&lt;b&gt;x&amp;y" in html
    for text in (
        "11.25",
        "19.75",
        "15.5",
        "-30.5",
        "24.5",
        "0.765",
        "210.2",
        "0.79",
        "123456",
        "icbm152-2009a",
        "registration",
        "first 10 of 12",
    ):
        assert text in html, text


def _csv_rows(rows: list[dict]) -> list[dict]:
    """Round-trip through CSV, as the cohort reads results.csv back (all values become strings)."""
    buf = io.StringIO()
    cols = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("patient", "status", "error"), k))
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    return list(csv.DictReader(io.StringIO(buf.getvalue())))


def _cohort_rows() -> list[dict]:
    ok = [
        {
            "patient": p,
            "status": "ok",
            "error": "",
            "mu_D_mm": 8 + i,
            "mu_rho": 3.0 + 0.1 * i,
            "mu_D_mm_ci95_low": 6 + i,
            "mu_D_mm_ci95_high": 11 + i,
            "infiltration_length_mm": 2.5,
            "velocity_mm_per_day": 0.2 + 0.01 * i,
            "dice_mean": 0.7 + 0.02 * i,
            "total": 90.0 + i,
        }
        for i, p in enumerate(["P001", "a b&c", "P003"])
    ]
    failed = {"patient": "P004", "status": "failed", "error": "T1 missing <x>", "mu_D_mm": "", "dice_mean": ""}
    return _csv_rows(ok + [failed])


def test_cohort_index_links_ok_patients_and_lists_failures(tmp_path):
    rows = _cohort_rows()
    files = write_cohort_report(tmp_path, rows)
    html = files["index"].read_text()
    assert 'href="P001/report.html"' in html and 'href="a%20b%26c/report.html"' in html
    assert "P004/report.html" not in html
    assert "T1 missing &lt;x&gt;" in html and "failed" in html
    assert "3 ok, 1 failed" in html and "8 [6, 11]" in html
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', html))
    with Image.open(files["cohort"]) as im:
        assert im.format == "PNG"


@pytest.mark.parametrize("rows", [[], [{"patient": "P9", "status": "failed", "error": "boom", "mu_D_mm": ""}]])
def test_cohort_figure_works_without_ok_rows(rows):
    fig = cohort_figure(rows)
    assert "0 ok" in fig._suptitle.get_text()
    assert any("no ok rows" in t.get_text() for ax in fig.axes for t in ax.texts)
    html = cohort_index_html(rows, figure_png=None)
    assert "0 ok" in html and "<img" not in html
    plt.close(fig)


def test_patient_html_groups_snapshots_of_one_simulation_and_uses_labels():
    res = _result()
    res["matches"] = [
        dict(
            m,
            simulation_id=7 if m["rank"] <= 3 else m["simulation_id"],
            parameters=dict(m["parameters"], T_days=100.0 * m["rank"]),
        )
        for m in res["matches"]
    ]
    res["fit"] = {"dice_whole_tumor": 0.4, "dice_core": 0.2, "dice_mean": 0.3}
    html = patient_html(res, images={})
    assert "10 simulations, 12 matches" in html
    assert "3: 100, 200, 300" in html  # the three snapshots of simulation 7 in one row
    assert "infiltration length √(D/ρ)" in html and "speed of the tumour front" in html
    assert 'class="warning">poor fit: mean Dice 0.30' in html
