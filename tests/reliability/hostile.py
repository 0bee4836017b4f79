"""Crafted files: NIfTI headers that lie, gzip bombs, affines with NaN, checkpoints whose pickle runs code."""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np


def _header_bytes(shape: tuple[int, ...], dtype=np.uint8, affine: np.ndarray | None = None) -> bytes:
    """A NIfTI-1 header (and its 4-byte extension flag) declaring ``shape`` of ``dtype``."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_sform(np.eye(4) if affine is None else affine, code=1)
    hdr.set_qform(np.eye(4) if affine is None else affine, code=0 if affine is not None else 1)
    hdr["vox_offset"] = 352
    return hdr.binaryblock + b"\0" * 4


def huge_header(path: Path, side: int = 1600) -> Path:
    """A gzip NIfTI declaring ``side``³ uint8 voxels, with only a few bytes of data."""
    path.write_bytes(gzip.compress(_header_bytes((side,) * 3) + b"\0" * 4096))
    return path


def gzip_bomb(path: Path, side: int = 1600, member_mb: int = 4) -> Path:
    """A consistent gzip NIfTI of ``side``³ uint8 zeros: one small compressed member of zeros repeated
    (concatenated gzip members are one stream), a few MB on disk for GBs decompressed."""
    total = side**3
    member = gzip.compress(b"\0" * (member_mb << 20), compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(_header_bytes((side,) * 3)))
        for _ in range(-(-total // (member_mb << 20))):
            f.write(member)
    return path


def nan_affine(path: Path, shape: tuple[int, int, int] = (8, 8, 8), value: float = np.nan) -> Path:
    """A small label map whose sform holds ``value`` (NaN or Inf)."""
    affine = np.eye(4)
    affine[0, 3] = value
    data = np.zeros(shape, np.uint8)
    data[3:5, 3:5, 3:5] = 2
    path.write_bytes(gzip.compress(_header_bytes(shape, np.uint8, affine) + data.tobytes(order="F")))
    return path


def many_volumes(path: Path, shape: tuple[int, int, int, int] = (64, 64, 64, 2000)) -> Path:
    """A 4-D header declaring thousands of volumes, with almost no data."""
    path.write_bytes(gzip.compress(_header_bytes(shape) + b"\0" * 4096))
    return path


class _RunsCode:
    """Unpickling this calls ``open(marker, "w")``: a pickle that writes a file when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def code_running_checkpoint(path: Path, marker: Path) -> Path:
    """A torch-style checkpoint whose pickle creates ``marker`` when loaded without ``weights_only``."""
    import torch

    buf = io.BytesIO()
    torch.save({"network_weights": {}, "payload": _RunsCode(marker)}, buf, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    path.write_bytes(buf.getvalue())
    return path
