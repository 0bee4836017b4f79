"""Register a patient T1 to the atlas T1 (SimpleITK): affine, Mattes mutual information, tumour masked out.

The atlas T1 is the fixed image, the patient's the moving one; the found
transform maps atlas world points to patient world points, so a patient
volume is pulled onto the atlas grid with it (:meth:`Registration.to_atlas`)
and an atlas volume back onto the patient grid with its inverse
(:meth:`Registration.to_patient`). Two stages, each on a 4x then 2x
shrunk pyramid: rigid (Euler 3-D, initialised by aligning the intensity
centres of mass), then a 12-parameter affine from the rigid result. The
metric samples 5% of the voxels (seeded, so results repeat); the tumour,
dilated by 3 mm, is excluded from the moving image's metric mask.

Coordinates: nibabel affines are RAS, SimpleITK is LPS; :func:`sitk_image`
converts with :func:`gliofit.common.grids.lps_geometry`.

:class:`AtlasRegistration` is what the rest of gliofit needs of a registration;
:class:`Registration` (here) and the ANTs one (:mod:`gliofit.pipelines.registration`)
both provide it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy import ndimage

from gliofit._version import __version__
from gliofit.common.errors import InputError
from gliofit.common.grids import lps_geometry, spacing_mm
from gliofit.common.io import atomic_write, write_json
from gliofit.growth.atlas import Atlas

__all__ = ["AtlasRegistration", "Registration", "register_to_atlas", "sitk_image", "sitk_array"]

JSON_NAME = "registration.json"
TRANSFORM_NAME = "patient_to_atlas_affine.tfm"
SAMPLING_FRACTION = 0.05
TUMOUR_MARGIN_MM = 3.0


def sitk_image(data: np.ndarray, affine: np.ndarray, dtype=np.float32):
    """A SimpleITK image of an (X, Y, Z) array on a RAS ``affine`` (spacing, direction, origin in LPS)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data, dtype=dtype).transpose(2, 1, 0)))
    origin, sp, direction = lps_geometry(affine)
    img.SetSpacing([float(s) for s in sp])
    img.SetDirection([float(v) for v in direction.ravel()])
    img.SetOrigin([float(v) for v in origin])
    return img


def sitk_array(img) -> np.ndarray:
    """The (X, Y, Z) numpy array of a SimpleITK image."""
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(img).transpose(2, 1, 0)


@runtime_checkable
class AtlasRegistration(Protocol):
    """A map between one patient grid and the atlas grid, as :func:`gliofit.infer` and the pipelines use it."""

    def to_atlas(self, data: np.ndarray, affine: np.ndarray, atlas: Atlas) -> np.ndarray:
        """Pull a patient volume (X, Y, Z) on ``affine`` onto the atlas grid (float32)."""
        ...

    def to_patient(self, data: np.ndarray, atlas: Atlas, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
        """Push an atlas-grid volume onto the patient grid ``(shape, affine)`` (float32)."""
        ...

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write the registration into ``folder``; returns ``{file name: path}``."""
        ...

    @classmethod
    def load(cls, folder: str | Path) -> Any:
        """Read a registration written by :meth:`save`."""
        ...


@dataclass
class Registration:
    """An affine map between a patient grid and the atlas grid.

    Attributes
    ----------
    transform : SimpleITK ``AffineTransform`` mapping atlas (fixed) points to patient (moving) points, LPS mm.
    metric : final Mattes mutual information (lower is better).
    """

    transform: object
    metric: float

    def to_atlas(self, data: np.ndarray, affine: np.ndarray, atlas: Atlas) -> np.ndarray:
        """Pull a patient volume (X, Y, Z) on ``affine`` onto the atlas grid (trilinear, float32)."""
        import SimpleITK as sitk

        ref = sitk_image(np.zeros(atlas.shape, np.uint8), atlas.affine, np.uint8)
        out = sitk.Resample(sitk_image(data, affine), ref, self.transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return sitk_array(out)

    def to_patient(self, data: np.ndarray, atlas: Atlas, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
        """Push an atlas-grid volume onto the patient grid ``(shape, affine)`` (trilinear, float32)."""
        import SimpleITK as sitk

        ref = sitk_image(np.zeros(shape, np.uint8), affine, np.uint8)
        inverse = self.transform.GetInverse()  # type: ignore[attr-defined]
        out = sitk.Resample(sitk_image(data, atlas.affine), ref, inverse, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return sitk_array(out)

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write ``registration.json`` and the transform (ITK ``.tfm``) into ``folder``, each atomically."""
        import SimpleITK as sitk

        out = Path(folder)
        if out.exists() and not out.is_dir():
            raise InputError(f"{out}: output path is a file, not a folder")
        with atomic_write(out / TRANSFORM_NAME) as tmp:
            sitk.WriteTransform(self.transform, str(tmp))
        meta = {
            "kind": "sitk-affine",
            "metric": None if not np.isfinite(self.metric) else float(self.metric),
            "transform": TRANSFORM_NAME,
            "gliofit_version": __version__,
        }
        return {TRANSFORM_NAME: out / TRANSFORM_NAME, JSON_NAME: write_json(meta, out / JSON_NAME)}

    @classmethod
    def load(cls, folder: str | Path) -> Registration:
        """Read a registration written by :meth:`save`."""
        import SimpleITK as sitk

        p = Path(folder)
        meta_path = p / JSON_NAME
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("kind") != "sitk-affine":
                raise ValueError(f"kind {meta.get('kind')!r} is not 'sitk-affine'")
            transform = sitk.ReadTransform(str(p / meta["transform"])).Downcast()
        except (OSError, RuntimeError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{meta_path}: not a readable registration ({e})") from None
        metric = meta.get("metric")
        return cls(transform, float("nan") if metric is None else float(metric))


def _method(sitk, transform, fixed_mask, moving_mask, seed: int):
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(SAMPLING_FRACTION, seed + 1)  # SimpleITK takes 0 as "seed from the clock"
    reg.SetMetricFixedMask(fixed_mask)
    reg.SetMetricMovingMask(moving_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-3, numberOfIterations=150, relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(transform, inPlace=True)
    return reg


def register_to_atlas(
    t1: np.ndarray,
    affine: np.ndarray,
    atlas: Atlas,
    *,
    exclude: np.ndarray | None = None,
    source: str = "T1",
    seed: int = 0,
) -> Registration:
    """Affinely register a patient T1 (X, Y, Z on ``affine``) to ``atlas.t1``.

    Parameters
    ----------
    t1 : the patient's T1-weighted image.
    affine : its (4, 4) RAS voxel -> world mm matrix.
    atlas : the atlas; needs a T1 (``atlas.t1``).
    exclude : (X, Y, Z) bool tumour mask on the T1's grid, left out of the metric (dilated 3 mm).
    source : name for error messages.
    seed : sampling seed of the metric.
    """
    import SimpleITK as sitk

    if atlas.t1 is None:
        raise InputError(f"{source}: atlas {atlas.name} has no T1 to register to; give the segmentation in atlas space")
    data = np.nan_to_num(np.asarray(t1, dtype=np.float32))
    if float(data.max()) <= float(data.min()):
        raise InputError(f"{source}: T1 image is constant; nothing to register")
    fixed = sitk_image(atlas.t1, atlas.affine)
    moving = sitk_image(data, affine)
    fixed_mask = sitk_image(atlas.t1 > 0, atlas.affine, np.uint8)
    keep = data > np.percentile(data[data > data.min()], 5) if (data > data.min()).any() else data > data.min()
    if exclude is not None:
        iters = max(1, int(round(TUMOUR_MARGIN_MM / float(spacing_mm(affine).min()))))
        keep &= ~ndimage.binary_dilation(exclude, iterations=iters)
    moving_mask = sitk_image(keep, affine, np.uint8)
    rigid = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    _method(sitk, rigid, fixed_mask, moving_mask, seed).Execute(fixed, moving)
    aff = sitk.AffineTransform(3)
    aff.SetCenter(rigid.GetCenter())
    aff.SetMatrix(rigid.GetMatrix())
    aff.SetTranslation(rigid.GetTranslation())
    reg = _method(sitk, aff, fixed_mask, moving_mask, seed)
    reg.Execute(fixed, moving)
    return Registration(aff, float(reg.GetMetricValue()))
