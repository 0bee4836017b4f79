"""The fast query: FAISS candidates -> volume pre-filter -> exact Dice (with a threshold search) -> ranking.

1. The query masks become a feature vector (:func:`~gliofit.simulations_db.features.query_features`)
   and the index proposes the ``top_k`` nearest entries.
2. Volume pre-filter: an entry whose whole-tumour volume (at the database's
   edema threshold) lies outside ``volume_window(|A|, min_dice)`` cannot reach
   whole-tumour Dice ``min_dice`` there, and is dropped (if nothing is left, none is).
3. Exact Dice of whole tumour and core for every remaining candidate, read
   from the stored (uint8) densities at each imaging threshold of a small grid
   (edema 0.15/0.25/0.35, core 0.55/0.675/0.8, inside the reference ranges of
   FACTS.md, plus the database's own). The whole-tumour Dice depends only on the
   edema threshold and the core Dice only on the core one, so the best pair of a
   candidate is found with 3 + 3 Dice counts, not 9.
4. Shift search (a continuous seed point): the stored seed points sit on the database grid, several mm
   apart, so each candidate is also scored after an integer translation of its crop. The translation
   that best aligns the centres of mass of the whole tumours (the entry's at the database's edema
   threshold; at most :data:`ALIGN_MAX_MM`) is the centre of a window of ±:data:`SHIFT_WINDOW_VOX`
   voxels; every candidate is scored unshifted and at that centre, and the :data:`SHIFT_TOP` best climb
   from the centre to the best translation of the window (a greedy ascent over face neighbours, all
   thresholds of step 3 at each; Dice is smooth in the translation, so the climb finds the window's best
   in nearly every case at a fifth of the cost of scoring all (2w + 1)³). A translation is allowed
   only when the translated seed point stays in tissue. Scoring reads the query as a padded code grid
   (whole tumour 1, core 2): one compiled pass over the candidate's crop per translation
   (:mod:`gliofit.inverse.shift_kernel`) counts the hits by the levels each voxel passes, which gives the
   overlap at every threshold at once. The entry's parameters hold with the seed point
   translated (to first order: tissue boundaries differ); :attr:`Matches.shifts` records the translation.
5. Ranking by ``w_wt * dice_wt + w_core * dice_core`` (weights normalised,
   default 0.5/0.5), ties broken by entry id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gliofit.common.errors import InputError
from gliofit.simulations_db.dice import dice_scores, volume_window
from gliofit.simulations_db.features import FeatureSpec, query_features
from gliofit.simulations_db.store import threshold_level

__all__ = [
    "Matches",
    "EDEMA_GRID",
    "CORE_GRID",
    "DEFAULT_TOP_K",
    "DEFAULT_MIN_DICE",
    "SHIFT_WINDOW_VOX",
    "ALIGN_MAX_MM",
    "SHIFT_TOP",
    "query",
    "check_weights",
    "threshold_grid",
    "score_candidates",
    "shift_candidates",
    "climb",
    "rank",
]

EDEMA_GRID = (0.15, 0.25, 0.35)
"""Whole-tumour (FLAIR) thresholds searched at query time (fraction of capacity)."""
CORE_GRID = (0.55, 0.675, 0.8)
"""Core (T1Gd) thresholds searched at query time."""
DEFAULT_TOP_K = 200
DEFAULT_MIN_DICE = 0.3
"""The volume pre-filter keeps entries that could still reach whole-tumour Dice 0.3."""
SHIFT_WINDOW_VOX = 2
"""Half-width of the translation window searched around the centre-of-mass alignment, database voxels."""
ALIGN_MAX_MM = 12.0
"""Largest centre-of-mass alignment applied, mm per axis."""
SHIFT_TOP = 16
"""Candidates (best after the unshifted / aligned pass) scored at every translation of the window."""


@dataclass
class Matches:
    """Scored database entries, best first.

    Attributes
    ----------
    ids : (n,) int64 entry ids.
    dice : (n, 2) float64 whole-tumour and core Dice on the database grid.
    thresholds : (n, 2) float64 edema and core thresholds at which ``dice`` was reached.
    score : (n,) float64 ranking score (weighted mean Dice, or the soft score of the baseline).
    weights : (w_wt, w_core) normalised.
    n_candidates : entries proposed (index) or visited (exhaustive).
    shifts : (n, 3) int translation of each entry's crop on the database grid, voxels (zeros: none).
    """

    ids: np.ndarray
    dice: np.ndarray
    thresholds: np.ndarray
    score: np.ndarray
    weights: tuple[float, float]
    n_candidates: int
    shifts: np.ndarray = None  # type: ignore[assignment]  # None becomes zeros in __post_init__

    def __post_init__(self) -> None:
        if self.shifts is None:
            self.shifts = np.zeros((len(self.ids), 3), dtype=np.int64)

    @property
    def mean_dice(self) -> np.ndarray:
        """(n,) weighted mean Dice."""
        return self.dice @ np.asarray(self.weights)

    def head(self, n: int) -> Matches:
        s = slice(0, int(n))
        return Matches(
            self.ids[s],
            self.dice[s],
            self.thresholds[s],
            self.score[s],
            self.weights,
            self.n_candidates,
            self.shifts[s],
        )


def check_weights(weights) -> tuple[float, float]:
    """(w_wt, w_core) >= 0 with a positive sum, normalised to sum 1."""
    try:
        w = tuple(float(v) for v in weights)
    except (TypeError, ValueError):
        raise InputError(f"weights must be two numbers (whole tumour, core), got {weights!r}") from None
    if len(w) != 2 or min(w) < 0 or not np.isfinite(w).all() or sum(w) <= 0:
        raise InputError(f"weights must be two numbers >= 0 with a positive sum, got {weights!r}")
    return (w[0] / sum(w), w[1] / sum(w))


def threshold_grid(db_thresholds: dict, search: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The edema and core thresholds to try: the grids plus the database's, or the database's only."""
    te, tc = float(db_thresholds["edema"]), float(db_thresholds["core"])
    if not search:
        return (te,), (tc,)
    return tuple(sorted({*EDEMA_GRID, te})), tuple(sorted({*CORE_GRID, tc}))


def score_candidates(
    db, wt: np.ndarray, core: np.ndarray, ids: np.ndarray, edema: tuple[float, ...], core_thresholds: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Best Dice of each entry over the thresholds.

    Returns
    -------
    dice : (n, 2) float64 best whole-tumour and core Dice; thresholds : (n, 2) float64 where reached.
    """
    n = len(ids)
    if n == 0:
        return np.zeros((0, 2)), np.zeros((0, 2))
    if min(edema + core_thresholds) < 0.05:
        crops = db.read_entries(ids)
    else:
        crops = db.read_visible(ids)
    m = max(len(edema), len(core_thresholds))
    per = np.full((m, n, 2), -1.0)
    for j in range(m):
        le = threshold_level(edema[min(j, len(edema) - 1)])
        lc = threshold_level(core_thresholds[min(j, len(core_thresholds) - 1)])
        cands = [(bbox[:3], crop >= le, crop >= lc) for bbox, crop in crops]
        per[j] = dice_scores(wt, core, cands)
    e_idx = np.minimum(np.argmax(per[: len(edema), :, 0], axis=0), len(edema) - 1)
    c_idx = np.minimum(np.argmax(per[: len(core_thresholds), :, 1], axis=0), len(core_thresholds) - 1)
    rows = np.arange(n)
    dice = np.stack([per[e_idx, rows, 0], per[c_idx, rows, 1]], axis=1)
    th = np.stack([np.asarray(edema)[e_idx], np.asarray(core_thresholds)[c_idx]], axis=1)
    return dice, th


def rank(
    ids: np.ndarray,
    dice: np.ndarray,
    thresholds: np.ndarray,
    weights: tuple[float, float],
    n_candidates: int,
    shifts: np.ndarray | None = None,
) -> Matches:
    """Order by weighted mean Dice (descending), ties by entry id."""
    score = dice @ np.asarray(weights)
    order = np.lexsort((ids, -score))
    sh = None if shifts is None else shifts[order]
    return Matches(ids[order], dice[order], thresholds[order], score[order], weights, n_candidates, sh)


class _CodeGrid:
    """The query as one padded, flat uint8 grid (whole tumour 1, core 2), read at translations of candidates."""

    def __init__(self, wt: np.ndarray, core: np.ndarray, pad: int) -> None:
        code = wt.astype(np.uint8) + 2 * (core & wt).astype(np.uint8)
        self.pad = int(pad)
        self.flat = np.pad(code, self.pad).ravel()
        shape = np.asarray(code.shape) + 2 * self.pad
        self.strides = np.array([shape[1] * shape[2], shape[2], 1], dtype=np.int64)
        self.n_wt, self.n_core = int(np.count_nonzero(wt)), int(np.count_nonzero(core & wt))
        idx = np.argwhere(wt)
        self.com = idx.mean(axis=0) if len(idx) else np.zeros(3)


def _window(w: int) -> np.ndarray:
    r = np.arange(-w, w + 1)
    return np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)


class _Levels:
    """The uint8 density levels of the searched thresholds (ascending) and the levels each value passes."""

    def __init__(self, le: np.ndarray, lc: np.ndarray) -> None:
        if np.any(np.diff(le) < 0) or np.any(np.diff(lc) < 0):
            raise ValueError("shift_candidates: thresholds must be in ascending order")
        self.n_e, self.n_c = len(le), len(lc)
        values = np.arange(256)
        self.passed_e = np.searchsorted(le, values, side="right").astype(np.int64)
        self.passed_c = np.searchsorted(lc, values, side="right").astype(np.int64)
        self.lowest = int(min(le.min(), lc.min()))


class _Crops:
    """The candidates' crops as one flat buffer (for the compiled loops), with their corners and volumes."""

    def __init__(self, g: _CodeGrid, crops: list, levels: _Levels, visible_level: int) -> None:
        from gliofit.inverse.shift_kernel import crop_stats  # numba: only the shift search needs it

        self.g, self.levels = g, levels
        self.shapes = np.array([c.shape for _, c in crops], dtype=np.int64).reshape(-1, 3)
        sizes = self.shapes.prod(axis=1)
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.buf = np.concatenate([np.ascontiguousarray(c).reshape(-1) for _, c in crops])
        lows = np.array([b[:3] for b, _ in crops], dtype=np.int64).reshape(-1, 3)
        self.corners = lows + g.pad
        lv = levels
        vol_e, vol_c, com = crop_stats(
            self.buf, self.starts, self.shapes, visible_level, lv.passed_e, lv.passed_c, lv.n_e, lv.n_c
        )
        self.vol_e, self.vol_c = _above(vol_e), _above(vol_c)
        self.com = np.where(np.isnan(com), g.com[None, :], com + lows)

    def dice(self, rows: np.ndarray, shifts: np.ndarray) -> tuple[np.ndarray, ...]:
        """Best whole-tumour and core Dice over the thresholds of candidates ``rows`` (n,) at their
        translations ``shifts`` (n, S, 3): (n, S) wt Dice, core Dice, edema level index, core level index."""
        from gliofit.inverse.shift_kernel import hits_at

        lv, g = self.levels, self.g
        sub = self.starts[rows], self.shapes[rows], self.corners[rows]
        hit_e, hit_c = hits_at(
            g.flat, g.strides, self.buf, *sub, shifts, lv.lowest, lv.passed_e, lv.passed_c, lv.n_e, lv.n_c
        )
        vol_e, vol_c = self.vol_e[rows][:, None, :], self.vol_c[rows][:, None, :]
        d_e = 2.0 * _above(hit_e) / np.maximum(g.n_wt + vol_e, 1)
        d_c = np.where(g.n_core + vol_c > 0, 2.0 * _above(hit_c) / np.maximum(g.n_core + vol_c, 1), 1.0)
        ie, ic = np.argmax(d_e, axis=-1), np.argmax(d_c, axis=-1)
        pick = np.take_along_axis
        return pick(d_e, ie[..., None], -1)[..., 0], pick(d_c, ic[..., None], -1)[..., 0], ie, ic


def _above(h: np.ndarray) -> np.ndarray:
    """(..., L + 1) counts per number of levels passed -> (..., L) counts passing each level."""
    return np.cumsum(h[..., :0:-1], axis=-1)[..., ::-1]


_FACES = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.int64)


def _whole_window(at, centre: np.ndarray, win: np.ndarray):
    """Best (score, shift, (wt, core) Dice, (edema, core) level index) over every translation of the window."""
    cand = centre[None, :] + win
    sc, de, dc, ie, ic = at(cand)
    k = int(np.argmax(sc))
    if not np.isfinite(sc[k]):
        return None
    return float(sc[k]), cand[k], (de[k], dc[k]), (ie[k], ic[k])


def climb(at, centre: np.ndarray, window_vox: int):
    """Greedy ascent from ``centre`` over face-neighbour translations inside the window ±``window_vox``.

    ``at(shifts (S, 3)) -> (score, dice_wt, dice_core, level_e, level_c)`` arrays (S,), score -inf where the
    translation is not allowed. Each step scores the unvisited face neighbours of the best translation so far
    and moves to the best one while it improves; returns the best as :func:`_whole_window` does, or None.
    """
    seen = {tuple(centre)}
    sc, de, dc, ie, ic = at(centre[None, :])
    best = (float(sc[0]), centre, (de[0], dc[0]), (ie[0], ic[0]))
    while True:
        nb = best[1][None, :] + _FACES
        keep = [np.abs(v - centre).max() <= window_vox and tuple(v) not in seen for v in nb]
        nb = nb[np.asarray(keep, dtype=bool)]
        if len(nb) == 0:
            break
        seen.update(tuple(v) for v in nb)
        sc, de, dc, ie, ic = at(nb)
        k = int(np.argmax(sc))
        if not sc[k] > best[0]:
            break
        best = (float(sc[k]), nb[k], (de[k], dc[k]), (ie[k], ic[k]))
    return best if np.isfinite(best[0]) else None


def shift_candidates(
    db,
    wt: np.ndarray,
    core: np.ndarray,
    ids: np.ndarray,
    crops: list,
    edema: tuple[float, ...],
    core_thresholds: tuple[float, ...],
    weights: tuple[float, float],
    *,
    window_vox: int = SHIFT_WINDOW_VOX,
    align_max_mm: float = ALIGN_MAX_MM,
    top: int = SHIFT_TOP,
    climb_search: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best Dice of each entry over integer translations of its crop (module docstring, step 4).

    Parameters
    ----------
    db : the open database (grid, tissue, entries).
    wt, core : (X, Y, Z) bool query masks on the database grid.
    ids : (n,) entry ids; crops : their ``(bbox, uint8 crop)`` (``read_visible`` or ``read_entries``).
    edema, core_thresholds : thresholds searched; weights : (w_wt, w_core) of the score.
    window_vox : half-width of the window around the alignment, voxels; align_max_mm : largest alignment, mm.
    top : candidates searched in the window.
    climb_search : search the window by a greedy climb over face-neighbour translations (:func:`climb`);
        else score every translation of the window.

    Returns
    -------
    dice : (n, 2) float64; thresholds : (n, 2) float64; shifts : (n, 3) int64 voxels.
    """
    n = len(ids)
    grid = db.grid
    spacing = np.asarray(grid.spacing_mm, dtype=np.float64)
    align_max = np.floor(align_max_mm / spacing + 1e-9).astype(np.int64)
    g = _CodeGrid(wt, core, int(align_max.max()) + window_vox + 1)
    domain = np.pad(grid.domain, g.pad).ravel()
    levels = _Levels(
        np.array([threshold_level(t) for t in edema]), np.array([threshold_level(t) for t in core_thresholds])
    )
    l_db = threshold_level(float(db.manifest.thresholds["edema"]))
    e = db.entries
    rows = db.rows_of(ids)
    origins = np.stack([e["origin_x_mm"][rows], e["origin_y_mm"][rows], e["origin_z_mm"][rows]], axis=1)
    inv = np.linalg.inv(grid.affine)
    seed_vox = np.rint(origins @ inv[:3, :3].T + inv[:3, 3]).astype(np.int64) + g.pad
    win = _window(window_vox)
    w = np.asarray(weights, dtype=np.float64)
    cands = _Crops(g, crops, levels, l_db)
    centre = np.clip(np.rint(g.com[None, :] - cands.com).astype(np.int64), -align_max, align_max)
    two = np.stack([np.zeros_like(centre), centre], axis=1)  # (n, [unshifted, aligned], 3)
    ok = domain[(seed_vox[:, None, :] + two) @ g.strides]
    de, dc, ie, ic = cands.dice(np.arange(n), two)
    first = np.where(ok[..., None], np.stack([de, dc], axis=-1), -1.0)  # (n, 2, [wt, core])
    score2 = first @ w
    pick = np.argmax(score2, axis=1)
    r = np.arange(n)
    dice, shifts = first[r, pick], two[r, pick]
    th_idx = np.stack([ie[r, pick], ic[r, pick]], axis=1)
    for i in np.argsort(-score2[r, pick], kind="stable")[: int(top)]:

        def at(sh: np.ndarray, i=i):
            ok = domain[(seed_vox[i] + sh) @ g.strides]
            de, dc, ie, ic = (v[0] for v in cands.dice(np.array([i]), sh[None]))
            return np.where(ok, w[0] * de + w[1] * dc, -np.inf), de, dc, ie, ic

        best = climb(at, centre[i], window_vox) if climb_search else _whole_window(at, centre[i], win)
        if best is not None and best[0] > dice[i] @ w:
            _, shifts[i], dice[i], th_idx[i] = best
    thresholds = np.stack([np.asarray(edema)[th_idx[:, 0]], np.asarray(core_thresholds)[th_idx[:, 1]]], axis=1)
    return dice.astype(np.float64), thresholds.astype(np.float64), shifts


def query(
    db,
    wt: np.ndarray,
    core: np.ndarray,
    *,
    top_k: int = DEFAULT_TOP_K,
    weights=(0.5, 0.5),
    thresholds_search: bool = True,
    min_dice: float = DEFAULT_MIN_DICE,
    shift: bool = True,
) -> Matches:
    """Rank database entries against the query masks (the index method).

    Parameters
    ----------
    db : an open :class:`~gliofit.simulations_db.database.Database`.
    wt, core : (X, Y, Z) bool query masks on the database grid.
    top_k : candidates taken from the index (>= 1).
    weights : (whole tumour, core) weights of the ranking score.
    thresholds_search : search the imaging thresholds per candidate (else the database's).
    min_dice : the volume pre-filter's Dice bound.
    shift : search translations of each candidate (step 4; else its stored seed point only).

    Returns
    -------
    :class:`Matches` of the candidates that passed the pre-filter, best first.
    """
    if int(top_k) < 1:
        raise InputError(f"top_k must be >= 1, got {top_k!r}", parameter="top_k")
    w = check_weights(weights)
    spec = FeatureSpec.from_dict(db.manifest.features)
    q = query_features(spec, wt, core)
    ids = db.index.search(q, int(top_k))[0]
    ids = ids[ids >= 0]
    n_candidates = len(ids)
    vol = db.entries["wt_voxels"][db.rows_of(ids)]
    lo, hi = volume_window(int(np.count_nonzero(wt)), min_dice)
    keep = (vol >= lo) & (vol <= hi)
    if keep.any():
        ids = ids[keep]
    edema, core_th = threshold_grid(db.manifest.thresholds, thresholds_search)
    if not shift or len(ids) == 0:
        dice, th = score_candidates(db, wt, core, ids, edema, core_th)
        return rank(ids, dice, th, w, n_candidates)
    crops = db.read_entries(ids) if min(edema + core_th) < 0.05 else db.read_visible(ids)
    dice, th, shifts = shift_candidates(db, wt, core, ids, crops, edema, core_th, w)
    return rank(ids, dice, th, w, n_candidates, shifts)
