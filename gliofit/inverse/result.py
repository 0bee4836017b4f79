"""The result of one inference: parameters, uncertainty, matches, fit, timings, density, figure, files.

>>> res = gliofit.infer(db, "seg.nii.gz")       # doctest: +SKIP
>>> res.parameters["mu_D_mm"], res.uncertainty["mu_D_mm"]["ci95"]   # doctest: +SKIP
>>> res.save("OUT")    # result.json, tumor_density_atlas.nii.gz, tumor_density.nii.gz, report.png
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gliofit._version import __version__
from gliofit.common.errors import InputError
from gliofit.common.io import write_json, write_text
from gliofit.common.nifti import save_volume
from gliofit.inverse.observation import Observation
from gliofit.growth.atlas import Atlas

__all__ = ["Result", "TIMING_KEYS"]

TIMING_KEYS = ("load", "segmentation", "registration", "query", "total")


class Result:
    """What ``gliofit infer`` finds for one patient (the content of result.json, plus arrays).

    Attributes
    ----------
    parameters : the best estimate (INTERFACES.md keys and units).
    uncertainty : ``{key: {"mean", "std", "ci95"}}`` over the top matches.
    matches : the top matches, best first, each with rank, ids, Dice and parameters.
    fit : Dice of the best estimate's masks against the observed ones (database grid).
    timings : seconds per stage (``timings_s`` in result.json).
    space : ``"atlas"`` or ``"patient"``.
    database : path, entries, atlas, resolution_mm of the database used.
    observation : the :class:`~gliofit.inverse.observation.Observation` (masks on both grids).
    atlas : the atlas grid the density lives on.
    extra : method details not in result.json (method, candidates, temperature, refine report).
    """

    def __init__(self, *, parameters: dict, uncertainty: dict, matches: list[dict], fit: dict, timings: dict,
                 space: str, database: dict, observation: Observation, atlas: Atlas,
                 density_fn: Callable[[], np.ndarray], extra: dict | None = None) -> None:
        self.parameters = parameters
        self.uncertainty = uncertainty
        self.matches = matches
        self.fit = fit
        self.timings = {k: float(timings.get(k, 0.0)) for k in TIMING_KEYS}
        self.space = space
        self.database = database
        self.observation = observation
        self.atlas = atlas
        self.extra = extra or {}
        self._density_fn = density_fn
        self._density: np.ndarray | None = None

    def __repr__(self) -> str:
        p = self.parameters
        return (f"Result(mu_D_mm={p['mu_D_mm']:.3g}, mu_rho={p['mu_rho']:.3g}, "
                f"origin_mm={[round(v, 1) for v in p['origin_mm']]}, dice_mean={self.fit['dice_mean']:.3f})")

    @property
    def density_array(self) -> np.ndarray:
        """(X, Y, Z) float32 tumour-cell density in [0, 1] on the atlas grid (computed once)."""
        if self._density is None:
            self._density = np.asarray(self._density_fn(), dtype=np.float32)
        return self._density

    @property
    def density(self):
        """The best estimate's density on the 1 mm atlas grid as a nibabel image."""
        import nibabel as nib

        return nib.Nifti1Image(self.density_array, self.atlas.affine)

    def density_on_input_grid(self) -> np.ndarray:
        """(X, Y, Z) float32 density on the segmentation's own grid and affine."""
        return np.clip(self.observation.to_input_grid(self.density_array, self.atlas), 0.0, 1.0).astype(np.float32)

    def to_dict(self) -> dict:
        """result.json as a dict (INTERFACES.md)."""
        return {
            "gliofit_version": __version__,
            "space": self.space,
            "database": self.database,
            "parameters": self.parameters,
            "uncertainty": self.uncertainty,
            "fit": self.fit,
            "matches": self.matches,
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }

    def to_json(self, path: str | Path) -> Path:
        """Write result.json to ``path`` atomically."""
        return write_json(self.to_dict(), path)

    def plot(self):
        """Orthogonal slices through the tumour: observed masks, best-match contours, density (a Figure).

        Background: the atlas T1; colour: the density; cyan / lime: the best match's whole
        tumour and core (its thresholds); white / red dashed: the observed whole tumour and core.
        """
        from gliofit.common.figures import density_figure

        obs = self.observation
        shown = obs.wt_atlas if obs.wt_atlas.any() else self.density_array >= 0.25
        centre = (tuple(int(round(c)) for c in np.argwhere(shown).mean(axis=0)) if shown.any()
                  else tuple(s // 2 for s in self.atlas.shape))
        th = (self.parameters["threshold_edema"], self.parameters["threshold_core"])
        p = self.parameters
        title = (f"best match: mu_D {p['mu_D_mm']:.1f} mm, mu_rho {p['mu_rho']:.2f}, "
                 f"Dice WT {self.fit['dice_whole_tumor']:.2f} core {self.fit['dice_core']:.2f}")
        fig = density_figure(self.atlas.t1, self.density_array, thresholds=th, title=title, centre=centre)
        views = [(slice(None), slice(None), centre[2]), (slice(None), centre[1], slice(None)),
                 (centre[0], slice(None), slice(None))]
        for ax, sl in zip(fig.axes[:3], views):
            for mask, colour in ((obs.wt_atlas, "white"), (obs.core_atlas, "red")):
                m = mask[sl].T.astype(np.float32)
                if m.any() and not m.all():
                    ax.contour(m, levels=[0.5], colors=colour, linewidths=0.8, linestyles="dashed")
        return fig

    def to_html(self, png_name: str | None = "report.png") -> str:
        """A self-contained one-page report: parameters with 95% intervals, fit, matches, timings."""
        from html import escape

        def fmt(v) -> str:
            return "[" + ", ".join(f"{x:.4g}" for x in v) + "]" if isinstance(v, list) else f"{v:.4g}"

        rows = "".join(
            f"<tr><td>{escape(k)}</td><td>{fmt(v)}</td><td>{fmt(self.uncertainty[k]['mean'])}</td>"
            f"<td>{' to '.join(fmt(c) for c in self.uncertainty[k]['ci95'])}</td></tr>"
            for k, v in self.parameters.items())
        matches = "".join(
            f"<tr><td>{m['rank']}</td><td>{m['entry_id']}</td><td>{m['dice_whole_tumor']:.3f}</td>"
            f"<td>{m['dice_core']:.3f}</td><td>{m['parameters']['mu_D_mm']:.3g}</td>"
            f"<td>{m['parameters']['mu_rho']:.3g}</td></tr>" for m in self.matches)
        fit = ", ".join(f"{k} {v:.3f}" for k, v in self.fit.items())
        times = ", ".join(f"{k} {v:.2f} s" for k, v in self.timings.items())
        img = f'<img src="{escape(png_name)}" style="max-width:100%">' if png_name else ""
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>gliofit result</title>"
                f"<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:left}}</style>"
                f"</head><body><h1>gliofit: personalised growth model</h1>"
                f"<p>segmentation {escape(str(self.observation.source))} ({escape(self.space)} space); database "
                f"{escape(str(self.database['path']))} ({self.database['entries']} entries, "
                f"{self.database['resolution_mm']:g} mm)</p>{img}<h2>Parameters</h2><table>"
                f"<tr><th>parameter</th><th>best match</th><th>weighted mean</th><th>95% interval</th></tr>{rows}"
                f"</table><p>Fit (Dice on the database grid): {escape(fit)}</p><h2>Top matches</h2><table>"
                f"<tr><th>rank</th><th>entry</th><th>Dice WT</th><th>Dice core</th><th>mu_D mm</th><th>mu_rho</th></tr>"
                f"{matches}</table><p>Timings: {escape(times)}</p></body></html>\n")

    def save(self, out_dir: str | Path, *, figure: bool = True) -> dict[str, Path]:
        """Write result.json, tumor_density_atlas.nii.gz, tumor_density.nii.gz (input grid), report.png
        and report.html."""
        from gliofit.common.figures import save_figure

        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise InputError(f"{out}: output path is a file, not a folder")
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        try:
            files = {
                "tumor_density_atlas": save_volume(self.density_array, self.atlas.affine,
                                                   out / "tumor_density_atlas.nii.gz"),
                "tumor_density": save_volume(self.density_on_input_grid(), self.observation.input_affine,
                                             out / "tumor_density.nii.gz"),
            }
            if figure:
                files["report"] = save_figure(self.plot(), out / "report.png")
            files["report_html"] = write_text(self.to_html("report.png" if figure else None), out / "report.html")
            files["result"] = self.to_json(out / "result.json")
        except BaseException:
            if created:  # a folder this call made holds nothing of use when the call fails
                shutil.rmtree(out, ignore_errors=True)
            raise
        return files
