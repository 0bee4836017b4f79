"""FAISS candidates + exact-Dice re-rank against an exhaustive exact-Dice scan.

Synthetic entries (no solver: a cheap generator): ellipsoid tumours with a
core, whole-tumour volume log-uniform in 1–300 cm³ before clipping, core a
concentric smaller ellipsoid (0–60 % of the volume, 10 % without core). A
library of template shapes is placed, flipped and transposed at random tissue
voxels of the default atlas on its 2 mm grid and intersected with the brain
(so every entry differs). Entries are stored as bit-packed bounding-box crops
in a memory-mapped file (the core in its own sub-box).

Queries, half of each kind:
* ``perturbed``: a stored entry shifted by up to 2 voxels per axis and dilated
  or eroded by one voxel;
* ``fresh``: a newly drawn ellipsoid (not from the template library).

Per query the timed path is: features -> index search (top-200) -> read the
200 crops -> exact Dice (:func:`gliofit.simulations_db.dice.dice_scores`) ->
sort by mean Dice (whole tumour and core). Every feature version given by
``--versions`` (default: 1, the old one-scale features, and the current one)
gets its own index over the same entries and answers the same queries, scored
against the same truth, so old and new are compared in one run. The baseline is an exhaustive scan
computing exact Dice for every entry, volume pre-filter OFF, in this process,
on the first few queries. Recall is checked against the exact ranking by mean
Dice; that ground truth is computed without approximation by scanning only the
entries whose bounding box meets the query's and whose volumes lie in the
:func:`volume_window` of the 10th best re-ranked score (a proven superset of
the true top-10; where that score is <= 0.5 the whole database is scanned), and
it is cross-checked against the full scan on the scanned queries.

    python benchmarks/index.py [--quick] [--sizes N ...] [--versions 1 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from gliofit.growth.atlas import load_atlas, resample_atlas
from gliofit.simulations_db.dice import dice_scores, volume_window
from gliofit.simulations_db.features import FEATURE_VERSION, FeatureSpec, entry_features, query_features
from gliofit.simulations_db.index import TRAIN_SAMPLE, train_index

VOXEL_CM3 = 0.008  # 2 mm voxels
TOP_K = 200


def ellipsoid(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One centred (wt, core) bool pair in its own box (voxels of 2 mm)."""
    vol_vox = np.exp(rng.uniform(np.log(1.0), np.log(300.0))) / VOXEL_CM3
    r = (3 * vol_vox / (4 * np.pi)) ** (1 / 3)
    ax = np.exp(rng.normal(0.0, 0.25, 3))
    ax = r * ax / np.prod(ax) ** (1 / 3)
    rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    h = int(np.ceil(ax.max())) + 1
    g = np.arange(-h, h + 1, dtype=np.float32)
    x, y, z = np.meshgrid(g, g, g, indexing="ij", sparse=True)
    m = (rot / ax[:, None]) @ np.eye(3)  # rows: principal directions / semi-axes
    u = [m[i, 0] * x + m[i, 1] * y + m[i, 2] * z for i in range(3)]
    q = u[0] ** 2 + u[1] ** 2 + u[2] ** 2
    frac = 0.0 if rng.random() < 0.1 else rng.uniform(0.05, 0.6)
    s = frac ** (1 / 3)
    shift = rng.uniform(-1, 1, 3) * 0.3 * (1 - s)
    qc = sum((u[i] - shift[i]) ** 2 for i in range(3))
    wt = q <= 1.0
    core = (qc <= s * s) & wt if frac > 0 else np.zeros_like(wt)
    return wt, core


class CropStore:
    """Bit-packed bounding-box crops in one file, memory-mapped for reading."""

    def __init__(self, path: Path, capacity: int) -> None:
        self.path, self.n = path, 0
        self.file = open(path, "wb")
        self.ptr = np.zeros(capacity + 1, np.int64)
        self.offset = np.zeros((capacity, 3), np.int16)
        self.shape = np.zeros((capacity, 3), np.int16)
        self.core_box = np.zeros((capacity, 6), np.int16)  # sub-box lo (3), shape (3)
        self.volume = np.zeros((capacity, 2), np.int32)
        self.mm: np.ndarray | None = None

    def append(self, offset, wt: np.ndarray, core: np.ndarray) -> None:
        i = self.n
        self.offset[i], self.shape[i] = offset, wt.shape
        lo, box = _bbox(core)
        sub = core[box]
        self.core_box[i] = (*lo, *sub.shape)
        self.volume[i] = (np.count_nonzero(wt), np.count_nonzero(core))
        blob = np.packbits(wt.ravel()).tobytes() + np.packbits(sub.ravel()).tobytes()
        self.file.write(blob)
        self.ptr[i + 1] = self.ptr[i] + len(blob)
        self.n += 1

    def freeze(self) -> None:
        self.file.flush()
        mm = np.memmap(self.path, np.uint8, "r", shape=(int(self.ptr[self.n]),))
        self.mm = mm.view(np.ndarray)  # plain ndarray slicing: no memmap subclass overhead
        self._meta = [
            (tuple(map(int, s)), tuple(map(int, c[:3])), tuple(map(int, c[3:])), int(p))
            for s, c, p in zip(self.shape[: self.n], self.core_box[: self.n], self.ptr[: self.n])
        ]

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shape, lo, cs, p = self._meta[i]
        nw = shape[0] * shape[1] * shape[2]
        nc = cs[0] * cs[1] * cs[2]
        nbw = (nw + 7) // 8
        wt = np.unpackbits(self.mm[p : p + nbw], count=nw).view(bool).reshape(shape)
        core = np.zeros(shape, bool)
        core[lo[0] : lo[0] + cs[0], lo[1] : lo[1] + cs[1], lo[2] : lo[2] + cs[2]] = (
            np.unpackbits(self.mm[p + nbw : p + nbw + (nc + 7) // 8], count=nc).view(bool).reshape(cs)
        )
        return self.offset[i], wt, core


def _bbox(mask: np.ndarray) -> tuple[tuple[int, ...], tuple[slice, ...]]:
    idx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(len(i) == 0 for i in idx):
        return (0, 0, 0), (slice(0, 0),) * 3
    return tuple(int(i[0]) for i in idx), tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)


def place(domain: np.ndarray, wt: np.ndarray, core: np.ndarray, centre: np.ndarray):
    """Place a centred template at ``centre``; clip to the grid and brain; trim to the box."""
    h = np.array(wt.shape) // 2
    lo = centre - h
    a, b = np.maximum(lo, 0), np.minimum(lo + np.array(wt.shape), domain.shape)
    src = tuple(slice(int(x - o), int(y - o)) for x, y, o in zip(a, b, lo))
    dst = tuple(slice(int(x), int(y)) for x, y in zip(a, b))
    w = wt[src] & domain[dst]
    first, box = _bbox(w)
    if w[box].size == 0:
        return None
    return a + np.array(first), w[box], core[src][box] & w[box]


def symmetric(rng, wt, core):
    """A random flip/transpose of a template pair."""
    perm = tuple(rng.permutation(3))
    flips = tuple(i for i in range(3) if rng.random() < 0.5)
    return (
        np.flip(wt.transpose(perm), flips) if flips else wt.transpose(perm),
        np.flip(core.transpose(perm), flips) if flips else core.transpose(perm),
    )


def fill(store, specs, domain, tissue, templates, rng, n, on_batch, batch=20_000):
    """Append ``n`` entries; call ``on_batch({version: features}, ids)`` per batch."""
    feats, ids = {v: [] for v in specs}, []
    while n > 0:
        wt, core = symmetric(rng, *templates[rng.integers(len(templates))])
        placed = place(domain, wt, core, np.array(np.unravel_index(rng.choice(tissue), domain.shape)))
        if placed is None or placed[1].sum() < 8:
            continue
        for v, spec in specs.items():
            feats[v].append(entry_features(spec, placed[1], placed[2], tuple(placed[0])))
        ids.append(store.n)
        store.append(*placed)
        n -= 1
        if len(ids) == batch or n == 0:
            on_batch({v: np.stack(f) for v, f in feats.items()}, np.array(ids, np.int64))
            feats, ids = {v: [] for v in specs}, []


def make_query(store, domain, tissue, rng, fresh: bool):
    from scipy import ndimage

    if fresh:
        placed = None
        while placed is None or placed[1].sum() < 8:
            wt, core = ellipsoid(rng)
            placed = place(domain, wt, core, np.array(np.unravel_index(rng.choice(tissue), domain.shape)))
        off, wt, core = placed
    else:
        off, wt, core = store.read(int(rng.integers(store.n)))
        off = np.array(off, int) + rng.integers(-2, 3, 3)
        op = ndimage.binary_dilation if rng.random() < 0.5 else ndimage.binary_erosion
        wt, core = np.pad(wt, 2), np.pad(core, 2)
        wt, core = op(wt), op(core) & op(wt)
        off = off - 2
    qw, qc = np.zeros(domain.shape, bool), np.zeros(domain.shape, bool)
    lo, hi = np.maximum(off, 0), np.minimum(off + np.array(wt.shape), domain.shape)
    src = tuple(slice(int(a - o), int(b - o)) for a, b, o in zip(lo, hi, off))
    dst = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    qw[dst], qc[dst] = wt[src], core[src]
    qw &= domain
    qc &= qw
    return (qw, qc) if qw.any() else make_query(store, domain, tissue, rng, True)


def scores(store, qw, qc, ids, chunk: int = 4096) -> np.ndarray:
    """(len(ids),) mean of whole-tumour and core Dice, unpacking at most ``chunk`` crops at a time."""
    ids = np.asarray(ids)
    parts = [
        dice_scores(qw, qc, [store.read(int(i)) for i in ids[s : s + chunk]]).mean(axis=1)
        for s in range(0, len(ids), chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros(0)


def exact_top(store, qw, qc, n, d_floor: float, top: int = 10) -> np.ndarray:
    """Exact top mean-Dice values over all entries, pruned only where provably safe."""
    keep = np.ones(n, bool)
    if d_floor > 0.5:  # mean >= d needs WT Dice >= 2d-1 > 0: boxes must meet, volumes in windows
        lo, box = _bbox(qw)
        hi = np.array([s.stop for s in box])
        off, shp = store.offset[:n].astype(int), store.shape[:n].astype(int)
        keep &= np.all((off < hi) & (off + shp > np.array(lo)), axis=1)
        for col, m in ((0, qw), (1, qc)):
            a, b = volume_window(int(m.sum()), 2 * d_floor - 1)
            v = store.volume[:n, col]
            keep &= (v >= a - 1e-9) & (v <= b + 1e-9)
    s = scores(store, qw, qc, np.flatnonzero(keep))
    return np.sort(s)[::-1][:top]


def _nprobe_settings(index, fractions: list[float]) -> list[int | None]:
    """None (the index as built) then, for an ``ivf`` index, nprobe = ceil(f * nlist) per fraction."""
    if index.kind != "ivf" or not fractions:
        return [None]
    nlist = int(index._core().nlist)
    return [None, *sorted({min(nlist, int(np.ceil(f * nlist))) for f in fractions})]


def _search_ranked(store, spec, index, qw, qc, nprobe: int | None) -> tuple[np.ndarray, float]:
    """(top-10 mean-Dice values of the re-ranked top-200, seconds of the whole timed path)."""
    core = index._core()
    default = getattr(core, "nprobe", None)
    if nprobe is not None:
        core.nprobe = nprobe
    try:
        t0 = time.perf_counter()
        ids = index.search(query_features(spec, qw, qc), TOP_K)[0]
        ids = ids[ids >= 0]
        s = scores(store, qw, qc, ids)
        order = np.argsort(-s, kind="stable")
        seconds = time.perf_counter() - t0
    finally:
        if nprobe is not None:
            core.nprobe = default
    return s[order][:10], seconds


def _recall(got: np.ndarray, truth: np.ndarray) -> tuple[bool, bool]:
    """(exact best found, exact top-10 found) for re-ranked values ``got`` against ``truth``."""
    return (bool(got[0] >= truth[0] - 1e-6), bool(len(got) == len(truth) and np.all(got >= truth - 1e-6)))


def _summary(lat_s: list[float], hits: list[tuple[bool, bool]], kinds: np.ndarray) -> dict:
    lat_ms = np.array(lat_s) * 1e3
    best, top = np.array([h[0] for h in hits]), np.array([h[1] for h in hits])
    out = {
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p95_ms": float(np.percentile(lat_ms, 95)),
        "recall_best": float(best.mean()),
        "recall_top10": float(top.mean()),
    }
    for kind in ("perturbed", "fresh"):
        out[f"recall_best_{kind}"] = float(best[kinds == kind].mean())
        out[f"recall_top10_{kind}"] = float(top[kinds == kind].mean())
    return out


def run_size(n_total, store, specs, domain, tissue, indexes, args, rng) -> dict:
    """Recall and latency of every feature version's index (``indexes[version]``) on the same queries."""
    settings = {v: _nprobe_settings(ix, args.nprobe_fractions) for v, ix in indexes.items()}
    lat = {v: {p: [] for p in settings[v]} for v in indexes}
    hits = {v: {p: [] for p in settings[v]} for v in indexes}
    kinds, scan_t, checks = [], [], []
    for q in range(args.queries):
        fresh = q % 2 == 1
        qw, qc = make_query(store, domain, tissue, rng, fresh)
        results = {
            v: {p: _search_ranked(store, specs[v], ix, qw, qc, p) for p in settings[v]} for v, ix in indexes.items()
        }
        floor = min(float(r[None][0][-1]) if len(r[None][0]) == 10 else 0.0 for r in results.values())
        truth = exact_top(store, qw, qc, n_total, floor)
        for v in indexes:
            for p, (values, seconds) in results[v].items():
                lat[v][p].append(seconds)
                hits[v][p].append(_recall(values, truth))
        kinds.append("fresh" if fresh else "perturbed")
        if q < args.scan_queries:
            t0 = time.perf_counter()
            full = scores(store, qw, qc, np.arange(n_total))  # pre-filter OFF
            scan_t.append(time.perf_counter() - t0)
            checks.append(bool(np.allclose(np.sort(full)[::-1][:10], truth, atol=1e-6)))
    k = np.array(kinds)
    out = {
        "entries": n_total,
        "queries": args.queries,
        "scan_ms_median": float(np.median(scan_t) * 1e3),
        "scan_queries": len(scan_t),
        "truth_matches_full_scan": all(checks),
        "versions": {},
    }
    for v, index in indexes.items():
        main = _summary(lat[v][None], hits[v][None], k)
        res = {
            "feature_version": v,
            "feature_dim": specs[v].dim,
            "index_kind": index.kind,
            **main,
            "speedup_vs_scan": float(np.median(scan_t) * 1e3 / main["p50_ms"]),
        }
        if index.kind == "ivf":
            res["nlist"], res["nprobe"] = int(index._core().nlist), int(index._core().nprobe)
            res["nprobe_sweep"] = [
                {"nprobe": p, **_summary(lat[v][p], hits[v][p], k)} for p in settings[v] if p is not None
            ]
        out["versions"][str(v)] = res
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="10^4 and 5x10^4 entries (flat, ivf), fewer queries (about 1 min on a quiet machine)",
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=None)
    ap.add_argument("--queries", type=int, default=None)
    ap.add_argument("--scan-queries", type=int, default=None)
    ap.add_argument("--templates", type=int, default=None)
    ap.add_argument("--kind", default="auto")
    ap.add_argument("--cell-mm", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--nprobe-fractions",
        type=float,
        nargs="*",
        default=[],
        help="also time and score an ivf index at nprobe = f * nlist for each f (same queries and truth)",
    )
    ap.add_argument(
        "--versions",
        type=int,
        nargs="+",
        default=sorted({1, FEATURE_VERSION}),
        help="feature versions to compare on the same entries and queries (1 = the old one-scale)",
    )
    args = ap.parse_args()
    sizes = args.sizes or ([10_000, 50_000] if args.quick else [100_000, 1_000_000])
    args.queries = args.queries or (20 if args.quick else 100)
    args.scan_queries = args.scan_queries or (2 if args.quick else 3)
    n_templates = args.templates or (1000 if args.quick else 5000)
    rng = np.random.default_rng(args.seed)
    grid = resample_atlas(load_atlas(), 2.0)
    domain = grid.domain
    tissue = np.flatnonzero(domain)
    kw = {} if args.cell_mm is None else {"cell_mm": args.cell_mm}
    specs = {v: FeatureSpec.for_grid(grid.shape, 2.0, version=v, **kw) for v in args.versions}
    t0 = time.perf_counter()
    templates = [ellipsoid(rng) for _ in range(n_templates)]
    results = []
    with tempfile.TemporaryDirectory(prefix="gliofit-bench-") as tmp:
        store = CropStore(Path(tmp) / "crops.bin", max(sizes))
        batches: list[tuple[dict, np.ndarray]] = []
        fill(
            store,
            specs,
            domain,
            tissue,
            templates,
            rng,
            min(TRAIN_SAMPLE, sizes[0]),
            lambda f, i: batches.append((f, i)),  # noqa: F821 - ruff misreads the annotated name
        )
        train_s = {}
        indexes = {}
        for v in specs:
            sample = np.concatenate([f[v] for f, _ in batches])
            t1 = time.perf_counter()
            indexes[v] = {n: train_index(sample, args.kind, n, args.seed) for n in sizes}
            train_s[v] = time.perf_counter() - t1
            del sample

        def add(f: dict, i: np.ndarray) -> None:
            for v in specs:
                for n, index in indexes[v].items():
                    if i[0] < n:
                        index.add(f[v][i < n], i[i < n])

        for f, i in batches:
            add(f, i)
        del batches
        fill(store, specs, domain, tissue, templates, rng, max(sizes) - store.n, add)
        store.freeze()
        gen_s = time.perf_counter() - t0
        for n in sizes:
            res = run_size(n, store, specs, domain, tissue, {v: indexes[v][n] for v in specs}, args, rng)
            for v in specs:
                index_path = indexes[v][n].save(Path(tmp) / f"index-v{v}-{n}.faiss")
                res["versions"][str(v)]["index_disk_mb"] = index_path.stat().st_size / 2**20
            res |= {
                "store_disk_mb": float(store.ptr[n]) / 2**20,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
            print(json.dumps(res), flush=True)
            for v in specs:
                r = res["versions"][str(v)]
                print(
                    f"{n} entries, features v{v} ({r['feature_dim']} d): top-10 recall {r['recall_top10']:.2f} "
                    f"(perturbed {r['recall_top10_perturbed']:.2f}, fresh {r['recall_top10_fresh']:.2f}), "
                    f"best {r['recall_best']:.2f}, p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, "
                    f"index {r['index_disk_mb']:.0f} MB",
                    flush=True,
                )
            results.append(res)
    current = str(max(specs))
    out = {
        "benchmark": "index",
        "quick": args.quick,
        "versions": list(specs),
        "feature_dims": {str(v): s.dim for v, s in specs.items()},
        "templates": n_templates,
        "generate_and_add_s": gen_s,
        "train_s": train_s,
        "sizes": results,
        "targets_met": all(
            r["versions"][current]["p50_ms"] <= (100 if r["entries"] <= 100_000 else 250) for r in results
        )
        and all(
            r["versions"][current]["recall_best"] >= 0.99 and r["versions"][current]["recall_top10"] >= 0.98
            for r in results
        )
        and all(r["versions"][current]["speedup_vs_scan"] >= 50 for r in results if r["entries"] >= 1_000_000),
    }
    print("BENCH " + json.dumps(out))


if __name__ == "__main__":
    main()
