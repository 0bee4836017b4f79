"""Fixtures shared by every test folder: small synthetic atlases (analytic geometry, no files), the 1 mm atlas."""

from __future__ import annotations

import numpy as np
import pytest

from gliofit.growth.atlas import Atlas, load_atlas


def box_atlas(
    shape: tuple[int, int, int],
    spacing_mm: float = 1.0,
    *,
    pad: int = 0,
    gm_fraction: float = 0.0,
    centred: bool = True,
) -> Atlas:
    """White matter (plus a uniform GM share) inside a box, CSF in a ``pad``-voxel shell.

    With ``centred`` the world origin sits at the grid centre, so flipping axis 0
    mirrors x -> -x.
    """
    gm = np.zeros(shape, np.float32)
    wm = np.zeros(shape, np.float32)
    inner = tuple(slice(pad, s - pad) for s in shape)
    wm[inner] = 1.0 - gm_fraction
    gm[inner] = gm_fraction
    csf = 1.0 - gm - wm
    affine = np.diag([spacing_mm] * 3 + [1.0])
    if centred:
        affine[:3, 3] = -spacing_mm * (np.asarray(shape) - 1) / 2.0
    return Atlas("box", gm, wm, csf, affine)


@pytest.fixture
def make_box_atlas():
    return box_atlas


@pytest.fixture(scope="session")
def atlas1() -> Atlas:
    """The 1 mm ICBM152 atlas (loaded once per session)."""
    return load_atlas("icbm152")
