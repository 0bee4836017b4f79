"""Tumour label conventions (INTERFACES.md) and the masks derived from them.

- ``brats2021``: 1 NCR (necrosis), 2 ED (edema), 4 ET (enhancing)
- ``brats2023``: 1 NETC (non-enhancing core), 2 SNFH (edema), 3 ET (enhancing)

Whole tumour = every tumour label; tumour core = necrosis + enhancing;
enhancing = ET.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gliofit.common.errors import InputError

__all__ = [
    "LabelConvention",
    "CONVENTIONS",
    "detect_convention",
    "label_values",
    "tumour_masks",
    "convert_labels",
]


@dataclass(frozen=True)
class LabelConvention:
    """Integer values of the three tumour sub-regions in one convention."""

    name: str
    necrosis: int
    edema: int
    enhancing: int

    @property
    def values(self) -> tuple[int, int, int]:
        return (self.necrosis, self.edema, self.enhancing)


CONVENTIONS: dict[str, LabelConvention] = {
    "brats2021": LabelConvention("brats2021", necrosis=1, edema=2, enhancing=4),
    "brats2023": LabelConvention("brats2023", necrosis=1, edema=2, enhancing=3),
}


def label_values(labels: np.ndarray) -> np.ndarray:
    """The sorted distinct values of a label map: ``np.unique``, or for integer labels in [0, 63] (the usual
    label map) one comparison per possible value instead of sorting every voxel."""
    a = np.asarray(labels)
    if a.dtype.kind in "ui" and a.size and int(a.min()) >= 0 and int(a.max()) < 64:
        return np.array([v for v in range(int(a.max()) + 1) if (a == v).any()], dtype=a.dtype)
    return np.unique(a)


def detect_convention(labels: np.ndarray, source: str = "segmentation") -> LabelConvention:
    """Pick the convention from the label values present.

    Value 4 means BraTS 2021, value 3 means BraTS 2023; labels {0, 1, 2} alone
    are read as either (identical there) and reported as BraTS 2023. Any other
    value, or 3 and 4 together, is an :class:`InputError` naming ``source``.
    """
    present = {int(v) for v in label_values(labels)} - {0}
    unknown = present - {1, 2, 3, 4}
    if unknown:
        raise InputError(
            f"{source}: label values {sorted(unknown)} belong to no known convention "
            "(brats2021: 1,2,4; brats2023: 1,2,3)"
        )
    if {3, 4} <= present:
        raise InputError(f"{source}: labels 3 and 4 together are ambiguous (brats2021 uses 4, brats2023 uses 3)")
    return CONVENTIONS["brats2021"] if 4 in present else CONVENTIONS["brats2023"]


def tumour_masks(
    labels: np.ndarray, convention: str | LabelConvention | None = None, source: str = "segmentation"
) -> dict[str, np.ndarray]:
    """Boolean ``whole_tumor``, ``core`` and ``enhancing`` masks from a label map."""
    lab = np.asarray(labels)
    if convention is None:
        conv = detect_convention(lab, source)
    elif isinstance(convention, str):
        if convention not in CONVENTIONS:
            raise InputError(f"{source}: unknown label convention {convention!r}; use one of {sorted(CONVENTIONS)}")
        conv = CONVENTIONS[convention]
    else:
        conv = convention
    enhancing = lab == conv.enhancing
    core = (lab == conv.necrosis) | enhancing
    return {"whole_tumor": core | (lab == conv.edema), "core": core, "enhancing": enhancing}


def convert_labels(labels: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Rewrite a label map from convention ``src`` to ``dst`` (uint8 out)."""
    a, b = CONVENTIONS[src], CONVENTIONS[dst]
    out = np.zeros(np.shape(labels), dtype=np.uint8)
    for va, vb in zip(a.values, b.values):
        out[np.asarray(labels) == va] = vb
    return out
