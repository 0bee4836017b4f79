"""The FAISS candidate index over entry feature vectors (:mod:`.features`).

Kinds (Euclidean distance on the feature vectors; ids are database entry ids):

``flat``
    Exact search (``IndexFlatL2``), after a PCA to :data:`PCA_DIM` dimensions
    when the vectors are longer and the training sample has at least that many
    vectors (a single-query scan of 50k full 2,642-d vectors takes ~200 ms; the
    PCA keeps it to a few ms), otherwise over the vectors as given.
``ivf``
    The same PCA, then an inverted file over
    ``nlist ≈ 4·sqrt(n)`` k-means lists (``IndexIVFFlat``), both trained on a
    seeded sample of at most :data:`TRAIN_SAMPLE` vectors; ``nprobe`` is set so
    that the top-200 candidates keep the recall target (benchmarks/RESULTS.md).
``hnsw``
    The same PCA, then an HNSW graph (M = 32, efSearch >= k).
``auto``
    ``flat`` below :data:`AUTO_FLAT_MAX` entries, ``ivf`` above.

Every kind is wrapped in ``IndexIDMap2`` so results are entry ids, -1 where
fewer than k entries exist. :meth:`FaissIndex.save` writes the index and a
small JSON beside it (kind, dim, version, ntotal, sha256 of the index file),
each to a temporary name renamed into place.

>>> import numpy as np
>>> idx = build_index(np.eye(4, dtype=np.float32), np.arange(10, 14))
>>> idx.kind, idx.search(np.eye(4, dtype=np.float32)[2], 1).tolist()
('flat', [[12]])
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import faiss
import numpy as np

from gliofit.common.errors import InputError
from gliofit.common.io import atomic_write, file_sha256

__all__ = [
    "INDEX_FORMAT_VERSION",
    "KINDS",
    "AUTO_FLAT_MAX",
    "PCA_DIM",
    "TRAIN_SAMPLE",
    "PCA_SAMPLE",
    "FaissIndex",
    "train_index",
    "build_index",
]

INDEX_FORMAT_VERSION = 1
KINDS = ("auto", "flat", "ivf", "hnsw")
AUTO_FLAT_MAX = 50_000
"""``auto`` builds an exact ``flat`` index below this many entries."""
PCA_DIM = 256
"""Approximate kinds first reduce vectors longer than this by PCA."""
TRAIN_SAMPLE = 50_000
"""At most this many vectors (a seeded sample) train the k-means lists."""
PCA_SAMPLE = 20_000
"""The first this many of that sample train the PCA."""
NPROBE_FRACTION = 0.1
"""``ivf`` visits this fraction of its lists (at least :data:`NPROBE_MIN`)."""
NPROBE_MIN = 16
HNSW_M = 32
HNSW_EF_SEARCH = 400

faiss.omp_set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _check_features(
    features: np.ndarray, ids: np.ndarray | None = None, dim: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    x = np.asarray(features)
    if x.ndim != 2:
        raise InputError(f"features must be a 2-D (n, d) array, got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"features are empty (shape {x.shape}); nothing to index")
    if dim is not None and x.shape[1] != dim:
        raise InputError(f"features have {x.shape[1]} dimensions, the index has {dim}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise InputError("features contain NaN or infinite values")
    if ids is None:
        return x, None
    i = np.asarray(ids)
    if i.shape != (x.shape[0],) or not np.issubdtype(i.dtype, np.integer):
        raise InputError(f"ids must be ({x.shape[0]},) integers, got shape {i.shape} dtype {i.dtype}")
    return x, np.ascontiguousarray(i, dtype=np.int64)


def _sample(x: np.ndarray, seed: int) -> np.ndarray:
    """A seeded random sample of at most :data:`TRAIN_SAMPLE` rows, in random order."""
    rng = np.random.default_rng(seed)
    return x[rng.permutation(len(x))[:TRAIN_SAMPLE]]


def _inner(kind: str, train: np.ndarray, n_expected: int, seed: int) -> faiss.Index:
    """An inner index of ``kind`` trained on ``train`` (sized for ``n_expected`` entries)."""
    d = train.shape[1]
    d_out = PCA_DIM if d > PCA_DIM and len(train) >= PCA_DIM else d
    if kind == "flat":
        core = faiss.IndexFlatL2(d_out)
    elif kind == "ivf":
        nlist = int(max(1, min(4 * np.sqrt(n_expected), len(train) // 39)))
        core = faiss.IndexIVFFlat(faiss.IndexFlatL2(d_out), d_out, nlist, faiss.METRIC_L2)
        core.cp.seed = seed
        core.nprobe = min(nlist, max(NPROBE_MIN, int(np.ceil(NPROBE_FRACTION * nlist))))
    elif kind == "hnsw":
        core = faiss.IndexHNSWFlat(d_out, HNSW_M)
        core.hnsw.efSearch = HNSW_EF_SEARCH
    idx = core
    pca = None
    if d_out < d:
        pca = faiss.PCAMatrix(d, d_out)
        pca.train(train[:PCA_SAMPLE])  # train is in random order; covariance costs n·d²
        idx = faiss.IndexPreTransform(pca, core)
    idx.train(train)
    if pca is not None:
        # The full d x d eigenvector matrix only serves training; the projection (A, b) is kept. Without it
        # the file is smaller by d² floats (287 MB at d = 8,466), read at every query.
        pca.PCAMat.clear()
    return idx


class FaissIndex:
    """A FAISS index whose ids are database entry ids.

    Use :func:`build_index` or :meth:`load`; ``search`` returns (q, k) int64 entry ids.
    """

    def __init__(self, index: faiss.Index, kind: str) -> None:
        self.index = index
        self.kind = kind

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def _core(self) -> faiss.Index:
        inner = faiss.downcast_index(self.index.index)
        if isinstance(inner, faiss.IndexPreTransform):
            inner = faiss.downcast_index(inner.index)
        return inner

    def ids(self) -> np.ndarray:
        """The (ntotal,) int64 entry ids the index holds, in insertion order."""
        vec = self.index.id_map
        # SimpleITK (pulled in by nnU-Net) registers the same SWIG type for
        # std::vector<int64>, so the proxy may be its class, which faiss's
        # vector_to_array refuses; both kinds iterate.
        if type(vec).__name__.endswith("Vector"):
            return faiss.vector_to_array(vec).astype(np.int64)
        return np.fromiter(vec, dtype=np.int64, count=int(vec.size()))

    def add(self, features: np.ndarray, ids: np.ndarray) -> None:
        """Add (n, dim) float32 vectors under the (n,) int64 entry ids (extending a database)."""
        x, i = _check_features(features, ids, self.dim)
        self.index.add_with_ids(x, i)

    def search(self, query: np.ndarray, k: int) -> np.ndarray:
        """Ids of the ``k`` nearest entries of each query, nearest first.

        Parameters
        ----------
        query : (dim,) or (q, dim) float32 feature vectors.
        k : number of candidates per query, >= 1.

        Returns
        -------
        (q, k) int64 entry ids, -1 where the index holds fewer than k entries.
        """
        return self.search_with_distances(query, k)[1]

    def search_with_distances(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`search`, also returning (q, k) float32 squared L2 distances."""
        q = np.asarray(query)
        if q.ndim == 1:
            q = q[None, :]
        q, _ = _check_features(q, None, self.dim)
        if int(k) < 1:
            raise InputError(f"k must be >= 1, got {k!r}")
        core = self._core()
        if isinstance(core, faiss.IndexHNSW):
            core.hnsw.efSearch = max(HNSW_EF_SEARCH, int(k))
        dist, ids = self.index.search(q, int(k))
        return dist, ids.astype(np.int64, copy=False)

    def metadata(self) -> dict:
        """Kind, dimension, entries and format version (written beside the index)."""
        meta = {
            "format_version": INDEX_FORMAT_VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "ntotal": self.ntotal,
            "faiss_version": faiss.__version__,
        }
        core = self._core()
        if isinstance(core, faiss.IndexIVF):
            meta.update(nlist=int(core.nlist), nprobe=int(core.nprobe))
        return meta

    def save(self, path: str | Path) -> Path:
        """Write the index to ``path`` and its metadata to ``path + '.json'``, each atomically."""
        path = Path(path)
        with atomic_write(_meta_path(path)) as tmp_meta, atomic_write(path) as tmp:  # index renamed first
            faiss.write_index(self.index, str(tmp))
            meta = self.metadata() | {"sha256": file_sha256(tmp)}
            tmp_meta.write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = False, mmap: bool = False) -> FaissIndex:
        """Read an index written by :meth:`save`; ``verify`` also checks the file's sha256; ``mmap``
        maps the stored vectors from the file instead of copying them (an index to search, not to extend)."""
        path, meta_path = Path(path), _meta_path(Path(path))
        for p in (path, meta_path):
            if not p.is_file():
                raise InputError(f"{p}: FAISS index file does not exist")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{meta_path}: unreadable index metadata ({exc})") from None
        if meta.get("format_version", 0) > INDEX_FORMAT_VERSION:
            raise InputError(
                f"{meta_path}: index format {meta.get('format_version')} is newer than "
                f"this gliofit supports ({INDEX_FORMAT_VERSION})"
            )
        if verify and file_sha256(path) != meta.get("sha256"):
            raise InputError(f"{path}: index file does not match its checksum in {meta_path.name}")
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
        except RuntimeError as exc:
            raise InputError(f"{path}: not a readable FAISS index ({str(exc).splitlines()[0]})") from None
        out = cls(index, str(meta.get("kind")))
        if out.ntotal != meta.get("ntotal") or out.dim != meta.get("dim"):
            raise InputError(
                f"{path}: index holds {out.ntotal} vectors of dim {out.dim}, its "
                f"metadata says {meta.get('ntotal')} of dim {meta.get('dim')}"
            )
        return out


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def train_index(sample: np.ndarray, kind: str = "auto", n_expected: int | None = None, seed: int = 0) -> FaissIndex:
    """An empty index trained for about ``n_expected`` entries; fill it with :meth:`FaissIndex.add`.

    Parameters
    ----------
    sample : (m, d) float32 feature vectors representative of the entries (a random sample
        of them; at most :data:`TRAIN_SAMPLE` are used, chosen with ``seed``).
    kind : ``auto`` | ``flat`` | ``ivf`` | ``hnsw``; ``auto`` decides on ``n_expected``.
    n_expected : entries the index will hold (sizes the IVF lists); default ``m``.
    seed : seeds the training sample, PCA and k-means.
    """
    if kind not in KINDS:
        raise InputError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    x, _ = _check_features(sample)
    n = len(x) if n_expected is None else int(n_expected)
    if n < 1:
        raise InputError(f"n_expected must be >= 1, got {n_expected!r}")
    if kind == "auto":
        kind = "flat" if n < AUTO_FLAT_MAX else "ivf"
    inner = _inner(kind, _sample(x, int(seed)), n, int(seed))
    return FaissIndex(faiss.IndexIDMap2(inner), kind)


def build_index(features: np.ndarray, ids: np.ndarray, kind: str = "auto", seed: int = 0) -> FaissIndex:
    """Build a candidate index over entry features (:func:`train_index`, then add all).

    Parameters
    ----------
    features : (n, d) float32 entry feature vectors (:func:`.features.entry_features`).
    ids : (n,) int64 database entry ids.
    kind : ``auto`` | ``flat`` | ``ivf`` | ``hnsw`` (module docstring).
    seed : seeds the training sample, PCA and k-means.

    Returns
    -------
    FaissIndex holding all n vectors.
    """
    x, i = _check_features(features, ids)
    out = train_index(x, kind, len(x), seed)
    out.add(x, i)  # type: ignore[arg-type]
    return out
