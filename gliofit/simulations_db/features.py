"""Compact feature vectors of tumour masks, for FAISS candidate search.

A database entry (or a query) is a pair of boolean masks on the database grid:
the whole tumour and the tumour core. Its feature vector is built so that a
small Euclidean distance between two vectors means a high Dice between the two
mask pairs, cheaply enough for millions of entries:

1. **Coarse occupancy.** Each mask is pooled to a coarse grid of cubic cells of
   ``cell_voxels`` voxels a side (voxel counts per cell), then smoothed on the
   coarse grid with the separable kernel [1, 2, 1]/4 (mass preserving), so a
   small shift of a small tumour changes the vector gradually instead of
   jumping from one cell to the next.
2. **Cosine.** Each pooled mask is scaled to unit L2 norm (an empty mask stays
   zero). For unit vectors ``|a - b|^2 = 2 (1 - cos)``, and the cosine of two
   binary masks is the Ochiai coefficient ``|A∩B| / sqrt(|A||B|)``, which is
   close to Dice ``2|A∩B| / (|A|+|B|)`` when the volumes are alike. The core
   part is multiplied by ``core_weight`` (1 = whole tumour and core count
   equally, as in the mean Dice used for ranking).
3. **Volume.** Coarse cells cannot see volume differences inside one cell (a
   1 cm³ and a 2 cm³ tumour at the same place pool alike), so two coordinates
   ``volume_weight * ln(1 + n_voxels)`` (whole tumour, core) are appended.

4. **A second, finer scale** (version 2). Among 10^6 entries the 10th-best
   Dice sits among many near-equal ones whose 16 mm cells look alike; the
   same two unit occupancies pooled on cubes of ``fine_cell_voxels`` (unsmoothed),
   scaled by ``fine_weight``, separate them (``benchmarks/index.py``).

Vector layout: ``[whole tumour cells (C), core cells (C), (version 2: whole
tumour fine cells (F), core fine cells (F),) ln-volume whole tumour, ln-volume
core]`` with ``C = prod(coarse_shape)``, ``F = prod(fine_shape)``, float32.
Version 1 (one scale) is still read: a database indexed with it keeps
working, and ``gliofit db index`` recomputes its features with the current
version (:mod:`.reindex`).

Candidates from this distance are re-ranked by exact Dice
(:mod:`gliofit.simulations_db.dice`); the features only have to put the exact
best entries among the first few hundred, which the benchmark
``benchmarks/index.py`` measures.

>>> spec = FeatureSpec.for_grid((77, 95, 82), spacing_mm=2.0)
>>> spec.coarse_shape, spec.fine_shape, spec.dim
((10, 12, 11), (13, 16, 14), 8466)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from gliofit.common.errors import InputError

__all__ = [
    "FEATURE_VERSION",
    "FEATURE_VERSIONS",
    "DEFAULT_CELL_MM",
    "DEFAULT_FINE_CELL_MM",
    "FeatureSpec",
    "entry_features",
    "query_features",
]

FEATURE_VERSION = 2
"""The version new databases get; bumped whenever the vector layout or weighting changes."""
FEATURE_VERSIONS = (1, 2)
"""Versions this code computes: 1 (one scale), 2 (two scales)."""
DEFAULT_CELL_MM = 16.0
"""Default coarse cell edge in mm (8 voxels at 2 mm); chosen by measured recall, see benchmarks/RESULTS.md."""
DEFAULT_FINE_CELL_MM = 12.0
"""Default fine cell edge in mm of version 2 (6 voxels at 2 mm); chosen by measured recall."""
DEFAULT_FINE_WEIGHT = 1.0
_SMOOTH = np.array([0.25, 0.5, 0.25], dtype=np.float64)


@dataclass(frozen=True)
class FeatureSpec:
    """How masks on one database grid become feature vectors.

    Attributes
    ----------
    grid_shape : (X, Y, Z) voxels of the database grid.
    spacing_mm : voxel edge of the database grid in mm.
    cell_voxels : coarse cell edge in voxels.
    core_weight : weight of the core part relative to the whole-tumour part.
    volume_weight : weight of the two ``ln(1 + n_voxels)`` coordinates.
    smooth : smooth the pooled occupancy with [1, 2, 1]/4 on the coarse grid.
    fine_cell_voxels : fine cell edge in voxels (version 2; 0 in version 1).
    fine_weight : weight of the fine part relative to the coarse part (version 2).
    version : one of :data:`FEATURE_VERSIONS`, the layout the vectors have.
    """

    grid_shape: tuple[int, int, int]
    spacing_mm: float
    cell_voxels: int
    core_weight: float = 1.0
    volume_weight: float = 0.1
    smooth: bool = True
    fine_cell_voxels: int = 0
    fine_weight: float = DEFAULT_FINE_WEIGHT
    version: int = 1

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.grid_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"grid_shape must be 3 positive integers, got {self.grid_shape!r}")
        object.__setattr__(self, "grid_shape", shape)
        if not (math.isfinite(self.spacing_mm) and self.spacing_mm > 0):
            raise InputError(f"spacing_mm must be a positive number, got {self.spacing_mm!r}")
        if int(self.cell_voxels) < 1:
            raise InputError(f"cell_voxels must be >= 1, got {self.cell_voxels!r}")
        object.__setattr__(self, "cell_voxels", int(self.cell_voxels))
        object.__setattr__(self, "fine_cell_voxels", int(self.fine_cell_voxels))
        if self.version not in FEATURE_VERSIONS:
            raise InputError(
                f"feature spec version {self.version} is not supported (this gliofit reads versions "
                f"{', '.join(map(str, FEATURE_VERSIONS))}); upgrade gliofit"
            )
        if (self.version >= 2) != (self.fine_cell_voxels >= 1):
            raise InputError(
                f"feature spec version {self.version} with fine_cell_voxels {self.fine_cell_voxels}: "
                "version 2 needs fine cells >= 1 voxel, version 1 none"
            )

    @classmethod
    def for_grid(
        cls,
        grid_shape: tuple[int, int, int],
        spacing_mm: float,
        *,
        cell_mm: float = DEFAULT_CELL_MM,
        fine_cell_mm: float = DEFAULT_FINE_CELL_MM,
        version: int = FEATURE_VERSION,
    ) -> FeatureSpec:
        """The default spec of ``version`` for a grid: cells of about ``cell_mm`` (and ``fine_cell_mm``) mm."""
        if not (math.isfinite(float(spacing_mm)) and float(spacing_mm) > 0):
            raise InputError(f"spacing_mm must be a positive number, got {spacing_mm!r}")
        cell = max(1, int(round(float(cell_mm) / float(spacing_mm))))
        fine = max(1, int(round(float(fine_cell_mm) / float(spacing_mm)))) if version >= 2 else 0
        return cls(
            tuple(grid_shape),
            float(spacing_mm),
            cell,
            fine_cell_voxels=fine,  # type: ignore[arg-type]
            version=version,
        )

    @property
    def is_current(self) -> bool:
        """Whether vectors of this spec have the layout new databases get (:data:`FEATURE_VERSION`)."""
        return self.version == FEATURE_VERSION

    def current(self) -> FeatureSpec:
        """This grid's spec at :data:`FEATURE_VERSION` with the same coarse cells and weights."""
        if self.is_current:
            return self
        fine = max(1, int(round(DEFAULT_FINE_CELL_MM / self.spacing_mm)))
        return FeatureSpec(
            self.grid_shape,
            self.spacing_mm,
            self.cell_voxels,
            self.core_weight,
            self.volume_weight,
            self.smooth,
            fine,
            DEFAULT_FINE_WEIGHT,
            FEATURE_VERSION,
        )

    @property
    def coarse_shape(self) -> tuple[int, int, int]:
        """Number of coarse cells along each axis (the last cell may be partial)."""
        c = self.cell_voxels
        return tuple(-(-s // c) for s in self.grid_shape)  # type: ignore[return-value]

    @property
    def fine_shape(self) -> tuple[int, int, int]:
        """Number of fine cells along each axis ((0, 0, 0) in version 1)."""
        c = self.fine_cell_voxels
        return tuple(-(-s // c) if c else 0 for s in self.grid_shape)  # type: ignore[return-value]

    @property
    def n_cells(self) -> int:
        return int(np.prod(self.coarse_shape))

    @property
    def n_fine(self) -> int:
        return int(np.prod(self.fine_shape))

    @property
    def dim(self) -> int:
        """Length of a feature vector."""
        return 2 * self.n_cells + 2 * self.n_fine + 2

    def to_dict(self) -> dict:
        """JSON-ready form for the database manifest (inverse of :meth:`from_dict`)."""
        d = asdict(self)
        d["grid_shape"] = list(self.grid_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpec:
        """Rebuild a spec written by :meth:`to_dict`; raise :class:`InputError` if malformed."""
        try:
            return cls(
                grid_shape=tuple(d["grid_shape"]),
                spacing_mm=float(d["spacing_mm"]),
                cell_voxels=int(d["cell_voxels"]),
                core_weight=float(d["core_weight"]),
                volume_weight=float(d["volume_weight"]),
                smooth=bool(d["smooth"]),
                fine_cell_voxels=int(d.get("fine_cell_voxels", 0)),
                fine_weight=float(d.get("fine_weight", DEFAULT_FINE_WEIGHT)),
                version=int(d["version"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"malformed feature spec {d!r}: {exc}") from None


def _pooled(
    crop: np.ndarray, offset: tuple[int, int, int], c: int, shape: tuple[int, int, int], smooth: bool
) -> np.ndarray:
    """(prod(shape),) float64 voxel counts of ``crop`` per cell of ``c`` voxels a side, smoothed if ``smooth``.

    The crop is summed cell by cell with ``np.add.reduceat`` along each axis (cost
    O(crop voxels), no full-grid array); smoothing runs on the small patch of
    touched cells plus one cell each way, and whatever spills past the coarse
    grid is dropped (zero boundaries).
    """
    patch = crop.view(np.uint8)
    first = []
    for axis, (o, s) in enumerate(zip(offset, crop.shape)):
        starts = np.arange(c - o % c if o % c else c, s, c)
        starts = np.concatenate(([0], starts)) if s else starts
        patch = np.add.reduceat(patch, starts, axis=axis, dtype=np.int32)
        first.append(o // c)
    counts = patch.astype(np.float64)
    if smooth and counts.size:
        padded = np.zeros([n + 2 for n in counts.shape])
        padded[1:-1, 1:-1, 1:-1] = counts
        counts = padded
        first = [f - 1 for f in first]
        for axis in range(3):
            out = counts * _SMOOTH[1]
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(0, -1), slice(1, None)
            out[tuple(hi)] += _SMOOTH[0] * counts[tuple(lo)]
            out[tuple(lo)] += _SMOOTH[2] * counts[tuple(hi)]
            counts = out
    full = np.zeros(shape, dtype=np.float64)
    src, dst = [], []
    for f, n, g in zip(first, counts.shape, shape):
        lo_, hi_ = max(f, 0), min(f + n, g)
        dst.append(slice(lo_, hi_))
        src.append(slice(lo_ - f, hi_ - f))
    full[tuple(dst)] = counts[tuple(src)]
    return full.ravel()


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.sqrt(np.dot(v, v)))
    return v / norm if norm > 0 else v


def _check_crop(spec: FeatureSpec, crop: np.ndarray, name: str, offset: tuple[int, int, int]) -> np.ndarray:
    crop = np.asarray(crop)
    if crop.ndim != 3:
        raise InputError(f"{name} must be a 3-D mask, got shape {crop.shape}")
    if crop.dtype != bool:
        raise InputError(f"{name} must be a boolean mask, got dtype {crop.dtype}")
    for o, s, g in zip(offset, crop.shape, spec.grid_shape):
        if o < 0 or o + s > g:
            raise InputError(
                f"{name} of shape {crop.shape} at offset {offset} does not fit the database grid {spec.grid_shape}"
            )
    return crop


def entry_features(
    spec: FeatureSpec, whole_tumor_crop: np.ndarray, core_crop: np.ndarray, offset: tuple[int, int, int]
) -> np.ndarray:
    """Feature vector of one entry stored as bounding-box crops.

    Parameters
    ----------
    spec : the database's :class:`FeatureSpec`.
    whole_tumor_crop, core_crop : (x, y, z) bool masks inside the entry's bounding box
        (same shape), whose first voxel lies at ``offset`` on the database grid.
    offset : (3,) int voxel index of the crop's first voxel.

    Returns
    -------
    (spec.dim,) float32 vector; see the module docstring for the layout.
    """
    try:
        off = tuple(int(o) for o in offset)
    except (TypeError, ValueError):
        raise InputError(f"offset must be 3 integers, got {offset!r}") from None
    if len(off) != 3:
        raise InputError(f"offset must be 3 integers, got {offset!r}")
    wt = _check_crop(spec, whole_tumor_crop, "whole_tumor_crop", off)  # type: ignore[arg-type]
    core = _check_crop(spec, core_crop, "core_crop", off)  # type: ignore[arg-type]
    if wt.shape != core.shape:
        raise InputError(f"whole_tumor_crop {wt.shape} and core_crop {core.shape} differ in shape")
    parts = []
    scales = [(spec.cell_voxels, spec.coarse_shape, spec.smooth, 1.0)]
    if spec.fine_cell_voxels:
        scales.append((spec.fine_cell_voxels, spec.fine_shape, False, spec.fine_weight))
    for cell, shape, smooth, weight in scales:
        parts.append(weight * _unit(_pooled(wt, off, cell, shape, smooth)))  # type: ignore[arg-type]
        parts.append(weight * spec.core_weight * _unit(_pooled(core, off, cell, shape, smooth)))  # type: ignore[arg-type]
    volumes = [spec.volume_weight * math.log1p(int(np.count_nonzero(m))) for m in (wt, core)]
    return np.concatenate(parts + [np.asarray(volumes)]).astype(np.float32)


def _bbox(mask: np.ndarray) -> tuple[tuple[int, ...], tuple[slice, ...]]:
    """First voxel and slices of the bounding box of ``mask`` (an empty mask gives a 1-voxel box)."""
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(len(i) == 0 for i in idx):
        return (0, 0, 0), (slice(0, 1),) * 3
    lo = tuple(int(i[0]) for i in idx)
    return lo, tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)


def query_features(spec: FeatureSpec, whole_tumor: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Feature vector of a query given as full-grid masks.

    Parameters
    ----------
    spec : the database's :class:`FeatureSpec`.
    whole_tumor, core : (X, Y, Z) bool masks on the database grid (``spec.grid_shape``).

    Returns
    -------
    (spec.dim,) float32, identical to :func:`entry_features` of the same masks cropped.
    """
    for name, m in (("whole_tumor", whole_tumor), ("core", core)):
        arr = np.asarray(m)
        if arr.shape != spec.grid_shape:
            raise InputError(f"{name} mask has shape {arr.shape}, the database grid is {spec.grid_shape}")
        if arr.dtype != bool:
            raise InputError(f"{name} mask must be boolean, got dtype {arr.dtype}")
    wt, co = np.asarray(whole_tumor), np.asarray(core)
    lo, box = _bbox(wt | co)
    return entry_features(spec, wt[box], co[box], lo)  # type: ignore[arg-type]
