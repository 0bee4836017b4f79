"""Register a patient T1 to the atlas T1 with ANTs: affine, then SyN, the tumour left out of the metric.

The atlas T1 is the fixed image, the patient's the moving one. Two ANTs runs:
an affine (12 parameters, initialised by aligning the intensity centres of
mass; Mattes mutual information, 10% of the voxels sampled, 8 then 4 mm
levels), then SyN from it (Mattes, 40 iterations at 8 mm, 20 at 4 mm, none at
2 mm). Both run on copies of the two images resampled to 2 mm
(:data:`REGISTRATION_SPACING_MM`); the transforms are physical, so they are
applied at any resolution. The tumour (a bool mask on the T1's grid, dilated
by :data:`TUMOUR_MARGIN_MM`) is the moving mask of both runs, which ANTs
passes as ``--masks [NA,moving]``: a fixed-image sample whose mapped point
falls in the tumour is dropped from the metric.

Timings and accuracy on a synthetic patient moved by a known transform are in benchmarks/RESULTS.md.

Repeatability: a fixed ANTs seed (``seed + 1``: ANTs takes 0 as "seed from
the clock") and one ITK thread (the default) give bit-identical transforms;
with more threads the mappings vary slightly from run to run.
ITK reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once per process, at its
first image operation, so ``threads`` only counts before a process's first
ANTs call (a later, different value is ignored with a warning).

Volumes travel through the transforms by :mod:`gliofit.pipelines.warp`: the same values as
``ants.apply_transforms`` (float32 rounding), in one numba pass on every core.

Coordinates: nibabel affines are RAS, ITK is LPS; :func:`ants_image` converts with
:func:`gliofit.common.grids.lps_geometry`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import shutil
import tempfile
import time
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from gliofit._version import __version__
from gliofit.common.errors import InputError
from gliofit.common.grids import lps_geometry, spacing_mm
from gliofit.common.io import atomic_write, write_json
from gliofit.growth.atlas import Atlas

__all__ = [
    "AntsRegistration",
    "register_to_atlas_ants",
    "ants_image",
    "ants_array",
    "KINDS",
    "TUMOUR_MARGIN_MM",
    "REGISTRATION_SPACING_MM",
]

KINDS = ("SyN", "Affine")
"""Registration kinds: affine then SyN, or affine only."""
TUMOUR_MARGIN_MM = 6.0
"""The tumour mask is dilated by this many mm before it is left out of the metric."""
REGISTRATION_SPACING_MM = 2.0
"""Images finer than this are resampled to it (isotropic, mm) for the registration itself."""
AFFINE_ITERATIONS = (200, 100, 0)
AFFINE_SHRINK = (4, 2, 1)
AFFINE_SMOOTHING_VOXELS = (2, 1, 0)
AFFINE_SAMPLING = 0.1
SYN_ITERATIONS = (40, 20, 0)
METRIC_SAMPLING = 0.25
"""Fraction of the voxels (a regular grid) on which the final metric is evaluated (a diagnostic kept in
registration.json; its agreement with the value on every voxel is in benchmarks/RESULTS.md)."""
PREFIX = "patient_to_atlas_"
JSON_NAME = "registration.json"
_THREADS_ENV = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
_ANTS_SUFFIX = re.compile(r"\d+(GenericAffine\.mat|InverseWarp\.nii\.gz|Warp\.nii\.gz)$")
_threads_in_effect: int | None = None


def ants_image(data: np.ndarray, affine: np.ndarray):
    """An ANTs float32 image of an (X, Y, Z) array on a RAS ``affine`` (origin, spacing, direction in LPS).

    Every ANTs path of gliofit starts here, so this fixes the process's ITK thread count (see
    :func:`_set_threads`) before ITK first reads it.
    """
    import ants

    _set_threads(None)
    origin, sp, direction = lps_geometry(affine)
    return ants.from_numpy(
        np.ascontiguousarray(data, dtype=np.float32),
        origin=tuple(float(v) for v in origin),
        spacing=tuple(float(s) for s in sp),
        direction=direction,
    )


def ants_array(img) -> np.ndarray:
    """The (X, Y, Z) float32 numpy array of an ANTs image."""
    return np.asarray(img.numpy(), dtype=np.float32)


def _is_label(data: np.ndarray) -> bool:
    """Bool or integer data (masks, labels) travel by nearest neighbour, the rest trilinearly."""
    return np.asarray(data).dtype.kind in "biu"


def _check_3d(data: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise InputError(f"{what} must be a 3-D volume, got shape {tuple(arr.shape)}")
    return arr


@dataclass
class AntsRegistration:
    """Atlas (fixed) <-> patient (moving) transforms found by ANTs.

    Attributes
    ----------
    fwd_transforms : ANTs transform files mapping patient -> atlas (``fwdtransforms``: warp, then affine).
    inv_transforms : atlas -> patient (``invtransforms``: affine, applied inverted, then inverse warp).
    metric : final Mattes mutual information on the 2 mm images (:data:`METRIC_SAMPLING` of the voxels),
        negated (lower is better), or NaN.
    kind : ``"SyN"`` or ``"Affine"``.
    info : provenance (seed, threads, seconds, versions); stored in ``registration.json``.

    The files of a fresh registration lie in a temporary folder removed when the object is
    garbage-collected; :meth:`save` keeps them, :meth:`load` gives an object reading them from there.
    """

    fwd_transforms: list[str]
    inv_transforms: list[str]
    metric: float
    kind: str
    info: dict = field(default_factory=dict, repr=False)
    _chains: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def _apply(
        self,
        data: np.ndarray,
        src_affine: np.ndarray,
        shape,
        dst_affine: np.ndarray,
        transforms: list[str],
        invert: list[bool],
    ) -> np.ndarray:
        for t in transforms:
            if not Path(t).is_file():
                raise InputError(f"{t}: registration transform file is missing")
        from gliofit.pipelines.warp import pull, read_chain

        key = tuple(zip(transforms, invert, strict=True))
        if key not in self._chains:
            self._chains[key] = read_chain(list(transforms), list(invert))
        return pull(data, src_affine, shape, dst_affine, self._chains[key], nearest=_is_label(data))

    def to_atlas(self, data: np.ndarray, affine: np.ndarray, atlas: Atlas) -> np.ndarray:
        """Pull a patient volume (X, Y, Z) on ``affine`` onto the atlas grid (float32, 0 outside).

        Nearest neighbour for bool or integer ``data`` (masks, labels), trilinear otherwise.
        """
        arr = _check_3d(data, "patient volume")
        return self._apply(
            arr, affine, atlas.shape, atlas.affine, self.fwd_transforms, [False] * len(self.fwd_transforms)
        )

    def to_patient(self, data: np.ndarray, atlas: Atlas, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
        """Push an atlas-grid volume onto the patient grid ``(shape, affine)`` (float32, 0 outside).

        Trilinear for float ``data`` (e.g. the tumour-cell density), nearest neighbour for bool or integer.
        """
        arr = _check_3d(data, "atlas volume")
        if arr.shape != atlas.shape:
            raise InputError(f"atlas volume has shape {arr.shape}, the {atlas.name} atlas grid {atlas.shape}")
        invert = [t.endswith(".mat") for t in self.inv_transforms]
        return self._apply(arr, atlas.affine, tuple(int(s) for s in shape), affine, self.inv_transforms, invert)

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Copy the transform files into ``folder`` with ``registration.json``; returns {file name: path}.

        Files are named ``patient_to_atlas_0GenericAffine.mat``, ``..._1Warp.nii.gz`` and
        ``..._1InverseWarp.nii.gz``; each is written under a temporary name and renamed, the JSON last.
        """
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        names: dict[str, str] = {}
        for t in dict.fromkeys(self.fwd_transforms + self.inv_transforms):
            m = _ANTS_SUFFIX.search(Path(t).name)
            names[t] = PREFIX + m.group(0) if m else Path(t).name
        if len(set(names.values())) != len(names):
            raise InputError(f"{folder}: transform files {list(names)} would overwrite each other")
        written = {}
        for src, name in names.items():
            if not Path(src).is_file():
                raise InputError(f"{src}: registration transform file is missing")
            written[name] = _atomic_copy(Path(src), out / name)
        meta = {
            "kind": self.kind,
            "metric": None if not np.isfinite(self.metric) else float(self.metric),
            "fwd_transforms": [names[t] for t in self.fwd_transforms],
            "inv_transforms": [names[t] for t in self.inv_transforms],
            "gliofit_version": __version__,
            **{k: v for k, v in self.info.items() if k != "gliofit_version"},
        }
        written[JSON_NAME] = write_json(meta, out / JSON_NAME)
        return written

    @classmethod
    def load(cls, folder: str | Path) -> AntsRegistration:
        """Read a registration written by :meth:`save`; its transform paths point into ``folder``."""
        p = Path(folder)
        meta_path = p / JSON_NAME
        if not meta_path.is_file():
            raise InputError(f"{meta_path}: no registration saved in {p}")
        try:
            meta = json.loads(meta_path.read_text())
            fwd, inv, kind = list(meta["fwd_transforms"]), list(meta["inv_transforms"]), str(meta["kind"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{meta_path}: not a readable registration file ({e})") from None
        for name in dict.fromkeys(fwd + inv):
            if not (p / name).is_file():
                raise InputError(f"{p / name}: transform file listed in {meta_path} is missing")
        metric = meta.get("metric")
        info = {k: v for k, v in meta.items() if k not in ("kind", "metric", "fwd_transforms", "inv_transforms")}
        return cls(
            [str(p / n) for n in fwd],
            [str(p / n) for n in inv],
            float("nan") if metric is None else float(metric),
            kind,
            info,
        )


def _atomic_copy(src: Path, dst: Path) -> Path:
    with atomic_write(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def _set_threads(threads: int | None) -> int:
    """Ask ITK for ``threads`` workers (default: the environment's value, else 1); the count in effect."""
    global _threads_in_effect
    if threads is not None and (int(threads) != threads or threads < 1):
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    env = os.environ.get(_THREADS_ENV, "")
    want = int(threads) if threads is not None else (int(env) if env.isdigit() and int(env) > 0 else 1)
    if _threads_in_effect is None:
        os.environ[_THREADS_ENV] = str(want)
        _threads_in_effect = want
    elif want != _threads_in_effect:
        warnings.warn(
            f"ITK already runs {_threads_in_effect} thread(s) in this process; threads={want} ignored", stacklevel=3
        )
    return _threads_in_effect


def _validated(
    t1: np.ndarray, atlas: Atlas, exclude: np.ndarray | None, kind: str, seed: int, source: str
) -> np.ndarray:
    if atlas.t1 is None:
        raise InputError(f"{source}: atlas {atlas.name} has no T1 to register to")
    data = np.asarray(t1)
    if data.ndim != 3:
        raise InputError(f"{source}: T1 must be a 3-D image, got shape {tuple(data.shape)}")
    data = np.nan_to_num(data.astype(np.float32))
    if float(data.max()) <= float(data.min()):
        raise InputError(f"{source}: T1 image is constant; nothing to register")
    if exclude is not None and np.shape(exclude) != data.shape:
        raise InputError(f"{source}: tumour mask shape {np.shape(exclude)} differs from the T1's {data.shape}")
    if kind not in KINDS:
        raise InputError(f"{source}: registration kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if int(seed) != seed or seed < 0:
        raise InputError(f"{source}: seed must be a non-negative integer, got {seed!r}")
    return data


def _keep_mask(exclude: np.ndarray | None, shape, affine: np.ndarray) -> np.ndarray:
    """Voxels (X, Y, Z) bool farther than :data:`TUMOUR_MARGIN_MM` from the tumour (all when none)."""
    if exclude is None or not np.any(exclude):
        return np.ones(shape, bool)
    tumour = np.asarray(exclude, bool)
    sp = spacing_mm(affine)
    # distances are needed only up to the margin: on the tumour's box padded by more than the margin, whose
    # voxels all have their nearest tumour voxel inside it, the distances are those of the whole grid
    pad = np.ceil(TUMOUR_MARGIN_MM / sp).astype(int) + 1
    box = []
    for axis in range(3):
        hit = np.flatnonzero(tumour.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(int(hit[0]) - pad[axis], 0), min(int(hit[-1]) + 1 + pad[axis], tumour.shape[axis])))
    keep = np.ones(tumour.shape, bool)
    keep[tuple(box)] = ndimage.distance_transform_edt(~tumour[tuple(box)], sampling=sp) > TUMOUR_MARGIN_MM
    return keep


def coarse_image(data: np.ndarray, affine: np.ndarray, spacing: float = REGISTRATION_SPACING_MM, nearest: bool = False):
    """An ANTs image of ``data`` resampled to isotropic ``spacing`` mm when any axis is finer (trilinear, or
    nearest neighbour), as ``ants.resample_image`` would (:func:`gliofit.pipelines.warp.resample_isotropic`)."""
    from gliofit.pipelines.warp import resample_isotropic

    if min(spacing_mm(affine)) >= spacing - 1e-6:
        return ants_image(data, affine)
    return ants_image(*resample_isotropic(np.asarray(data, np.float32), affine, spacing, nearest=nearest))


@contextlib.contextmanager
def ants_seed(seed: int) -> Iterator[dict]:
    """The keyword arguments that seed ``ants.registration`` with ``seed`` (ANTs takes 0 as "seed from the clock").

    antspyx < 0.6 takes ``random_seed`` as an argument; antspyx >= 0.6 reads it from ``ants.config`` only (and
    passes an unknown keyword on silently), so there the seed is set for the duration of the block.
    """
    import ants

    if "random_seed" in inspect.signature(ants.registration).parameters:
        yield {"random_seed": seed}
        return
    previous = getattr(ants.config, "_random_seed", None)
    ants.config._random_seed = seed
    try:
        yield {}
    finally:
        ants.config._random_seed = previous


def _register(fixed, moving, mask, kind: str, seed: int, outdir: str) -> dict:
    """The affine (``kind="Rigid"``: rigid), then (``kind="SyN"``) the SyN run; ANTs's result dictionary of
    the last."""
    import ants

    with ants_seed(seed + 1) as extra:
        reg = ants.registration(
            fixed,
            moving,
            "Rigid" if kind == "Rigid" else "Affine",
            outprefix=os.path.join(outdir, "affine_"),
            moving_mask=mask,
            aff_iterations=AFFINE_ITERATIONS,
            aff_shrink_factors=AFFINE_SHRINK,
            aff_smoothing_sigmas=AFFINE_SMOOTHING_VOXELS,
            aff_random_sampling_rate=AFFINE_SAMPLING,
            **extra,
        )
        if kind == "SyN":
            reg = ants.registration(
                fixed,
                moving,
                "SyNOnly",
                initial_transform=reg["fwdtransforms"],
                outprefix=os.path.join(outdir, PREFIX),
                moving_mask=mask,
                reg_iterations=SYN_ITERATIONS,
                **extra,
            )
    return reg


def _metric(fixed, reg: dict, mask) -> float:
    """Mattes mutual information (negated) of the fixed and warped moving image, tumour left out, on a regular
    sample of :data:`METRIC_SAMPLING` of the voxels."""
    import ants

    try:
        warped_mask = ants.apply_transforms(fixed, mask, reg["fwdtransforms"], interpolator="nearestNeighbor")
        return float(
            ants.image_similarity(
                fixed,
                reg["warpedmovout"],
                "MattesMutualInformation",
                fixed_mask=warped_mask,
                sampling_strategy="regular",
                sampling_percentage=METRIC_SAMPLING,
            )
        )
    except (RuntimeError, ValueError):
        return float("nan")


def register_to_atlas_ants(
    t1: np.ndarray,
    affine: np.ndarray,
    atlas: Atlas,
    *,
    exclude: np.ndarray | None = None,
    kind: str = "SyN",
    seed: int = 0,
    source: str = "T1",
    threads: int | None = None,
) -> AntsRegistration:
    """Register a patient T1 (X, Y, Z on ``affine``) to ``atlas.t1``: affine, then SyN.

    Parameters
    ----------
    t1 : the patient's T1-weighted image (any intensity scale).
    affine : its (4, 4) RAS voxel -> world mm matrix.
    atlas : the atlas; needs a T1 (``atlas.t1``).
    exclude : (X, Y, Z) bool tumour mask on the T1's grid; left out of the metric, dilated by
        :data:`TUMOUR_MARGIN_MM`.
    kind : ``"SyN"`` (affine then deformable) or ``"Affine"``.
    seed : sampling seed (the run is bit-identical with ``threads=1``).
    source : name for error messages (the T1's file).
    threads : ITK threads; default ``$ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``, else 1. Effective only before
        the process's first ANTs call (ITK reads it once).

    Raises
    ------
    InputError
        No atlas T1, a T1 that is not 3-D or is constant, a mask of another shape, an unknown kind.

    >>> reg = register_to_atlas_ants(t1, affine, load_atlas(), exclude=tumour)   # doctest: +SKIP
    >>> density_patient = reg.to_patient(density_atlas, atlas, t1.shape, affine)  # doctest: +SKIP
    """
    data = _validated(t1, atlas, exclude, kind, seed, source)
    n_threads = _set_threads(threads)
    import ants

    t0 = time.perf_counter()
    fixed = coarse_image(atlas.t1, atlas.affine)
    moving = coarse_image(data, affine)
    mask = coarse_image(_keep_mask(exclude, data.shape, affine), affine, nearest=True)
    outdir = tempfile.mkdtemp(prefix="gliofit-ants-")
    try:
        reg = _register(fixed, moving, mask, kind, int(seed), outdir)
    except RuntimeError as e:
        shutil.rmtree(outdir, ignore_errors=True)
        raise InputError(f"{source}: ANTs registration to {atlas.name} failed ({e})") from None
    metric = _metric(fixed, reg, mask)
    info = {
        "seed": int(seed),
        "threads": n_threads,
        "spacing_mm": REGISTRATION_SPACING_MM,
        "tumour_margin_mm": TUMOUR_MARGIN_MM,
        "atlas": atlas.name,
        "antspyx_version": ants.__version__,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    out = AntsRegistration(list(reg["fwdtransforms"]), list(reg["invtransforms"]), metric, kind, info)
    weakref.finalize(out, shutil.rmtree, outdir, True)
    return out
