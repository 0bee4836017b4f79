"""Synthetic four-channel brain MRI with known tumour labels (data for tests and demos).

A phantom is a tumour grown by our Fisher–Kolmogorov solver in the atlas,
turned into T1, T1c, T2 and FLAIR images by simple appearance rules:

- labels from the density ``u``: edema (SNFH) where ``u >= threshold_edema``
  (0.25), enhancing rim where ``threshold_core <= u < threshold_necrosis``
  (0.675, 0.95), necrosis (NETC) where ``u >= threshold_necrosis``;
- tissue intensities mixed from the GM/WM/CSF probabilities with textbook
  contrasts (T1: WM > GM > CSF; T2: CSF brightest; FLAIR: CSF dark), tumour
  regions blended in (edema bright on T2/FLAIR, enhancing rim bright on T1c,
  necrosis dark on T1/T1c and bright on T2);
- a smooth multiplicative bias field, Rician noise and a random global
  intensity scale per modality; zero outside the brain (skull-stripped).

Sampling (:func:`sample_truth`) is kept apart from rendering
(:func:`render_phantom`); every random number comes from one seeded
generator and every sampled parameter is written to ``truth.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from gliofit.common.errors import InputError, check_positive
from gliofit.common.grids import resample_area, resample_linear, voxel_to_world
from gliofit.common.io import atomic_directory, write_json
from gliofit.common.labels import convert_labels
from gliofit.common.nifti import save_volume
from gliofit.common.units import DEFAULT_THRESHOLD_CORE, DEFAULT_THRESHOLD_EDEMA, derived_parameters
from gliofit.growth.atlas import Atlas, resample_atlas
from gliofit.growth.solver import simulate_one
from gliofit.segmentation.brats_convert import LAYOUTS, MODALITIES

__all__ = [
    "THRESHOLD_NECROSIS",
    "PhantomTruth",
    "sample_truth",
    "density_to_labels",
    "render_phantom",
    "write_case",
    "make_phantoms",
]

THRESHOLD_NECROSIS = 0.95
"""Density above which a phantom's core is necrotic (dark on T1c)."""

# Mean intensity of each tissue / tumour class per modality (arbitrary units, ~1 = bright).
_CONTRAST: dict[str, dict[str, float]] = {
    #          csf   gm    wm    edema enhancing necrosis
    "t1": dict(csf=0.25, gm=0.55, wm=0.80, edema=0.45, enhancing=0.50, necrosis=0.22),
    "t1c": dict(csf=0.25, gm=0.55, wm=0.80, edema=0.45, enhancing=1.25, necrosis=0.18),
    "t2": dict(csf=1.00, gm=0.60, wm=0.42, edema=0.85, enhancing=0.70, necrosis=0.95),
    "flair": dict(csf=0.12, gm=0.62, wm=0.48, edema=0.98, enhancing=0.80, necrosis=0.45),
}


@dataclass(frozen=True)
class PhantomTruth:
    """The parameters behind one phantom (written to ``truth.json``).

    Units as in INTERFACES.md: D in mm²/day, rho in 1/day, T in days, origin in
    world mm; ``bias_coeffs`` and ``scales`` are per modality in ``MODALITIES`` order.
    """

    case: str
    seed: int
    D_mm2_per_day: float
    rho_per_day: float
    T_days: float
    origin_mm: tuple[float, float, float]
    threshold_edema: float
    threshold_core: float
    threshold_necrosis: float
    noise_sigma: float
    bias_strength: float
    scales: tuple[float, ...]


def sample_truth(grid: Atlas, rng: np.random.Generator, case: str, seed: int) -> PhantomTruth:
    """Draw tumour and imaging parameters for one phantom.

    D (0.05–0.5 mm²/day) and rho (0.02–0.12 /day) are log-uniform; T is chosen
    so the Fisher front (speed 2·sqrt(D·rho) mm/day) travels a radius of
    15–35 mm after a lag of 3/rho days for the seed to saturate (clipped to
    30–1500 days), which gives BraTS-like tumour sizes.
    The origin is a random voxel centre with GM + WM >= 0.7 that lies at least
    15 mm inside the grid.
    """
    D = float(np.exp(rng.uniform(np.log(0.05), np.log(0.5))))
    rho = float(np.exp(rng.uniform(np.log(0.02), np.log(0.12))))
    radius_mm = rng.uniform(15.0, 35.0)
    T = float(np.clip(radius_mm / (2.0 * np.sqrt(D * rho)) + 3.0 / rho, 30.0, 1500.0))
    idx = np.argwhere(grid.tissue >= 0.7)
    margin = int(np.ceil(15.0 / min(grid.spacing_mm)))
    inside = np.all((idx >= margin) & (idx < np.asarray(grid.shape) - margin), axis=1)
    idx = idx[inside] if inside.any() else idx
    if len(idx) == 0:
        raise InputError(f"atlas {grid.name}: no voxel with GM + WM >= 0.7 to seed a phantom tumour")
    origin = voxel_to_world(grid.affine, idx[rng.integers(len(idx))])
    return PhantomTruth(
        case=case,
        seed=seed,
        D_mm2_per_day=round(D, 6),
        rho_per_day=round(rho, 6),
        T_days=round(T, 3),
        origin_mm=tuple(round(float(v), 4) for v in origin),  # type: ignore[arg-type]
        threshold_edema=DEFAULT_THRESHOLD_EDEMA,
        threshold_core=DEFAULT_THRESHOLD_CORE,
        threshold_necrosis=THRESHOLD_NECROSIS,
        noise_sigma=round(float(rng.uniform(0.02, 0.05)), 4),
        bias_strength=round(float(rng.uniform(0.05, 0.2)), 4),
        scales=tuple(round(float(v), 4) for v in rng.uniform(0.85, 1.15, size=len(MODALITIES))),
    )


def density_to_labels(u: np.ndarray, truth: PhantomTruth) -> np.ndarray:
    """BraTS 2023 labels (uint8: 0, 1 NETC, 2 SNFH, 3 ET) from a density ``u`` (X, Y, Z) in [0, 1]."""
    lab = np.zeros(u.shape, dtype=np.uint8)
    lab[u >= truth.threshold_edema] = 2
    lab[u >= truth.threshold_core] = 3
    lab[u >= truth.threshold_necrosis] = 1
    return lab


def _bias_field(shape: tuple[int, ...], strength: float, rng: np.random.Generator) -> np.ndarray:
    """exp of a random second-order polynomial over [-1, 1]³, scaled to ±``strength`` (float32)."""
    axes = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape], indexing="ij")
    x, y, z = axes
    terms = [x, y, z, x * y, y * z, x * z, x * x, y * y, z * z]
    field = sum(c * t for c, t in zip(rng.normal(size=len(terms)), terms))
    field = field / max(float(np.abs(field).max()), 1e-6) * strength
    return np.exp(field).astype(np.float32)


def render_phantom(
    grid: Atlas, labels: np.ndarray, truth: PhantomTruth, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Images of the four modalities (``MODALITIES``; each (X, Y, Z) float32 ≥ 0) on ``grid``.

    Parameters
    ----------
    grid : tissue maps on the image grid.
    labels : (X, Y, Z) uint8 BraTS 2023 labels on the same grid.
    truth : supplies noise level, bias strength and per-modality scales.
    rng : the phantom's generator (bias fields and noise are drawn from it).
    """
    brain = grid.brain
    total = np.maximum(grid.gm + grid.wm + grid.csf, 1e-6)
    sigma_vox = 0.6 * 1.0 / np.asarray(grid.spacing_mm)  # soften label edges by ~0.6 mm
    weights = {
        name: gaussian_filter((labels == v).astype(np.float32), sigma_vox)
        for name, v in (("necrosis", 1), ("edema", 2), ("enhancing", 3))
    }
    tumour_w = np.clip(sum(weights.values()), 0.0, 1.0)
    out = {}
    for m, scale in zip(MODALITIES, truth.scales):
        c = _CONTRAST[m]
        tissue = (c["csf"] * grid.csf + c["gm"] * grid.gm + c["wm"] * grid.wm) / total
        tumour = sum(c[k] * w for k, w in weights.items()) / np.maximum(tumour_w, 1e-6)
        img = (1.0 - tumour_w) * tissue + tumour_w * tumour
        img = img * _bias_field(grid.shape, truth.bias_strength, rng)
        n1, n2 = rng.normal(0.0, truth.noise_sigma, size=(2,) + img.shape)
        img = np.sqrt((img + n1) ** 2 + n2**2)  # Rician magnitude noise
        out[m] = (np.where(brain, img, 0.0) * 1000.0 * scale).astype(np.float32)
    return out


def _density_on(grid: Atlas, sim_grid: Atlas, u: np.ndarray) -> np.ndarray:
    """Map a density from the simulation grid to the image grid (area average when coarser)."""
    if sim_grid is grid:
        return u
    if min(grid.spacing_mm) >= min(sim_grid.spacing_mm):
        out = resample_area(u, sim_grid.affine, grid.affine, grid.shape)
    else:
        out = resample_linear(u, sim_grid.affine, grid.affine, grid.shape, order=1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def write_case(
    out_dir: Path,
    truth: PhantomTruth,
    images: dict[str, np.ndarray],
    labels: np.ndarray,
    affine: np.ndarray,
    layout: str,
    extra: dict | None = None,
) -> Path:
    """Write one case folder atomically (temp folder, then rename); returns its path.

    Labels are stored in the layout's convention (2023: 1/2/3; 2021: 1/2/4) as uint8.
    """
    names = LAYOUTS[layout]
    final = out_dir / truth.case
    with atomic_directory(final) as tmp:
        for m in MODALITIES:
            save_volume(images[m], affine, tmp / f"{truth.case}{names[m]}.nii.gz")
        seg = labels if layout == "brats2023" else convert_labels(labels, "brats2023", "brats2021")
        save_volume(seg, affine, tmp / f"{truth.case}{names['seg']}.nii.gz", dtype=np.uint8)
        record = asdict(truth) | {"layout": layout, "modalities": list(MODALITIES)} | (extra or {})
        record |= derived_parameters(truth.D_mm2_per_day, truth.rho_per_day, truth.T_days)
        write_json(record, tmp / "truth.json")
    return final


def make_phantoms(
    out_dir: str | Path,
    cases: int,
    *,
    seed: int = 0,
    layout: str = "brats2023",
    resolution_mm: float | None = None,
    atlas: Atlas | None = None,
    sim_resolution_mm: float = 2.0,
    prefix: str = "Phantom",
    on_case=None,
) -> list[Path]:
    """Write ``cases`` phantom cases into ``out_dir`` in a BraTS folder layout.

    Parameters
    ----------
    out_dir : created if missing; one sub-folder per case, ``<prefix>-<seed>-<i:05d>``.
    cases : number of cases (> 0).
    seed : case ``i`` uses ``numpy.random.default_rng([seed, i])``, so cases are
        reproducible one by one.
    layout : ``"brats2023"`` (``-t1n/-t1c/-t2w/-t2f/-seg``) or ``"brats2021"``
        (``_t1/_t1ce/_t2/_flair/_seg``).
    resolution_mm : image grid spacing; ``None`` writes on the atlas grid itself
        (1 mm ICBM152), a number writes on ``resample_atlas(atlas, resolution_mm)``.
    atlas : tissue maps (default: ``load_atlas()``).
    sim_resolution_mm : the solver grid is ``max(resolution_mm, sim_resolution_mm)``.
    on_case : called with the case path after each case (progress).

    Returns
    -------
    The case folders, in order.
    """
    if layout not in LAYOUTS:
        raise InputError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}", parameter="layout")
    if int(cases) < 1:
        raise InputError(f"cases must be at least 1, got {cases}", parameter="cases")
    if atlas is None:
        from gliofit.growth.atlas import load_atlas

        atlas = load_atlas()
    grid = atlas if resolution_mm is None else resample_atlas(atlas, check_positive(resolution_mm, "resolution_mm"))
    sim_res = max(min(grid.spacing_mm), check_positive(sim_resolution_mm, "simulation resolution (mm)"))
    sim_grid = grid if np.isclose(sim_res, min(grid.spacing_mm)) else resample_atlas(atlas, sim_res)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(int(cases)):
        rng = np.random.default_rng([int(seed), i])
        truth = sample_truth(sim_grid, rng, f"{prefix}-{int(seed)}-{i:05d}", int(seed))
        u = simulate_one(sim_grid, truth.D_mm2_per_day, truth.rho_per_day, truth.origin_mm, truth.T_days)
        labels = density_to_labels(_density_on(grid, sim_grid, u), truth)
        images = render_phantom(grid, labels, truth, rng)
        counts = {
            k: int(np.isin(labels, v).sum())
            for k, v in (("voxels_whole_tumor", (1, 2, 3)), ("voxels_core", (1, 3)), ("voxels_enhancing", (3,)))
        }
        extra = {
            "index": i,
            "atlas": atlas.name,
            "spacing_mm": list(grid.spacing_mm),
            "sim_resolution_mm": float(sim_res),
            "shape": list(grid.shape),
        } | counts
        paths.append(write_case(out, truth, images, labels, grid.affine, layout, extra))
        if on_case is not None:
            on_case(paths[-1])
    return paths
