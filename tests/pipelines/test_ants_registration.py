"""ANTs registration: a known affine is recovered, masks and densities travel both ways, transforms reload."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("ants")

from gliofit.common.errors import InputError  # noqa: E402
from gliofit.common.grids import resample_linear, voxel_to_world, world_to_voxel  # noqa: E402
from gliofit.pipelines.registration import AntsRegistration, ants_image, register_to_atlas_ants  # noqa: E402
from gliofit.growth.atlas import load_atlas, resample_atlas  # noqa: E402
from gliofit.simulations_db.dice import dice  # noqa: E402

TUMOUR_CENTRE_MM = np.array([-28.0, -12.0, 22.0])
TUMOUR_RADIUS_MM = 15.0


def _rotation(deg: float, axis: int) -> np.ndarray:
    a = np.deg2rad(deg)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
    return r


@pytest.fixture(scope="module")
def atlas():
    """The ICBM152 atlas on a 2 mm grid cropped to the brain (keeps the registrations to seconds)."""
    return resample_atlas(load_atlas(), 2.0)


@pytest.fixture(scope="module")
def patient(atlas):
    """A 2 mm patient grid stored LPS-style (x, y flipped), its world the atlas's rotated by 7 degrees about z
    and -5 about x and shifted by (6, -5, 4) mm; a dark 15 mm tumour sphere at a known atlas point."""
    move = np.eye(4)  # patient world -> atlas world
    move[:3, :3] = _rotation(7.0, 2) @ _rotation(-5.0, 0)
    move[:3, 3] = [6.0, -5.0, 4.0]
    shape = (100, 120, 90)
    affine = np.diag([-2.0, -2.0, 2.0, 1.0])
    affine[:3, 3] = [99.0, 119.0, -80.0]
    t1 = resample_linear(atlas.t1, atlas.affine, move @ affine, shape)
    world = voxel_to_world(affine, np.indices(shape).transpose(1, 2, 3, 0))
    centre = np.linalg.solve(move[:3, :3], TUMOUR_CENTRE_MM - move[:3, 3])
    r = np.linalg.norm(world - centre, axis=-1)
    tumour = r <= TUMOUR_RADIUS_MM
    t1 = np.where(tumour, 0.3 * t1 + 0.4 * (r <= 8.0), t1) * 800.0  # another look, another intensity scale
    return {"t1": t1.astype(np.float32), "affine": affine, "move": move, "tumour": tumour, "world": world}


@pytest.fixture(scope="module")
def registrations(atlas, patient):
    """Registrations by kind, found once."""
    found: dict[str, AntsRegistration] = {}

    def get(kind: str) -> AntsRegistration:
        if kind not in found:
            found[kind] = register_to_atlas_ants(
                patient["t1"], patient["affine"], atlas, exclude=patient["tumour"], kind=kind, source="patient.nii.gz"
            )
        return found[kind]

    return get


def _truth_in_patient_mm(atlas, patient) -> np.ndarray:
    """For every atlas voxel, the patient world point it truly comes from (X, Y, Z, 3)."""
    aw = voxel_to_world(atlas.affine, np.indices(atlas.shape).transpose(1, 2, 3, 0))
    move = patient["move"]
    return (aw - move[:3, 3]) @ np.linalg.inv(move[:3, :3]).T


@pytest.mark.parametrize("kind", ["SyN", "Affine"])
def test_a_known_affine_is_recovered(kind, atlas, patient, registrations):
    reg = registrations(kind)
    assert reg.kind == kind and np.isfinite(reg.metric) and reg.info["seed"] == 0
    got = np.stack([reg.to_atlas(patient["world"][..., k], patient["affine"], atlas) for k in range(3)], axis=-1)
    truth = _truth_in_patient_mm(atlas, patient)
    err = np.linalg.norm(got - truth, axis=-1)
    half = (np.asarray(patient["t1"].shape) - 1) / 2.0
    inside = np.all(np.abs(world_to_voxel(patient["affine"], truth) - half) < half - 3, axis=-1)
    brain = (atlas.t1 > 0.1) & inside
    assert err[brain].mean() < 1.0 and np.percentile(err[brain], 99) < 2.0
    points = TUMOUR_CENTRE_MM + np.array(
        [[0, 0, 0], [40, 0, 0], [0, 40, 0], [0, 0, -30], [56, 30, -20], [20, -50, 10], [10, 20, 25]]
    )
    ijk = np.rint(world_to_voxel(atlas.affine, points)).astype(int)
    assert brain[tuple(ijk.T)].all()
    assert err[tuple(ijk.T)].max() < 2.0


@pytest.mark.parametrize("kind", ["SyN", "Affine"])
def test_the_tumour_lands_where_it_was_placed_and_returns(kind, atlas, patient, registrations):
    reg = registrations(kind)
    tumour = patient["tumour"]
    in_atlas = reg.to_atlas(tumour, patient["affine"], atlas)
    assert in_atlas.dtype == np.float32 and set(np.unique(in_atlas)) <= {0.0, 1.0}  # nearest neighbour
    aw = voxel_to_world(atlas.affine, np.indices(atlas.shape).transpose(1, 2, 3, 0))
    truth = np.linalg.norm(aw - TUMOUR_CENTRE_MM, axis=-1) <= TUMOUR_RADIUS_MM
    assert dice(in_atlas > 0.5, truth) >= 0.8
    back = reg.to_patient(in_atlas > 0.5, atlas, tumour.shape, patient["affine"])
    assert back.shape == tumour.shape and dice(back > 0.5, tumour) >= 0.95
    density = reg.to_patient(truth.astype(np.float32) * 0.7, atlas, tumour.shape, patient["affine"])
    assert density.dtype == np.float32 and 0.0 < density.max() <= 0.7 + 1e-5
    assert len(np.unique(density)) > 3  # linear, not nearest


@pytest.mark.parametrize("kind", ["SyN", "Affine"])
def test_volumes_travel_as_ants_apply_transforms_moves_them(kind, atlas, patient, registrations):
    """Our resampler gives ANTs's values: both directions, trilinear and nearest neighbour."""
    import ants

    from gliofit.pipelines.registration import ants_array

    reg = registrations(kind)
    t1, aff = patient["t1"], patient["affine"]
    cases = [
        (t1, aff, atlas.shape, atlas.affine, reg.fwd_transforms, [False] * len(reg.fwd_transforms), reg.to_atlas),
        (
            atlas.t1,
            atlas.affine,
            t1.shape,
            aff,
            reg.inv_transforms,
            [t.endswith(".mat") for t in reg.inv_transforms],
            lambda v, _a, _atlas: reg.to_patient(v, atlas, t1.shape, aff),
        ),
    ]
    for src, src_aff, shape, dst_aff, transforms, invert, ours in cases:
        for vol in (src.astype(np.float32), src > np.percentile(src, 60)):
            nearest = vol.dtype == bool
            want = ants_array(
                ants.apply_transforms(
                    ants_image(np.zeros(shape, np.float32), dst_aff),
                    ants_image(vol, src_aff),
                    list(transforms),
                    interpolator="nearestNeighbor" if nearest else "linear",
                    whichtoinvert=invert,
                    singleprecision=True,
                )
            )
            got = ours(vol, src_aff, atlas)
            assert got.shape == want.shape and (want != 0).mean() > 0.2
            if nearest:
                assert (got != want).mean() < 1e-5  # a point exactly half-way may round either way
            else:
                assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_coarse_copies_and_the_tumour_margin_are_those_of_ants_and_a_whole_grid_distance():
    """``coarse_image`` gives ``ants.resample_image``'s grid and values; ``_keep_mask`` the whole-grid EDT."""
    import ants

    from gliofit.common.grids import spacing_mm
    from gliofit.pipelines.registration import TUMOUR_MARGIN_MM, _keep_mask, ants_array, coarse_image

    rng = np.random.default_rng(1)
    for shape, sp in (((64, 50, 41), (1.2, 1.0, 0.9)), ((50, 61, 77), (1.3, 1.7, 1.1))):
        affine = np.diag([-sp[0], sp[1], sp[2], 1.0])
        affine[:3, 3] = [10.0, -20.0, 5.0]
        data = rng.random(shape).astype(np.float32)
        for nearest, vol in ((False, data), (True, (data > 0.5).astype(np.float32))):
            want = ants.resample_image(
                ants_image(vol, affine), (2.0, 2.0, 2.0), use_voxels=False, interp_type=int(nearest)
            )
            got = coarse_image(vol, affine, 2.0, nearest=nearest)
            assert got.shape == want.shape and np.allclose(got.origin, want.origin)
            assert np.allclose(got.direction, want.direction) and np.allclose(got.spacing, want.spacing)
            assert np.abs(ants_array(got) - ants_array(want)).max() < 1e-6
        tumour = np.zeros(shape, bool)
        tumour[20:31, 12:20, 9:15] = True
        tumour[:2, 3:6, -2:] = True  # at the grid's edge
        whole = ndimage.distance_transform_edt(~tumour, sampling=spacing_mm(affine)) > TUMOUR_MARGIN_MM
        assert np.array_equal(_keep_mask(tumour, shape, affine), whole)


def test_ants_images_keep_the_ras_grid(tmp_path, atlas):
    """An identity transform maps a volume like gliofit's own RAS resampler does (flipped, oblique grids)."""
    import ants

    rng = np.random.default_rng(0)
    data = ndimage.gaussian_filter(rng.random((30, 34, 28)).astype(np.float32), 2.0)
    affine = np.array([[-3.0, 0.2, 0.0, 40.0], [0.0, 0.0, 3.2, -60.0], [0.1, -3.0, 0.0, 50.0], [0, 0, 0, 1.0]])
    img = ants_image(data, affine)
    ijk = np.array([4.0, 7.0, 11.0])
    lps = np.asarray(ants.transform_index_to_physical_point(img, tuple(int(v) for v in ijk)))
    assert np.allclose(lps * [-1, -1, 1], voxel_to_world(affine, ijk), atol=1e-3)
    tx = ants.new_ants_transform(dimension=3, transform_type="AffineTransform")
    path = str(tmp_path / "identity0GenericAffine.mat")
    ants.write_transform(tx, path)
    reg = AntsRegistration([path], [path], float("nan"), "Affine")
    got = reg.to_atlas(data, affine, atlas)
    want = resample_linear(data, affine, atlas.affine, atlas.shape)
    cover = want != 0
    assert cover.sum() > 1000 and np.abs(got - want)[cover].max() < 1e-3
    back = reg.to_patient(got, atlas, data.shape, affine)
    assert np.allclose(back, resample_linear(got, atlas.affine, affine, data.shape), atol=1e-3)


def test_save_load_gives_identical_warps(tmp_path, atlas, patient, registrations):
    reg = registrations("SyN")
    written = reg.save(tmp_path / "transforms")
    assert set(written) == {
        "patient_to_atlas_0GenericAffine.mat",
        "patient_to_atlas_1Warp.nii.gz",
        "patient_to_atlas_1InverseWarp.nii.gz",
        "registration.json",
    }
    meta = json.loads(written["registration.json"].read_text())
    assert meta["kind"] == "SyN" and meta["gliofit_version"] and meta["seed"] == 0
    assert not list((tmp_path / "transforms").glob(".*part*"))  # no temporary left
    loaded = AntsRegistration.load(tmp_path / "transforms")
    assert all(str(tmp_path) in t for t in loaded.fwd_transforms + loaded.inv_transforms)
    assert loaded.kind == "SyN" and loaded.metric == pytest.approx(reg.metric)
    vol = patient["t1"]
    assert np.array_equal(loaded.to_atlas(vol, patient["affine"], atlas), reg.to_atlas(vol, patient["affine"], atlas))
    dens = atlas.wm.astype(np.float32)
    shape, aff = vol.shape, patient["affine"]
    assert np.array_equal(loaded.to_patient(dens, atlas, shape, aff), reg.to_patient(dens, atlas, shape, aff))
    loaded.save(tmp_path / "again")  # a loaded one saves too
    (tmp_path / "transforms" / "patient_to_atlas_1Warp.nii.gz").unlink()
    with pytest.raises(InputError, match="patient_to_atlas_1Warp.nii.gz"):
        AntsRegistration.load(tmp_path / "transforms")
    with pytest.raises(InputError, match="nowhere"):
        AntsRegistration.load(tmp_path / "nowhere")


def test_the_same_seed_repeats(atlas, patient, registrations):
    first = registrations("Affine")
    again = register_to_atlas_ants(
        patient["t1"], patient["affine"], atlas, exclude=patient["tumour"], kind="Affine", seed=0
    )
    a = np.stack(
        [r.to_atlas(patient["world"][..., k], patient["affine"], atlas) for r in (first, again) for k in range(3)]
    )
    diff = np.abs(a[:3] - a[3:]).max()
    assert diff < 0.05 and (first.info["threads"] != 1 or diff == 0.0)


def test_bad_input_names_the_source(atlas, patient):
    t1, aff = patient["t1"], patient["affine"]
    with pytest.raises(InputError, match=r"^p\.nii\.gz: atlas .* has no T1"):
        register_to_atlas_ants(t1, aff, dataclasses.replace(atlas, t1=None), source="p.nii.gz")
    with pytest.raises(InputError, match=r"^p\.nii\.gz: T1 image is constant"):
        register_to_atlas_ants(np.full(t1.shape, 3.0), aff, atlas, source="p.nii.gz")
    with pytest.raises(InputError, match=r"^p\.nii\.gz: T1 must be a 3-D image"):
        register_to_atlas_ants(t1[..., None], aff, atlas, source="p.nii.gz")
    with pytest.raises(InputError, match=r"^p\.nii\.gz: tumour mask shape"):
        register_to_atlas_ants(t1, aff, atlas, exclude=np.zeros((3, 3, 3), bool), source="p.nii.gz")
    with pytest.raises(InputError, match=r"^p\.nii\.gz: registration kind"):
        register_to_atlas_ants(t1, aff, atlas, kind="BSpline", source="p.nii.gz")
