"""The result of a two-scan inference: a :class:`~gliofit.inverse.result.Result` at the later scan, plus the
fit per scan (``timepoints``), the calibration used and, optionally, the density projected forward."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from gliofit.common.nifti import save_volume
from gliofit.inverse.result import Result

__all__ = ["TwoScanResult"]


class TwoScanResult(Result):
    """:class:`Result` whose ``parameters``, ``fit`` and density are those at the later scan.

    Extra attributes
    ----------------
    timepoints : per scan: segmentation, days after the first scan, T, mu_D, mu_rho and fit.
    days_between : days between the scans. project_days : days projected past the later scan (or None).
    (Consistency warnings, e.g. the later tumour smaller than the earlier, are in ``extra["warnings"]`` and so in
    :attr:`Result.warnings` and result.json's ``warnings``.)
    """

    def __init__(
        self,
        *,
        timepoints: list[dict],
        days_between: float,
        project_days: float | None = None,
        projected_fn: Callable[[], np.ndarray] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.timepoints = timepoints
        self.days_between = float(days_between)
        self.project_days = None if project_days is None else float(project_days)
        self._projected_fn = projected_fn
        self._projected: np.ndarray | None = None

    @property
    def projected_density_array(self) -> np.ndarray | None:
        """(X, Y, Z) float32 density ``project_days`` after the later scan on the atlas grid (or None)."""
        if self._projected_fn is None:
            return None
        if self._projected is None:
            self._projected = np.asarray(self._projected_fn(), dtype=np.float32)
        return self._projected

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["timepoints"] = self.timepoints
        d["days_between"] = self.days_between
        if self.project_days is not None:
            d["projection"] = {
                "days_after_later_scan": self.project_days,
                "T_days": self.parameters["T_days"] + self.project_days,
                "files": ["tumor_density_projected.nii.gz", "tumor_density_projected_atlas.nii.gz"],
            }
        return d

    def save(self, out_dir: str | Path, *, figure: bool = True) -> dict[str, Path]:
        """:meth:`Result.save`, plus ``tumor_density_projected[_atlas].nii.gz`` with ``project_days``."""
        out = Path(out_dir)
        files = {}
        proj = self.projected_density_array
        if proj is not None:
            out.mkdir(parents=True, exist_ok=True)
            files["tumor_density_projected_atlas"] = save_volume(
                proj, self.atlas.affine, out / "tumor_density_projected_atlas.nii.gz"
            )
            on_input = np.clip(self.observation.to_input_grid(proj, self.atlas), 0.0, 1.0).astype(np.float32)
            files["tumor_density_projected"] = save_volume(
                on_input, self.observation.input_affine, out / "tumor_density_projected.nii.gz"
            )
        files.update(super().save(out, figure=figure))  # result.json last
        return files
