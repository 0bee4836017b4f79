"""BraTS case folders (2021 and 2023 naming) and their conversion to an nnU-Net v2 raw dataset.

Channel order everywhere in gliofit: 0 T1 (native), 1 T1c (post-contrast),
2 T2, 3 FLAIR — ``imagesTr/CASE_0000.nii.gz`` … ``CASE_0003.nii.gz``.

Labels are remapped to consecutive nnU-Net values, 0 background, 1 edema
(2021 ED / 2023 SNFH), 2 necrosis / non-enhancing core (NCR / NETC),
3 enhancing (2021: 4, 2023: 3), and ``dataset.json`` declares nnU-Net v2's
region-based training on the BraTS regions::

    "labels": {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3},
    "regions_class_order": [1, 2, 3]

(the format of nnunetv2's own ``Dataset137_BraTS21`` conversion: a region
listed as a tuple of labels; ``regions_class_order`` gives the label written
where a region's sigmoid wins when predictions are turned back into labels).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gliofit.common.errors import InputError
from gliofit.common.grids import check_same_grid
from gliofit.common.io import atomic_directory
from gliofit.common.labels import detect_convention
from gliofit.common.nifti import load_volume, save_volume

__all__ = [
    "MODALITIES",
    "LAYOUTS",
    "NNUNET_LABELS",
    "BratsCase",
    "read_case_folder",
    "find_cases",
    "to_nnunet_labels",
    "convert_brats",
]

MODALITIES = ("t1", "t1c", "t2", "flair")
"""Channel order used everywhere in gliofit (and in the nnU-Net datasets we write)."""
LAYOUTS: dict[str, dict[str, str]] = {
    "brats2023": {"t1": "-t1n", "t1c": "-t1c", "t2": "-t2w", "flair": "-t2f", "seg": "-seg"},
    "brats2021": {"t1": "_t1", "t1c": "_t1ce", "t2": "_t2", "flair": "_flair", "seg": "_seg"},
}
"""File-name suffixes (before ``.nii.gz`` / ``.nii``) in the BraTS folder layouts."""
NNUNET_LABELS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3}
CHANNEL_NAMES = {"0": "T1", "1": "T1c", "2": "T2", "3": "FLAIR"}
_EXTS = (".nii.gz", ".nii")


@dataclass(frozen=True)
class BratsCase:
    """One case folder: its name, layout and files (``images`` in ``MODALITIES`` order; ``seg`` may be None)."""

    name: str
    layout: str
    images: tuple[Path, Path, Path, Path]
    seg: Path | None


def _find(folder: Path, stem: str) -> Path | None:
    for ext in _EXTS:
        if (folder / f"{stem}{ext}").is_file():
            return folder / f"{stem}{ext}"
    return None


def read_case_folder(folder: str | Path) -> BratsCase:
    """Identify a BraTS case folder's layout and files.

    Raises :class:`InputError` naming the folder or file when a modality is
    missing or the folder mixes 2021 and 2023 names.
    """
    p = Path(folder)
    if not p.is_dir():
        raise InputError(f"{p}: case folder does not exist")
    found = {lay: {k: _find(p, f"{p.name}{s}") for k, s in names.items()} for lay, names in LAYOUTS.items()}
    counts = {lay: sum(v is not None for k, v in f.items() if k != "seg") for lay, f in found.items()}
    if counts["brats2023"] and counts["brats2021"]:
        a = next(v for k, v in found["brats2021"].items() if v is not None and k != "seg")
        raise InputError(f"{a}: mixed BraTS 2021 and 2023 file names in case folder {p}")
    layout = max(counts, key=lambda k: counts[k])
    if counts[layout] == 0:
        raise InputError(f"{p}: no BraTS modality files (expected {p.name}-t1n.nii.gz ... or {p.name}_t1.nii.gz ...)")
    files = found[layout]
    missing = [m for m in MODALITIES if files[m] is None]
    if missing:
        want = p / f"{p.name}{LAYOUTS[layout][missing[0]]}.nii.gz"
        raise InputError(f"{want}: missing {missing[0]} modality of case {p.name} ({layout} layout)")
    return BratsCase(p.name, layout, tuple(files[m] for m in MODALITIES), files["seg"])  # type: ignore[arg-type]


def find_cases(root: str | Path) -> list[BratsCase]:
    """Every case folder directly under ``root`` (hidden folders skipped), sorted by name."""
    r = Path(root)
    if not r.is_dir():
        raise InputError(f"{r}: BraTS folder does not exist")
    cases = [read_case_folder(d) for d in sorted(r.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    if not cases:
        raise InputError(f"{r}: holds no case folders")
    return cases


def to_nnunet_labels(labels: np.ndarray, source: str = "segmentation") -> np.ndarray:
    """BraTS 2021/2023 labels -> nnU-Net values (uint8): 1 edema, 2 necrosis, 3 enhancing."""
    conv = detect_convention(labels, source)
    out = np.zeros(np.shape(labels), dtype=np.uint8)
    out[labels == conv.edema] = 1
    out[labels == conv.necrosis] = 2
    out[labels == conv.enhancing] = 3
    return out


def _check_case(case: BratsCase) -> tuple[np.ndarray, np.ndarray]:
    """Read and cross-check a case; returns (nnU-Net labels, affine)."""
    if case.seg is None:
        want = case.images[0].parent / f"{case.name}{LAYOUTS[case.layout]['seg']}.nii.gz"
        raise InputError(f"{want}: missing segmentation of case {case.name} (training needs labels)")
    seg, affine = load_volume(case.seg, "segmentation")
    for path in case.images:
        data, aff = load_volume(path, "image")
        check_same_grid(path, data.shape, aff, seg.shape, affine, ref=f"the segmentation {case.seg.name}")
    rounded = np.rint(seg)
    if not np.array_equal(rounded, seg):
        raise InputError(f"{case.seg}: segmentation holds non-integer values")
    return to_nnunet_labels(rounded.astype(np.int16), str(case.seg)), affine


def convert_brats(
    src: str | Path, out_root: str | Path, *, dataset_id: int = 501, name: str = "BraTSGliofit", on_case=None
) -> Path:
    """Convert a folder of BraTS cases into ``out_root/DatasetXXX_Name`` (nnU-Net v2 raw format).

    Images are copied (``.nii.gz``) or re-saved (``.nii``) unchanged, one file per
    channel in ``MODALITIES`` order; labels are remapped by
    :func:`to_nnunet_labels`. The dataset is written under a temporary name and
    renamed when complete; an existing dataset of the same name is replaced.

    Returns
    -------
    The dataset folder.
    """
    if not 1 <= int(dataset_id) <= 999:
        raise InputError(f"dataset id must lie in 1..999, got {dataset_id}")
    cases = find_cases(src)
    final = Path(out_root) / f"Dataset{int(dataset_id):03d}_{name}"
    with atomic_directory(final) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        for case in cases:
            labels, affine = _check_case(case)
            for ch, path in enumerate(case.images):
                dst = tmp / "imagesTr" / f"{case.name}_{ch:04d}.nii.gz"
                if path.name.endswith(".nii.gz"):
                    shutil.copyfile(path, dst)
                else:
                    data, aff = load_volume(path, "image")
                    save_volume(data, aff, dst)
            save_volume(labels, affine, tmp / "labelsTr" / f"{case.name}.nii.gz", dtype=np.uint8)
            if on_case is not None:
                on_case(case.name)
        _write_dataset_json(tmp, len(cases), name)
    return final


def _write_dataset_json(folder: Path, n_cases: int, name: str) -> None:
    meta = {
        "channel_names": CHANNEL_NAMES,
        "labels": NNUNET_LABELS,
        "regions_class_order": [1, 2, 3],
        "numTraining": int(n_cases),
        "file_ending": ".nii.gz",
        "name": name,
        "description": "BraTS regions (whole tumour, tumour core, enhancing) converted by gliofit; "
        "labels 1 edema, 2 necrosis/non-enhancing core, 3 enhancing; channels T1, T1c, T2, FLAIR",
    }
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2))
