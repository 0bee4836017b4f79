"""Known STU-Net checkpoints (``models.json`` beside this module) and how a ``--model`` value becomes a file.

A registry entry names its source, variant, licence, SHA-256 (null when the publisher gives none),
expected input and ``kind``: ``pretrained`` (weights to fine-tune with ``gliofit seg train
--pretrained``) or ``segmentation`` (a BraTS tumour model ``segment``/``run`` can use directly).
Downloads land in ``<cache>/models/`` (:func:`gliofit.common.cache.cache_dir`) once. A file named by
``$GLIOFIT_MODELS`` (same format) adds entries, e.g. a group's own fine-tuned checkpoints.

>>> resolve_model("stunet-base", purpose="pretrained")     # doctest: +SKIP
PosixPath('/home/me/.cache/gliofit/models/stunet-base/base_ep4k.model')
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gliofit.common.cache import cache_dir
from gliofit.common.errors import InputError

__all__ = [
    "ModelEntry",
    "REGISTRY_FILE",
    "REGISTRY_ENV",
    "KINDS",
    "registry",
    "model_path",
    "fetch_model",
    "resolve_model",
]

REGISTRY_FILE = Path(__file__).with_name("models.json")
REGISTRY_ENV = "GLIOFIT_MODELS"
KINDS = ("pretrained", "segmentation")


@dataclass(frozen=True)
class ModelEntry:
    """One registry row (see ``models.json``)."""

    name: str
    variant: str
    kind: str
    source: str
    url: str
    file: str
    sha256: str | None
    licence: str
    expected_input: str
    page: str = ""
    parameters_millions: float | None = None


def registry(path: str | Path | None = None) -> dict[str, ModelEntry]:
    """Registry entries by name: those of ``path``, or (None) the packaged ones plus ``$GLIOFIT_MODELS``'s."""
    if path is None:
        extra = os.environ.get(REGISTRY_ENV)
        return registry(REGISTRY_FILE) | (registry(extra) if extra else {})
    p = Path(path)
    try:
        data = json.loads(p.read_text())
        entries = {name: ModelEntry(name=name, **row) for name, row in data["models"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{p}: not a readable model registry ({e})") from None
    for e in entries.values():
        if e.kind not in KINDS:
            raise InputError(f"{p}: model {e.name} has kind {e.kind!r}, not one of {', '.join(KINDS)}")
    return entries


def model_path(entry: ModelEntry) -> Path:
    """Where the checkpoint of ``entry`` lives in the cache (present or not)."""
    return cache_dir() / "models" / entry.name / entry.file


def _unknown(name: str, known: dict[str, ModelEntry]) -> InputError:
    return InputError(
        f"{name}: no such file and not a known model (known: {', '.join(known)}; `gliofit models` lists them)"
    )


def fetch_model(name: str, *, progress: bool = True, registry_file: str | Path | None = None) -> Path:
    """Download the registry model ``name`` into the cache (once; resumed; checksummed) and return its path."""
    from gliofit.common.download import download

    known = registry(registry_file)
    if name not in known:
        raise _unknown(name, known)
    e = known[name]
    dest = model_path(e)
    try:
        return download(e.url, dest, sha256=e.sha256, progress=progress)
    except InputError as err:
        if dest.with_name(dest.name + ".part").exists() or "SHA-256" in str(err):
            raise
        raise InputError(f"{err}; the file can be downloaded by hand from {e.page or e.url}") from None


def _from_url(url: str, progress: bool) -> Path:
    """A checkpoint named by URL (``#sha256=HEX`` checks it), cached under a folder named for the URL."""
    from gliofit.common.download import download

    parts = urlsplit(url)
    sha = parts.fragment.split("=", 1)[1] if parts.fragment.startswith("sha256=") else None
    bare = parts._replace(fragment="").geturl()
    name = Path(unquote(parts.path)).name or "model.pth"
    folder = "url-" + hashlib.sha256(bare.encode()).hexdigest()[:16]
    return download(bare, cache_dir() / "models" / folder / name, sha256=sha, progress=progress)


def resolve_model(
    spec: str | Path, *, purpose: str = "segmentation", progress: bool = True, registry_file: str | Path | None = None
) -> Path:
    """The checkpoint file meant by a ``--model`` (or ``--pretrained``) value.

    Parameters
    ----------
    spec : an existing file; an ``http(s)://`` URL (optionally ending ``#sha256=HEX``); or a registry name.
    purpose : ``segmentation`` (the model must segment brain tumours) or ``pretrained`` (any weights).
    progress : show the download's progress bar.

    Raises
    ------
    InputError : unknown name, failed download, checksum mismatch, or a pre-training checkpoint
        given where a tumour segmenter is needed.
    """
    s = str(spec)
    if s.startswith(("http://", "https://")):
        return _from_url(s, progress)
    p = Path(s).expanduser()
    if p.exists():
        if not p.is_file():
            raise InputError(f"{p}: model checkpoint is not a regular file")
        return p
    known = registry(registry_file)
    if s not in known:
        raise _unknown(s, known)
    e = known[s]
    if purpose == "segmentation" and e.kind != "segmentation":
        raise InputError(
            f"{s}: a {e.kind} checkpoint ({e.expected_input}), not a brain-tumour model; fine-tune it "
            f"first: gliofit seg train DATA --variant {e.variant} --pretrained {s} -o MODEL"
        )
    return fetch_model(s, progress=progress, registry_file=registry_file)
