"""``DB/gliofit-db.json``: what a database is (format, atlas, grid, design, thresholds).

The manifest is written once, atomically, when a database is created; every
later build, query and check reads it first. A directory without it is not a
database; a manifest of a newer ``format_version`` than this code knows is
refused rather than misread.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gliofit.common.errors import InputError
from gliofit.common.io import atomic_write
from gliofit.common.units import DEFAULT_THRESHOLD_CORE, DEFAULT_THRESHOLD_EDEMA, seed_record
from gliofit.simulations_db.design import Design, SnapshotRule

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "Manifest", "read_manifest", "write_manifest", "manifest_path"]

FORMAT_VERSION = 1
MANIFEST_NAME = "gliofit-db.json"


@dataclass(frozen=True)
class Manifest:
    """The fixed description of one database.

    Attributes
    ----------
    atlas : atlas name ("icbm152-2009a").
    atlas_spec : how it was loaded (``"icbm152"`` or a path).
    atlas_checksum : SHA-256 of the simulation grid (:meth:`Atlas.checksum`).
    resolution_mm : isotropic grid spacing, mm.
    grid_shape : (X, Y, Z) voxels of the simulation grid.
    design : the parameter design (:class:`Design`) as a dict.
    snapshots : the snapshot rule (:class:`SnapshotRule`) as a dict.
    thresholds : ``{"edema": 0.25, "core": 0.675}`` used for the stored volumes.
    quantisation : how densities are stored (``{"dtype": "uint8", "scale": 255}``).
    features : the feature layout, ``FeatureSpec.to_dict()`` (may be empty).
    seed : the initial condition every simulation starts from at T = 0
        (:func:`~gliofit.common.units.seed_record`); a manifest without one gets the default seed,
        which every database was built with before it was recorded.
    database_url : SQL URL when not the default SQLite file in the directory.
    """

    atlas: str
    atlas_spec: str
    atlas_checksum: str
    resolution_mm: float
    grid_shape: tuple[int, int, int]
    design: dict
    snapshots: dict
    thresholds: dict = field(default_factory=lambda: {"edema": DEFAULT_THRESHOLD_EDEMA, "core": DEFAULT_THRESHOLD_CORE})
    quantisation: dict = field(default_factory=lambda: {"dtype": "uint8", "scale": 255})
    features: dict = field(default_factory=dict)
    seed: dict = field(default_factory=seed_record)
    database_url: str | None = None
    format_version: int = FORMAT_VERSION

    @property
    def design_obj(self) -> Design:
        return Design.from_dict(self.design)

    @property
    def snapshot_rule(self) -> SnapshotRule:
        return SnapshotRule.from_dict(self.snapshots)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["grid_shape"] = list(self.grid_shape)
        return d


def manifest_path(db_dir: str | Path) -> Path:
    return Path(db_dir) / MANIFEST_NAME


def read_manifest(db_dir: str | Path) -> Manifest:
    """Read ``db_dir/gliofit-db.json``; :class:`InputError` naming the path if it is not a database."""
    p = manifest_path(db_dir)
    if Path(db_dir).exists() and not Path(db_dir).is_dir():
        raise InputError(f"{db_dir}: not a directory (a gliofit database is a directory)")
    if not Path(db_dir).is_dir():
        raise InputError(f"{db_dir}: not a gliofit database (no such directory)")
    if not p.is_file():
        raise InputError(f"{db_dir}: not a gliofit database (no {MANIFEST_NAME})")
    try:
        d = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{p}: unreadable database manifest ({exc})") from None
    if not isinstance(d, dict) or not isinstance(d.get("format_version"), int):
        raise InputError(f"{p}: not a gliofit database manifest (no integer format_version)")
    if d["format_version"] > FORMAT_VERSION:
        raise InputError(
            f"{p}: database format version {d['format_version']} is newer than this gliofit "
            f"supports ({FORMAT_VERSION}); upgrade gliofit"
        )
    try:
        d["grid_shape"] = tuple(int(v) for v in d["grid_shape"])
        m = Manifest(**d)
        m.design_obj, m.snapshot_rule  # noqa: B018 - validate the nested dicts
    except (TypeError, KeyError, ValueError) as exc:
        raise InputError(f"{p}: malformed database manifest ({exc})") from None
    return m


def write_manifest(db_dir: str | Path, manifest: Manifest) -> Path:
    """Write the manifest atomically (temp file, fsync, rename)."""
    p = manifest_path(db_dir)
    with atomic_write(p) as tmp:
        tmp.write_text(json.dumps(manifest.to_dict(), indent=2))
    return p
