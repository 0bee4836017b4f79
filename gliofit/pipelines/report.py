"""Writing reports: a patient's report.png and self-contained report.html; a cohort's cohort.png and index.html.

The pictures and pages themselves are built once, in :mod:`gliofit.common.figures` and
:mod:`gliofit.common.report_html` (``gliofit.infer``'s :class:`~gliofit.inverse.result.Result` uses the
same ones); this module writes them into a pipeline's output folder.

>>> fig = patient_figure(mri=t1c, segmentation=labels, density=u, plans={"standard": s, "model": m},
...                      affine=aff)                                            # doctest: +SKIP
>>> write_patient_report(Path("OUT/P001"), result, fig, plan=result["plan"])   # doctest: +SKIP
>>> write_cohort_report(Path("OUT"), rows)                                      # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from gliofit.common.figures import COHORT_HISTOGRAMS, cohort_figure, patient_figure, save_figure
from gliofit.common.io import write_text
from gliofit.common.report_html import cohort_index_html, patient_html

__all__ = [
    "patient_figure",
    "patient_html",
    "write_patient_report",
    "cohort_figure",
    "cohort_index_html",
    "write_cohort_report",
    "COHORT_HISTOGRAMS",
]


def write_patient_report(out_dir: Path, result: dict, figure, plan: dict | None = None) -> dict[str, Path]:
    """Save ``figure`` as ``out_dir/report.png`` and ``out_dir/report.html`` (PNG embedded), each atomically.

    ``figure`` may be None (no PNG; the page has no image). Returns ``{"report": png, "report_html": html}``.
    """
    out = Path(out_dir)
    files: dict[str, Path] = {}
    if figure is not None:
        files["report"] = save_figure(figure, out / "report.png")
    images = {"report.png": files["report"]} if files else {}
    files["report_html"] = write_text(patient_html(result, images=images, plan=plan), out / "report.html")
    return files


def write_cohort_report(out_dir: Path, rows: list[dict]) -> dict[str, Path]:
    """Write ``out_dir/cohort.png`` and ``out_dir/index.html`` atomically; ``{"cohort": png, "index": html}``."""
    out = Path(out_dir)
    png = save_figure(cohort_figure(rows), out / "cohort.png")
    return {"cohort": png, "index": write_text(cohort_index_html(rows, figure_png=png), out / "index.html")}
