"""One registration interface: both registrations provide it; the SimpleITK one saves and loads."""

from __future__ import annotations

import numpy as np
import pytest

from gliofit.common.errors import InputError
from gliofit.common.grids import lps_geometry
from gliofit.inverse.registration import AtlasRegistration, Registration, sitk_image
from gliofit.pipelines.registration import AntsRegistration


def test_both_registrations_provide_the_protocol():
    sitk = pytest.importorskip("SimpleITK")
    assert isinstance(Registration(sitk.AffineTransform(3), 0.0), AtlasRegistration)
    assert isinstance(AntsRegistration([], [], float("nan"), "Affine"), AtlasRegistration)


def test_lps_geometry_flips_the_first_two_axes():
    affine = np.array([[2.0, 0, 0, 10], [0, 3.0, 0, -20], [0, 0, 4.0, 30], [0, 0, 0, 1]])
    origin, spacing, direction = lps_geometry(affine)
    np.testing.assert_allclose(origin, [-10, 20, 30])
    np.testing.assert_allclose(spacing, [2, 3, 4])
    np.testing.assert_allclose(direction, np.diag([-1.0, -1.0, 1.0]))
    img = sitk_image(np.zeros((2, 3, 4)), affine)
    # voxel (1, 1, 1) lies at RAS (12, -17, 34), which is LPS (-12, 17, 34)
    np.testing.assert_allclose(img.TransformIndexToPhysicalPoint((1, 1, 1)), [-12, 17, 34])


def test_sitk_registration_round_trips_through_files(tmp_path, make_box_atlas):
    sitk = pytest.importorskip("SimpleITK")
    atlas = make_box_atlas((12, 12, 12), pad=2)
    transform = sitk.AffineTransform(3)
    transform.SetTranslation((1.5, -2.0, 0.5))
    transform.SetMatrix((1.0, 0.05, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.98))
    reg = Registration(transform, -0.7)
    files = reg.save(tmp_path / "reg")
    assert sorted(files) == ["patient_to_atlas_affine.tfm", "registration.json"]
    back = Registration.load(tmp_path / "reg")
    assert back.metric == pytest.approx(-0.7)
    data = np.random.default_rng(0).random(atlas.shape).astype(np.float32)
    np.testing.assert_allclose(
        back.to_atlas(data, atlas.affine, atlas), reg.to_atlas(data, atlas.affine, atlas), atol=1e-6
    )
    (tmp_path / "reg" / "registration.json").write_text("{")
    with pytest.raises(InputError, match="registration.json: not a readable registration"):
        Registration.load(tmp_path / "reg")
