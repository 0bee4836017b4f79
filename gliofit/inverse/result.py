"""The result of one inference: parameters, uncertainty, matches, fit, timings, density, figure, files.

>>> res = gliofit.infer(db, "seg.nii.gz")       # doctest: +SKIP
>>> res.parameters["mu_D_mm"], res.uncertainty["mu_D_mm"]["ci95"]   # doctest: +SKIP
>>> res.save("OUT")    # doctest: +SKIP
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gliofit._version import __version__
from gliofit.common.errors import InputError
from gliofit.common.io import atomic_write, write_json, write_text
from gliofit.common.nifti import save_volume
from gliofit.common.wording import fit_warnings
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
    calibration : how the intervals were calibrated (``method``, ``coverage95`` as measured for the database;
        result.json's ``calibration``).
    extra : method details not in result.json (method, candidates, temperature, refine report, warnings).
    """

    def __init__(
        self,
        *,
        parameters: dict,
        uncertainty: dict,
        matches: list[dict],
        fit: dict,
        timings: dict,
        space: str,
        database: dict,
        observation: Observation,
        atlas: Atlas,
        density_fn: Callable[[], np.ndarray],
        extra: dict | None = None,
        calibration: dict | None = None,
    ) -> None:
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
        self.calibration = calibration or {"method": "none", "coverage95": {}}
        self._density_fn = density_fn
        self._density: np.ndarray | None = None

    def __repr__(self) -> str:
        p = self.parameters
        return (
            f"Result(mu_D_mm={p['mu_D_mm']:.3g}, mu_rho={p['mu_rho']:.3g}, "
            f"origin_mm={[round(v, 1) for v in p['origin_mm']]}, dice_mean={self.fit['dice_mean']:.3f})"
        )

    @property
    def density_array(self) -> np.ndarray:
        """(X, Y, Z) float32 tumour-cell density in [0, 1] on the atlas grid (computed once)."""
        if self._density is None:
            self._density = np.asarray(self._density_fn(), dtype=np.float32)
        return self._density

    @property
    def density(self):
        """The best estimate's density on the 1 mm atlas grid as a nibabel image."""
        from gliofit.common.nifti import nib

        return nib.Nifti1Image(self.density_array, self.atlas.affine)

    @property
    def warnings(self) -> list[str]:
        """One-line warnings for the user: a poor fit, an uncalibrated database, a stale calibration."""
        return fit_warnings(self.fit) + [w for w in self.extra.get("warnings", []) if w]

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
            "seed": self.extra.get("seed"),
            "uncertainty": self.uncertainty,
            "calibration": self.calibration,
            "fit": self.fit,
            "matches": self.matches,
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            "warnings": self.warnings,
        }

    def to_json(self, path: str | Path) -> Path:
        """Write result.json to ``path`` atomically."""
        return write_json(self.to_dict(), path)

    def plot(self):
        """The report figure (:func:`gliofit.common.figures.patient_figure`) on the atlas grid: atlas T1,
        the observed masks with the best match's contours, the density (log scale). A matplotlib Figure."""
        from gliofit.common.figures import patient_figure
        from gliofit.common.wording import parameters_title

        obs, p = self.observation, self.parameters
        observed = obs.wt_atlas.astype(np.uint8) * np.uint8(2)  # 2 edema, 1 core
        observed[obs.core_atlas] = 1
        u = self.density_array
        return patient_figure(
            mri=self.atlas.t1,
            mri_name="atlas T1",
            segmentation=observed,
            density=u,
            match_whole_tumor=u >= p["threshold_edema"],
            match_core=u >= p["threshold_core"],
            affine=self.atlas.affine,
            segmentation_names={1: "observed core", 2: "observed edema"},
            title=parameters_title(p, self.uncertainty, self.fit),
        )

    def to_html(self, images: dict | None = None) -> str:
        """A self-contained report page (:func:`gliofit.common.report_html.patient_html`); ``images``:
        caption -> PNG path or bytes, embedded."""
        from gliofit.common.report_html import patient_html

        return patient_html(self.to_dict(), images=images or {})

    def save(self, out_dir: str | Path, *, figure: bool = True) -> dict[str, Path]:
        """Write result.json, tumor_density_atlas.nii.gz, tumor_density.nii.gz (input grid), report.png
        and report.html.

        The density files are written on a second thread while the figure is drawn (gzip releases the
        GIL, so the two overlap)."""
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise InputError(f"{out}: output path is a file, not a folder")
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        self.density_array  # noqa: B018 - computed here, before the two threads share it
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gliofit-density-files") as pool:
                densities = pool.submit(self._save_densities, out)
                from gliofit.common.figures import save_figure  # matplotlib loads while the files are written

                files = {"report": save_figure(self.plot(), out / "report.png")} if figure else {}
                files |= densities.result()
            images = {"report.png": files["report"]} if figure else {}
            files["report_html"] = write_text(self.to_html(images), out / "report.html")
            files["result"] = self.to_json(out / "result.json")
        except BaseException:
            if created:  # a folder this call made holds nothing of use when the call fails
                shutil.rmtree(out, ignore_errors=True)
            raise
        return files

    def _save_densities(self, out: Path) -> dict[str, Path]:
        """tumor_density_atlas.nii.gz and tumor_density.nii.gz (a copy when the input is the atlas grid)."""
        atlas_file = save_volume(self.density_array, self.atlas.affine, out / "tumor_density_atlas.nii.gz")
        files = {"tumor_density_atlas": atlas_file, "tumor_density": out / "tumor_density.nii.gz"}
        if self.observation.on_atlas_grid(self.atlas):  # the same image: copy the file
            with atomic_write(files["tumor_density"]) as tmp:
                shutil.copyfile(atlas_file, tmp)
        else:
            save_volume(self.density_on_input_grid(), self.observation.input_affine, files["tumor_density"])
        return files
