"""Brain atlases: tissue probability maps on a grid, and simulation grids cut from them.

An :class:`Atlas` holds grey matter, white matter and CSF probability maps
(float32, in [0, 1]) on one voxel grid with its affine (voxel -> world mm, RAS).
The default ``icbm152`` is the ICBM 2009a symmetric 1 mm template that nilearn
ships inside its package (no download); CSF/outside = brain - GM - WM.

A simulation grid is the same kind of object at another spacing, cropped to
the brain with a margin (:func:`resample_atlas`); its affine keeps every voxel
tied to world millimetres, so results map back onto the 1 mm atlas exactly
(:func:`to_atlas_grid`).

>>> atlas = load_atlas("icbm152")                 # doctest: +SKIP
>>> grid = resample_atlas(atlas, spacing_mm=2.0)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gliofit.common.cache import cache_dir
from gliofit.common.errors import InputError, check_positive

__all__ = [
    "Atlas",
    "TISSUE_THRESHOLD",
    "DEFAULT_ATLAS",
    "load_atlas",
    "atlas_from_tissue_maps",
    "atlas_from_label_map",
    "resample_atlas",
    "to_atlas_grid",
]

TISSUE_THRESHOLD = 0.1
"""Voxels whose GM + WM probability is below this are CSF/outside: no tumour, no flux."""
DEFAULT_ATLAS = "icbm152"
ICBM152_NAME = "icbm152-2009a"
LABEL_MAP_VALUES = {"csf": 1, "gm": 2, "wm": 3}
"""Tissue values of a single-file label-map atlas (the FSL FAST / SRI24 convention)."""


@dataclass(frozen=True, eq=False)
class Atlas:
    """Tissue probability maps on one grid.

    Attributes
    ----------
    name : a short identifier stored with every database ("icbm152-2009a").
    gm, wm, csf : (X, Y, Z) float32 probabilities in [0, 1].
    affine : (4, 4) float64 voxel -> world mm (RAS).
    t1 : optional (X, Y, Z) float32 T1-weighted template (for registration, reports).
    """

    name: str
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    affine: np.ndarray
    t1: np.ndarray | None = field(default=None)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.gm.shape)  # type: ignore[return-value]

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        from gliofit.common.grids import spacing_mm

        return tuple(float(s) for s in spacing_mm(self.affine))  # type: ignore[return-value]

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    @property
    def tissue(self) -> np.ndarray:
        """GM + WM probability (float32)."""
        return self.gm + self.wm

    @property
    def domain(self) -> np.ndarray:
        """Boolean mask of voxels where tumour cells live and move (GM + WM >= :data:`TISSUE_THRESHOLD`)."""
        return self.tissue >= TISSUE_THRESHOLD

    @property
    def brain(self) -> np.ndarray:
        """Boolean mask of the brain, CSF included (GM + WM + CSF >= :data:`TISSUE_THRESHOLD`)."""
        return (self.gm + self.wm + self.csf) >= TISSUE_THRESHOLD

    def tissue_at(self, origin_mm) -> float:
        """GM + WM probability at the voxel nearest to a world point (0 outside the grid)."""
        from gliofit.common.grids import world_to_voxel

        ijk = np.rint(world_to_voxel(self.affine, np.asarray(origin_mm, dtype=np.float64))).astype(int)
        if np.any(ijk < 0) or np.any(ijk >= np.asarray(self.shape)):
            return 0.0
        return float(self.tissue[tuple(ijk)])

    def volumes_cm3(self) -> dict[str, float]:
        """Expected tissue volumes (sum of probabilities x voxel volume), cm³."""
        v = self.voxel_volume_mm3 / 1000.0
        return {
            "gm": float(self.gm.sum(dtype=np.float64) * v),
            "wm": float(self.wm.sum(dtype=np.float64) * v),
            "csf": float(self.csf.sum(dtype=np.float64) * v),
            "domain": float(self.domain.sum() * v),
        }

    def checksum(self) -> str:
        """SHA-256 over the name, affine and tissue maps: identifies a simulation grid."""
        h = hashlib.sha256(self.name.encode())
        h.update(np.ascontiguousarray(self.affine, dtype=np.float64).tobytes())
        for a in (self.gm, self.wm, self.csf):
            h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
        return h.hexdigest()

    def info(self) -> dict:
        """JSON-ready summary: name, shape, spacing, affine, tissue volumes."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "spacing_mm": [round(s, 6) for s in self.spacing_mm],
            "affine": np.round(self.affine, 6).tolist(),
            "volumes_cm3": {k: round(v, 3) for k, v in self.volumes_cm3().items()},
        }


def _validated(name: str, gm, wm, csf, affine, t1=None) -> Atlas:
    maps = [np.clip(np.nan_to_num(np.asarray(a, dtype=np.float32)), 0.0, 1.0) for a in (gm, wm, csf)]
    if t1 is not None:
        t1 = np.asarray(t1, dtype=np.float32)
    return Atlas(name, *maps, affine=np.asarray(affine, dtype=np.float64), t1=t1)


_MAPS = ("gm", "wm", "csf", "t1", "affine")


def _icbm152_cache() -> Path:
    from importlib.metadata import version

    return cache_dir() / f"atlas-{ICBM152_NAME}-nilearn-{version('nilearn')}"


def _read_cached(folder: Path) -> Atlas | None:
    """The ICBM152 maps stored by :func:`_write_cached` (read-only, memory-mapped: a map is read when used),
    or None when absent or damaged (CRC-32 checked)."""
    from gliofit.common.array_cache import load_arrays

    found = load_arrays(folder, ICBM152_NAME, mmap=True)
    if found is None or set(found[0]) != set(_MAPS):
        return None
    a = found[0]
    return Atlas(ICBM152_NAME, a["gm"], a["wm"], a["csf"], a["affine"], a["t1"])


def _write_cached(folder: Path, atlas: Atlas) -> None:
    from gliofit.common.array_cache import save_arrays

    save_arrays(folder, {key: getattr(atlas, key) for key in _MAPS}, ICBM152_NAME)


def _load_icbm152() -> Atlas:
    """ICBM152 from the user cache (checked), else from nilearn's files (then cached)."""
    folder = _icbm152_cache()
    cached = _read_cached(folder)
    if cached is not None:
        return cached
    atlas = _load_icbm152_nilearn()
    _write_cached(folder, atlas)
    return atlas


def _load_icbm152_nilearn() -> Atlas:
    from nilearn import datasets

    gm = datasets.load_mni152_gm_template(resolution=1)
    wm = datasets.load_mni152_wm_template(resolution=1)
    t1 = datasets.load_mni152_template(resolution=1)
    brain = datasets.load_mni152_brain_mask(resolution=1)
    g, w = gm.get_fdata(), wm.get_fdata()
    csf = np.clip(brain.get_fdata() - g - w, 0.0, 1.0)
    return _validated(ICBM152_NAME, g, w, csf, gm.affine, t1.get_fdata())


def _same_grid(paths: list[Path], shapes: list[tuple], affines: list[np.ndarray]) -> None:
    from gliofit.common.grids import check_same_grid

    for p, s, a in zip(paths[1:], shapes[1:], affines[1:]):
        check_same_grid(p, s, a, shapes[0], affines[0], what="tissue map", ref=str(paths[0]))


def atlas_from_tissue_maps(
    gm: str | Path, wm: str | Path, csf: str | Path, t1: str | Path | None = None, name: str | None = None
) -> Atlas:
    """An atlas from three tissue probability NIfTI files (and an optional T1) on one grid."""
    from gliofit.common.nifti import load_volume

    paths = [Path(p) for p in (gm, wm, csf)] + ([Path(t1)] if t1 else [])
    loaded = [load_volume(p, what) for p, what in zip(paths, ("GM map", "WM map", "CSF map", "T1"))]
    _same_grid(paths, [d.shape for d, _ in loaded], [a for _, a in loaded])
    for p, (d, _) in zip(paths[:3], loaded[:3]):
        if np.nanmin(d) < -1e-3 or np.nanmax(d) > 1.0 + 1e-3:
            raise InputError(
                f"{p}: tissue probabilities must lie in [0, 1], got [{np.nanmin(d):.3g}, {np.nanmax(d):.3g}]"
            )
    t1_data = loaded[3][0] if t1 else None
    return _validated(
        name or Path(gm).parent.name or "custom", loaded[0][0], loaded[1][0], loaded[2][0], loaded[0][1], t1_data
    )


def atlas_from_label_map(path: str | Path, name: str | None = None) -> Atlas:
    """An atlas from one label-map NIfTI: 1 CSF, 2 GM, 3 WM, 0 outside."""
    from gliofit.common.nifti import load_volume

    data, affine = load_volume(path, "atlas label map")
    values = set(np.unique(np.rint(data)).astype(int).tolist())
    if not values <= {0, 1, 2, 3} or not {2, 3} <= values:
        raise InputError(f"{path}: an atlas label map needs values 0 outside, 1 CSF, 2 GM, 3 WM; got {sorted(values)}")
    lab = np.rint(data).astype(int)
    maps = [(lab == LABEL_MAP_VALUES[k]).astype(np.float32) for k in ("gm", "wm", "csf")]
    return _validated(name or Path(path).name.split(".")[0], *maps, affine)


def load_atlas(spec: str | Path = DEFAULT_ATLAS) -> Atlas:
    """Load an atlas by name or path.

    Parameters
    ----------
    spec : ``"icbm152"`` (default, shipped by nilearn); a directory holding
        ``gm``, ``wm`` and ``csf`` NIfTI files (and optionally ``t1``), each as
        ``.nii.gz`` or ``.nii``; or one label-map NIfTI (1 CSF, 2 GM, 3 WM).
    """
    if str(spec) in (DEFAULT_ATLAS, ICBM152_NAME):
        return _load_icbm152()
    p = Path(spec)
    if p.is_dir():
        found = {}
        for key in ("gm", "wm", "csf", "t1"):
            hits = [p / f"{key}{ext}" for ext in (".nii.gz", ".nii") if (p / f"{key}{ext}").is_file()]
            if hits:
                found[key] = hits[0]
        missing = [k for k in ("gm", "wm", "csf") if k not in found]
        if missing:
            raise InputError(f"{p}: atlas directory lacks {', '.join(k + '.nii.gz' for k in missing)}")
        return atlas_from_tissue_maps(found["gm"], found["wm"], found["csf"], found.get("t1"), name=p.name)
    if p.exists() or p.suffix in (".nii", ".gz"):
        return atlas_from_label_map(p)
    raise InputError(f"{spec}: not a known atlas name (icbm152), atlas directory or label-map file")


def resample_atlas(atlas: Atlas, spacing_mm: float, *, margin_mm: float = 4.0) -> Atlas:
    """The atlas on an isotropic grid of ``spacing_mm``, cropped to the brain plus a margin.

    Tissue maps are averaged by exact voxel overlap, so a coarse voxel holds
    the tissue fractions it covers. The new affine keeps the atlas's axes;
    voxel ``j`` of the new grid is centred on a world point, so results return
    to the atlas grid exactly (:func:`to_atlas_grid`).
    """
    from gliofit.common.grids import resample_area

    s = check_positive(spacing_mm, "resolution (mm)")
    src_spacing = np.asarray(atlas.spacing_mm)
    domain = atlas.domain
    if not domain.any():
        raise InputError(f"atlas {atlas.name}: no voxel has GM + WM >= {TISSUE_THRESHOLD}")
    idx = np.argwhere(domain)
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    scale = s / src_spacing
    margin_vox = margin_mm / src_spacing
    start = lo - margin_vox - 0.5  # src-index coordinate of the new grid's first face
    n = np.ceil((hi + margin_vox + 0.5 - start) / scale).astype(int)
    offset = start + scale / 2.0  # src-index coordinate of new voxel 0's centre
    m = np.eye(4)
    m[:3, :3] = np.diag(scale)
    m[:3, 3] = offset
    affine = atlas.affine @ m
    shape = tuple(int(v) for v in n)

    def res(a: np.ndarray) -> np.ndarray:
        return resample_area(a, atlas.affine, affine, shape).astype(np.float32)

    t1 = res(atlas.t1) if atlas.t1 is not None else None
    return Atlas(atlas.name, res(atlas.gm), res(atlas.wm), res(atlas.csf), affine, t1)


def to_atlas_grid(data: np.ndarray, grid: Atlas, atlas: Atlas, *, order: int = 1) -> np.ndarray:
    """Map a volume on a simulation ``grid`` back onto the ``atlas`` grid.

    Trilinear (``order=1``, float32) or nearest (``order=0``); zero outside the grid.
    """
    from gliofit.common.grids import resample_linear

    return resample_linear(data, grid.affine, atlas.affine, atlas.shape, order=order)
