"""Crafted images are refused from their header, before any large allocation: one line, exit 2, nothing written."""

from __future__ import annotations

import resource

import numpy as np
import pytest
from faulthelpers import gliofit, one_line_error
from hostile import gzip_bomb, huge_header, many_volumes, nan_affine

from gliofit.common.errors import InputError
from gliofit.common.nifti import MAX_IMAGE_VOXELS, load_volume

ADDRESS_SPACE_LIMIT = 8 << 30
"""Bytes of address space a refused image may cost the command (a regression then fails, not the node)."""

CRAFTED = {
    "gzip_bomb": (gzip_bomb, "more than the maximum"),
    "huge_header": (huge_header, "more than the maximum"),
    "nan_affine": (nan_affine, "invalid affine"),
    "inf_affine": (lambda p: nan_affine(p, value=np.inf), "invalid affine"),
    "many_volumes": (many_volumes, "must be a 3-D image"),
}


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_crafted_image_is_refused_by_the_library(tmp_path, kind):
    make, words = CRAFTED[kind]
    path = make(tmp_path / f"{kind}.nii.gz")
    with pytest.raises(InputError, match=words) as info:
        load_volume(path, "segmentation")
    assert str(path) in str(info.value)


def test_largest_allowed_image_is_documented():
    assert MAX_IMAGE_VOXELS == 512**3
    assert "MAX_IMAGE_VOXELS" in (load_volume.__doc__ or "")


@pytest.mark.parametrize("kind", ["gzip_bomb", "nan_affine"])
def test_infer_refuses_crafted_image_in_one_line(tiny_db, tmp_path, kind):
    make, words = CRAFTED[kind]
    seg = make(tmp_path / f"{kind}.nii.gz")
    out = tmp_path / "OUT"
    r = gliofit(
        "infer",
        "--db",
        str(tiny_db),
        "--seg",
        str(seg),
        "--in-atlas-space",
        "--no-refine",
        "-o",
        str(out),
        preexec_fn=_limit_address_space,
    )
    assert r.returncode == 2, r.stderr
    line = one_line_error(r)
    assert str(seg) in line and words in line, line
    assert not out.exists()
