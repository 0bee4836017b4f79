"""The later scan of a patient folder onto the earlier scan's grid: rigid (ANTs, T1 to T1), tumour left out.

Both scans then share the earlier scan's registration to the atlas (the same method for both), so the
displacement of the tumour between them is growth, not a difference of two registrations.
"""

from __future__ import annotations

import tempfile

import numpy as np

from gliofit.common.errors import InputError

__all__ = ["followup_on_first_grid"]


def followup_on_first_grid(
    labels: np.ndarray,
    affine: np.ndarray,
    t1_later: np.ndarray,
    t1_later_affine: np.ndarray,
    t1_first: np.ndarray,
    t1_first_affine: np.ndarray,
    *,
    registration: str,
    tumour: np.ndarray | None = None,
    source: str = "followup",
    seed: int = 0,
) -> np.ndarray:
    """The later labels (on the later T1's grid) on the earlier T1's grid, uint8.

    ``registration="none"`` (atlas-space input): the grids must already be equal (InputError naming
    ``source`` otherwise); any other kind: a rigid ANTs registration of the later T1 to the earlier one,
    the later tumour (``tumour``, bool on the later grid, dilated by ``TUMOUR_MARGIN_MM``) masked out of the
    metric (the seeded runs of :mod:`gliofit.pipelines.registration`, at its 2 mm), and the labels carried by
    nearest neighbour.
    """
    same = t1_later.shape == t1_first.shape and np.allclose(t1_later_affine, t1_first_affine, atol=1e-3)
    if registration == "none":
        if not same:
            raise InputError(
                f"{source}: grid {t1_later.shape} differs from the earlier scan's {t1_first.shape} "
                "(atlas-space input: both scans must share the grid)"
            )
        return np.asarray(labels, dtype=np.uint8)
    from gliofit.pipelines.registration import _keep_mask, _register, coarse_image
    from gliofit.pipelines.warp import apply_transform_files

    fixed = coarse_image(np.nan_to_num(t1_first.astype(np.float32)), t1_first_affine)
    moving = coarse_image(np.nan_to_num(t1_later.astype(np.float32)), t1_later_affine)
    keep = _keep_mask(tumour, t1_later.shape, t1_later_affine).astype(np.float32)
    mask = coarse_image(keep, t1_later_affine, nearest=True)
    with tempfile.TemporaryDirectory(prefix="gliofit-rigid-") as d:
        try:
            reg = _register(fixed, moving, mask, "Rigid", seed, d)
        except RuntimeError as e:
            raise InputError(f"{source}: rigid ANTs registration to the earlier scan failed ({e})") from None
        out = apply_transform_files(
            np.asarray(labels, np.float32), affine, t1_first.shape, t1_first_affine, reg["fwdtransforms"], nearest=True
        )
        return np.rint(out).astype(np.uint8)
